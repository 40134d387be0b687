"""The activity log: JSON lines written off the message path, rotated by size, read back across files."""
import json
import logging
import os
import signal
import stat
import subprocess
import sys
import textwrap
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from salmon_dkim.activity import (ActivityFollower, ActivityLog, EntryFilter, entry_time, log_files,
                                  parse_when, read_activity)

REPO = Path(__file__).resolve().parent.parent


def lines_of(*paths) -> list:
    return [json.loads(line) for p in paths for line in Path(p).read_text().splitlines()]


def wait_until(condition, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


# --- writing -----------------------------------------------------------------------------------

def test_record_appends_one_json_line_with_time_and_event(tmp_path):
    path = tmp_path / "activity.jsonl"
    log = ActivityLog(path)
    log.record("sign", message_id="<a@example.com>", d="example.com", s="s1")
    log.record("unsigned", message_id=None, reason="no signing key")
    log.close()
    first, second = lines_of(path)
    assert first["event"] == "sign" and first["d"] == "example.com"
    assert first["time"].endswith("Z") and entry_time(first).tzinfo is not None
    assert second == {"time": second["time"], "event": "unsigned", "message_id": None,
                      "reason": "no signing key"}


def test_lines_reach_the_file_without_flush(tmp_path):
    path = tmp_path / "activity.jsonl"
    ActivityLog(path).record("sign", d="example.com")
    assert wait_until(lambda: path.exists() and path.read_text().count("\n") == 1)


def test_record_returns_while_the_file_cannot_be_written_yet(tmp_path):
    """A FIFO nobody reads blocks the writer's open(); the caller of record() must not wait for it."""
    path = tmp_path / "activity.fifo"
    os.mkfifo(path)
    log = ActivityLog(path, max_bytes=0)
    started = time.monotonic()
    for n in range(50):
        log.record("sign", message_id=f"<{n}@example.com>")
    assert time.monotonic() - started < 0.5
    with open(path, "rb") as reader:  # the disk comes back: every line arrives, in order
        log.close()
        received = [json.loads(line) for line in reader.read().splitlines()]
    assert [e["message_id"] for e in received] == [f"<{n}@example.com>" for n in range(50)]


def test_a_full_queue_drops_new_lines_counts_them_and_warns_once(tmp_path, caplog):
    path = tmp_path / "activity.fifo"
    os.mkfifo(path)
    log = ActivityLog(path, max_bytes=0, queue_limit=3)
    log.record("sign", message_id="<0@x>")
    assert wait_until(lambda: log.pending == 0)  # the writer holds it, stuck opening the FIFO
    with caplog.at_level(logging.WARNING, logger="salmon_dkim.activity"):
        for n in range(1, 11):
            log.record("sign", message_id=f"<{n}@x>")
    assert log.pending == 3 and log.dropped == 7
    assert len([r for r in caplog.records if "dropped" in r.getMessage()]) == 1
    with open(path, "rb") as reader:
        log.close()
        received = [json.loads(line)["message_id"] for line in reader.read().splitlines()]
    assert received == ["<0@x>", "<1@x>", "<2@x>", "<3@x>"]


def test_creates_parent_folders_and_file_mode_0640(tmp_path):
    path = tmp_path / "logs" / "dkim" / "activity.jsonl"
    old = os.umask(0o022)
    try:
        log = ActivityLog(path)
        log.record("sign")
        log.close()
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


def test_no_path_logs_nothing_but_listeners_still_hear(tmp_path):
    log = ActivityLog(None)
    heard = []
    log.subscribe(heard.append)
    log.record("sign", d="example.com")
    log.close()
    assert list(tmp_path.iterdir()) == [] and [e["d"] for e in heard] == ["example.com"]


def test_listeners_get_each_entry_before_it_is_written(tmp_path):
    path = tmp_path / "a.jsonl"
    log = ActivityLog(path)
    on_disk = []
    log.subscribe(lambda entry: on_disk.append(path.exists() and entry["message_id"] in path.read_text()))
    log.record("verify", message_id="<1@x>", results=[])
    log.close()
    assert on_disk == [False] and lines_of(path)[0]["message_id"] == "<1@x>"


def test_a_failing_listener_is_logged_and_the_entry_still_written(tmp_path, caplog):
    path = tmp_path / "a.jsonl"
    log = ActivityLog(path)
    log.subscribe(lambda entry: 1 / 0)
    with caplog.at_level(logging.ERROR, logger="salmon_dkim.activity"):
        log.record("sign", d="example.com")
    log.close()
    assert "listener" in caplog.text and lines_of(path)[0]["d"] == "example.com"


def test_write_failure_is_a_warning_not_an_error(tmp_path, caplog):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    log = ActivityLog(blocker / "activity.jsonl")
    with caplog.at_level(logging.WARNING, logger="salmon_dkim.activity"):
        log.record("sign")
        log.record("sign")
        log.close()
    assert caplog.text.count("cannot write") == 1 and log.dropped == 2


def test_non_ascii_fields_are_kept_readable(tmp_path):
    path = tmp_path / "a.jsonl"
    log = ActivityLog(path)
    log.record("unsigned", reason="From address 'jürgen@exämple.com'")
    log.close()
    assert "jürgen" in path.read_text(encoding="utf-8")


def test_after_close_entries_are_written_at_once(tmp_path):
    path = tmp_path / "a.jsonl"
    log = ActivityLog(path)
    log.close()
    log.record("sign", d="late.example")
    assert lines_of(path)[0]["d"] == "late.example"


# --- a clean stop loses nothing -----------------------------------------------------------------

WRITER = textwrap.dedent("""
    import sys, time
    from salmon_dkim.activity import ActivityLog
    path, count, tag, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    log = ActivityLog(path, max_bytes=int(sys.argv[5]), backups=int(sys.argv[6]))
    for n in range(count):
        log.record("sign", message_id=f"<{tag}-{n}@example.com>", reason="x" * (n % 150))
    print("recorded", flush=True)
    if mode == "wait":
        time.sleep(60)
""")


def run_writer(path, count, tag, mode="exit", max_bytes=0, backups=5) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(count), tag, mode, str(max_bytes),
                             str(backups)], stdout=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=str(REPO)))


def test_a_process_that_exits_writes_every_line_first(tmp_path):
    path = tmp_path / "a.jsonl"
    process = run_writer(path, 20000, "exit")
    assert process.wait(60) == 0
    assert len(path.read_text().splitlines()) == 20000


def test_sigterm_writes_every_queued_line_then_ends_the_process_as_sigterm_does(tmp_path):
    """The writer is held on the rotation lock (as by another process), so lines are queued at SIGTERM."""
    import fcntl
    path = tmp_path / "a.jsonl"
    with open(tmp_path / "a.jsonl.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        process = run_writer(path, 3000, "term", mode="wait", max_bytes=1 << 30)
        assert process.stdout.readline() == "recorded\n"
        process.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        assert not path.exists() or path.read_text() == ""  # nothing could be written yet
    # the lock is released: the process writes everything, then dies of SIGTERM
    assert process.wait(10) == -signal.SIGTERM
    assert len(path.read_text().splitlines()) == 3000


# --- rotation -----------------------------------------------------------------------------------

def test_rotation_keeps_files_under_the_size_and_every_line_whole(tmp_path):
    path = tmp_path / "a.jsonl"
    log = ActivityLog(path, max_bytes=2000, backups=3)
    for n in range(100):
        log.record("sign", message_id=f"<{n}@example.com>", reason="y" * 30)
    log.close()
    assert [p.name for p in log_files(path)] == ["a.jsonl.3", "a.jsonl.2", "a.jsonl.1", "a.jsonl"]
    for p in log_files(path):
        assert p.stat().st_size <= 2000
    kept = [e["message_id"] for e in lines_of(*log_files(path))]  # the oldest files are gone
    assert kept == [f"<{n}@example.com>" for n in range(100 - len(kept), 100)]
    assert [e["message_id"] for e in read_activity(path)] == kept


def test_no_backups_starts_the_file_anew(tmp_path):
    path = tmp_path / "a.jsonl"
    log = ActivityLog(path, max_bytes=300, backups=0)
    for n in range(10):
        log.record("sign", message_id=f"<{n}@example.com>", reason="z" * 40)
    log.close()
    assert log_files(path) == [path] and path.stat().st_size <= 300
    assert lines_of(path)[-1]["message_id"] == "<9@example.com>"


def test_a_line_longer_than_the_limit_gets_a_file_of_its_own(tmp_path):
    path = tmp_path / "a.jsonl"
    log = ActivityLog(path, max_bytes=100, backups=5)
    log.record("sign", message_id="<short@x>")
    log.record("sign", message_id="<long@x>", reason="w" * 500)
    log.record("sign", message_id="<after@x>")
    log.close()
    assert [[e["message_id"] for e in lines_of(p)] for p in log_files(path)] == \
        [["<short@x>"], ["<long@x>"], ["<after@x>"]]


def test_concurrent_writer_processes_rotating_one_log_lose_and_repeat_no_line(tmp_path):
    path = tmp_path / "shared.jsonl"
    writers = [run_writer(path, 3000, f"w{n}", max_bytes=40000, backups=1000) for n in range(4)]
    assert [w.wait(120) for w in writers] == [0, 0, 0, 0]
    files = log_files(path)
    assert len(files) > 10
    seen = []
    for p in files:
        data = p.read_bytes()
        assert len(data) <= 40000 and data.endswith(b"\n")
        seen += [json.loads(line)["message_id"] for line in data.splitlines()]  # every line parses
    assert sorted(seen) == sorted(f"<w{w}-{n}@example.com>" for w in range(4) for n in range(3000))
    for w in range(4):  # each writer's lines stay in its order across the files
        mine = [m for m in seen if m.startswith(f"<w{w}-")]
        assert mine == [f"<w{w}-{n}@example.com>" for n in range(3000)]


# --- reading ------------------------------------------------------------------------------------

def test_read_filters_by_event_domain_and_last(tmp_path):
    path = tmp_path / "a.jsonl"
    log = ActivityLog(path)
    log.record("sign", d="example.com", s="s1", message_id="<1@x>")
    log.record("sign", d="example.org", s="s2048", message_id="<2@x>")
    log.record("verify", message_id="<3@x>", results=[{"d": "Example.com", "s": "s1", "result": "pass"}])
    log.record("unsigned", message_id="<4@x>", reason="no key")
    log.close()
    assert [e["message_id"] for e in read_activity(path, domain="example.com")] == ["<1@x>", "<3@x>"]
    assert [e["message_id"] for e in read_activity(path, event="sign")] == ["<1@x>", "<2@x>"]
    assert [e["message_id"] for e in read_activity(path, last=2)] == ["<3@x>", "<4@x>"]
    assert read_activity(path, last=0) == []


def test_a_reader_in_the_same_process_sees_lines_not_yet_written(tmp_path):
    path = tmp_path / "a.jsonl"
    log = ActivityLog(path)
    log.record("sign", message_id="<now@x>")
    assert [e["message_id"] for e in read_activity(path)] == ["<now@x>"]


def test_read_skips_damaged_lines_and_missing_file(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text('{"event": "sign", "d": "example.com"}\n{"event": "si\n[1, 2]\n\n')
    assert read_activity(path) == [{"event": "sign", "d": "example.com"}]
    assert read_activity(tmp_path / "missing.jsonl") == []


def test_read_last_entries_of_a_log_larger_than_one_read_block(tmp_path):
    path = tmp_path / "a.jsonl"
    log = ActivityLog(path, max_bytes=0)
    for n in range(3000):
        log.record("sign" if n % 3 else "unsigned", message_id=f"<{n}@example.com>", reason="x" * 40)
    log.close()
    assert path.stat().st_size > 1 << 17
    newest = read_activity(path, event="unsigned", last=3)
    assert [e["message_id"] for e in newest] == ["<2991@example.com>", "<2994@example.com>",
                                                 "<2997@example.com>"]
    assert len(read_activity(path)) == 3000


def test_read_across_rotated_files_in_time_order_with_last(tmp_path):
    path = tmp_path / "a.jsonl"
    (tmp_path / "a.jsonl.2").write_text('{"time": "2024-05-01T10:00:00Z", "event": "sign", "n": 1}\n')
    # two processes' batches: written in this order, recorded in the other
    (tmp_path / "a.jsonl.1").write_text('{"time": "2024-05-01T10:00:02.500Z", "event": "sign", "n": 3}\n'
                                        '{"time": "2024-05-01T10:00:01Z", "event": "sign", "n": 2}\n')
    path.write_text('{"time": "2024-05-01T10:00:03Z", "event": "sign", "n": 4}\n'
                    '{"event": "sign", "n": 5}\n')
    assert [e["n"] for e in read_activity(path)] == [1, 2, 3, 4, 5]
    assert [e["n"] for e in read_activity(path, last=2)] == [4, 5]
    assert [e["n"] for e in read_activity(path, last=4)] == [2, 3, 4, 5]


OLD_AND_NEW = [
    # a line from before direction/account existed
    {"time": "2024-05-01T10:00:00Z", "event": "sign", "d": "example.com", "s": "s1"},
    {"time": "2024-05-01T11:00:00Z", "event": "sign", "direction": "out", "account": "Alice@Example.com",
     "d": "example.com", "s": "s1,ed1"},
    {"time": "2024-05-01T12:00:00Z", "event": "verify", "direction": "in", "account": "bob@example.org",
     "action": "reject", "results": [{"d": "example.org", "s": "s2048", "result": "fail"}]},
    {"time": "2024-05-01T13:00:00Z", "event": "verify", "results": []},
    {"time": "2024-05-01T14:00:00Z", "event": "key", "d": "example.com", "s": "s2", "state": "active"},
]


@pytest.mark.parametrize("wanted, expected", [
    (EntryFilter(direction="out"), [0, 1]),
    (EntryFilter(direction="in"), [2, 3]),
    (EntryFilter(account="alice@example.com"), [1]),
    (EntryFilter(domain="EXAMPLE.org."), [2]),
    (EntryFilter(result="fail"), [2]),
    (EntryFilter(result="reject"), [2]),
    (EntryFilter(result="none"), [3]),
    (EntryFilter(event="key"), [4]),
    (EntryFilter(since=datetime(2024, 5, 1, 11, tzinfo=timezone.utc),
                 until=datetime(2024, 5, 1, 13, tzinfo=timezone.utc)), [1, 2]),
])
def test_entry_filter_reads_old_and_new_lines(wanted, expected):
    assert [n for n, e in enumerate(OLD_AND_NEW) if wanted(e)] == expected


def test_parse_when_takes_dates_times_and_ages():
    now = datetime(2024, 5, 2, 12, 0, tzinfo=timezone.utc)
    assert parse_when("1h", now=now) == now - timedelta(hours=1)
    assert parse_when("2d", now=now) == now - timedelta(days=2)
    assert parse_when("2024-05-01") == datetime(2024, 5, 1, tzinfo=timezone.utc)
    assert parse_when("2024-05-01", end_of_day=True) == datetime(2024, 5, 2, tzinfo=timezone.utc)
    assert parse_when("2024-05-01T10:30Z") == datetime(2024, 5, 1, 10, 30, tzinfo=timezone.utc)
    assert parse_when("2024-05-01T10:30+02:00") == datetime(2024, 5, 1, 8, 30, tzinfo=timezone.utc)
    with pytest.raises(ValueError, match="is not a time; give an ISO date"):
        parse_when("yesterday")


# --- following ----------------------------------------------------------------------------------

def test_follower_sees_new_lines_only_and_history_sees_the_rest(tmp_path):
    path = tmp_path / "a.jsonl"
    log = ActivityLog(path, max_bytes=0)
    log.record("sign", message_id="<before@x>")
    log.flush()
    follower = ActivityFollower(path)
    assert follower.read_new() == []
    log.record("sign", message_id="<after@x>")
    log.flush()
    assert [e["message_id"] for e in follower.read_new()] == ["<after@x>"]
    assert [e["message_id"] for e in follower.history()] == ["<before@x>"]


def test_follower_waits_for_the_end_of_a_half_written_line(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text("")
    follower = ActivityFollower(path)
    with open(path, "a") as f:
        f.write('{"event": "sign", "n": ')
        f.flush()
        assert follower.read_new() == []
        f.write('1}\n')
    assert follower.read_new() == [{"event": "sign", "n": 1}]


def test_follower_keeps_following_through_rotations(tmp_path):
    path = tmp_path / "a.jsonl"
    log = ActivityLog(path, max_bytes=400, backups=5)  # 3 lines a file: 2 or 3 rotations between reads
    follower = ActivityFollower(path)  # before the file exists
    seen = []
    for n in range(40):
        log.record("sign", message_id=f"<{n}@example.com>", reason="r" * 60)
        log.flush()
        if n % 7 == 0:
            seen += follower.read_new()
    seen += follower.read_new()
    assert len(log_files(path)) == 6
    assert [e["message_id"] for e in seen] == [f"<{n}@example.com>" for n in range(40)]


def test_follower_started_before_the_log_existed_misses_no_rotation(tmp_path):
    path = tmp_path / "a.jsonl"
    (tmp_path / "a.jsonl.1").write_text('{"event": "sign", "message_id": "<old@x>"}\n')  # from an earlier run
    follower = ActivityFollower(path)
    log = ActivityLog(path, max_bytes=200, backups=10)
    for n in range(6):  # a few rotations before the follower first looks
        log.record("sign", message_id=f"<{n}@x>", reason="q" * 60)
    log.close()
    assert [e["message_id"] for e in follower.history()] == ["<old@x>"]
    assert [e["message_id"] for e in follower.read_new()] == [f"<{n}@x>" for n in range(6)]


def test_follower_history_includes_rotated_files_once(tmp_path):
    path = tmp_path / "a.jsonl"
    log = ActivityLog(path, max_bytes=300, backups=10)
    for n in range(10):
        log.record("sign", message_id=f"<{n}@x>", reason="q" * 50)
    log.flush()
    follower = ActivityFollower(path)
    for n in range(10, 20):
        log.record("sign", message_id=f"<{n}@x>", reason="q" * 50)
    log.close()
    history = [e["message_id"] for e in follower.history()]
    new = [e["message_id"] for e in follower.read_new()]
    assert history + new == [f"<{n}@x>" for n in range(20)]


def test_many_threads_recording_at_once_lose_nothing(tmp_path):
    path = tmp_path / "a.jsonl"
    log = ActivityLog(path, max_bytes=50000, backups=100)

    def record(tag):
        for n in range(500):
            log.record("sign", message_id=f"<{tag}-{n}@x>")

    threads = [threading.Thread(target=record, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    log.close()
    assert len({e["message_id"] for e in read_activity(path)}) == 2000


def test_a_salmon_server_stopped_with_sigterm_writes_every_line(tmp_path):
    """salmon start --no-daemon, as the tests run it; its writer is held on the lock while mail comes in."""
    import fcntl
    from conftest import message
    from salmonserver import start_dkim_app

    with start_dkim_app(tmp_path, live_dns=False) as app:
        with open(tmp_path / "activity.jsonl.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            with app.smtp() as client:
                for n in range(20):
                    client.sendmail("alice@example.com", [f"t{n}@inbound.test"],
                                    message("plain.eml").replace(b"<lunch-1@", f"<term-{n}@".encode()))
            app.server.process.send_signal(signal.SIGTERM)
            time.sleep(0.3)
            assert app.server.alive()  # flushing: it waits for the lock, as for another process rotating
        assert app.server.process.wait(10) == 0  # the receivers stop cleanly; the exit flushes the log
        logged = {e["message_id"] for e in lines_of(app.activity) if e.get("event") == "verify"}
    assert logged == {f"<term-{n}@example.com>" for n in range(20)}
