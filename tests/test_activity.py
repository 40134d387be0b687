"""The activity log: append-only JSON lines, never a reason for mail to fail."""
import json
import logging
import os
import stat

from salmon_dkim.activity import ActivityLog, read_activity


def test_record_appends_one_json_line_with_time_and_event(tmp_path):
    path = tmp_path / "activity.jsonl"
    log = ActivityLog(path)
    log.record("sign", message_id="<a@example.com>", d="example.com", s="s1")
    log.record("unsigned", message_id=None, reason="no signing key")
    first, second = [json.loads(line) for line in path.read_text().splitlines()]
    assert first["event"] == "sign" and first["d"] == "example.com"
    assert first["time"].endswith("Z") and first["time"][:2] == "20"
    assert second == {"time": second["time"], "event": "unsigned", "message_id": None,
                      "reason": "no signing key"}


def test_creates_parent_folders_and_file_mode_0640(tmp_path):
    path = tmp_path / "logs" / "dkim" / "activity.jsonl"
    old = os.umask(0o022)
    try:
        ActivityLog(path).record("sign")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


def test_no_path_logs_nothing(tmp_path):
    ActivityLog(None).record("sign", d="example.com")
    assert list(tmp_path.iterdir()) == []


def test_write_failure_is_a_warning_not_an_error(tmp_path, caplog):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    with caplog.at_level(logging.WARNING, logger="salmon_dkim.activity"):
        ActivityLog(blocker / "activity.jsonl").record("sign")
    assert "cannot write" in caplog.text


def test_non_ascii_fields_are_kept_readable(tmp_path):
    path = tmp_path / "a.jsonl"
    ActivityLog(path).record("unsigned", reason="From address 'jürgen@exämple.com'")
    assert "jürgen" in path.read_text(encoding="utf-8")


def test_read_filters_by_event_domain_and_last(tmp_path):
    path = tmp_path / "a.jsonl"
    log = ActivityLog(path)
    log.record("sign", d="example.com", s="s1", message_id="<1@x>")
    log.record("sign", d="example.org", s="s2048", message_id="<2@x>")
    log.record("verify", message_id="<3@x>", results=[{"d": "Example.com", "s": "s1", "result": "pass"}])
    log.record("unsigned", message_id="<4@x>", reason="no key")
    assert [e["message_id"] for e in read_activity(path, domain="example.com")] == ["<1@x>", "<3@x>"]
    assert [e["message_id"] for e in read_activity(path, event="sign")] == ["<1@x>", "<2@x>"]
    assert [e["message_id"] for e in read_activity(path, last=2)] == ["<3@x>", "<4@x>"]
    assert read_activity(path, last=0) == []


def test_read_skips_damaged_lines_and_missing_file(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text('{"event": "sign", "d": "example.com"}\n{"event": "si\n[1, 2]\n\n')
    assert read_activity(path) == [{"event": "sign", "d": "example.com"}]
    assert read_activity(tmp_path / "missing.jsonl") == []


def test_read_last_entries_of_a_log_larger_than_one_read_block(tmp_path):
    path = tmp_path / "a.jsonl"
    log = ActivityLog(path)
    for n in range(3000):
        log.record("sign" if n % 3 else "unsigned", message_id=f"<{n}@example.com>", reason="x" * 40)
    assert path.stat().st_size > 1 << 17
    newest = read_activity(path, event="unsigned", last=3)
    assert [e["message_id"] for e in newest] == ["<2991@example.com>", "<2994@example.com>",
                                                 "<2997@example.com>"]
    assert len(read_activity(path)) == 3000
