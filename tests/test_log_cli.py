"""salmon-dkim log and stats: Tracemail over the activity log and its rotated files."""
import json
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import message

from salmon_dkim.activity import ActivityLog
from salmon_dkim.cli import main

SALMON_DKIM = Path(sys.executable).with_name("salmon-dkim")


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def ago(**delta) -> str:
    return (datetime.now(timezone.utc) - timedelta(**delta)).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


@pytest.fixture
def log_path(tmp_path) -> Path:
    return tmp_path / "logs" / "activity.jsonl"


@pytest.fixture
def config(tmp_path, log_path) -> Path:
    path = tmp_path / "salmon_dkim.ini"
    path.write_text(f"[Logging]\nActivityLog = {log_path}\n")
    return path


def write(log_path: Path, *entries: dict) -> None:
    """Lines as the producers write them, with their own times (older lines lack the newer fields)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a") as f:
        for entry in entries:
            f.write(json.dumps(entry) + "\n")


@pytest.fixture
def activity(config, log_path):
    write(log_path,
          {"time": ago(days=3), "event": "sign", "message_id": "<1@example.com>", "d": "example.com",
           "s": "s1,ed1", "algorithm": "rsa-sha256,ed25519-sha256", "headers": ["from"], "size": 900},
          {"time": ago(hours=5), "event": "unsigned", "direction": "out", "account": "carol@example.net",
           "message_id": "<2@example.net>", "reason": "no signing key for example.net"},
          {"time": ago(hours=2), "event": "verify", "direction": "in", "account": "olga@example.org",
           "message_id": "<3@example.org>", "action": "accept", "score": 0.0, "reason": "",
           "results": [{"d": "example.org", "s": "s2048", "a": "rsa-sha256", "result": "fail",
                        "reason": "body hash mismatch"}]},
          {"time": ago(minutes=30), "event": "sign", "direction": "out", "account": "alice@example.com",
           "message_id": "<4@example.com>", "d": "example.com", "s": "s1", "algorithm": "rsa-sha256",
           "headers": ["from"], "size": 800, "ms": 1.4},
          {"time": ago(minutes=10), "event": "verify", "direction": "in", "account": "bob@example.org",
           "message_id": "<5@example.org>", "action": "reject", "score": 2.5,
           "results": [{"d": "example.org", "s": "s2048", "a": "rsa-sha256", "result": "pass", "reason": ""},
                       {"d": "spam.example", "s": "x", "a": "rsa-sha256", "result": "permerror",
                        "reason": "no key"}]},
          {"time": ago(minutes=5), "event": "skip-verify", "message_id": "<6@example.com>",
           "reason": "authenticated session"})
    return config


def ids(result) -> list:
    assert result.exit_code == 0, result.output
    return [json.loads(line)["message_id"] for line in result.stdout.splitlines()]


# --- log -------------------------------------------------------------------------------------------

def test_log_prints_an_aligned_table_with_domain_and_selector_of_each_sent_message(activity):
    result = run("log", "--config", activity)
    lines = result.stdout.splitlines()
    assert result.exit_code == 0 and len(lines) == 7
    assert lines[0].split() == ["time", "event", "account", "message-id", "d=", "s=", "result", "details"]
    column = lines[0].index("message-id")
    assert [line[column:column + 3] for line in lines[1:]] == ["<1@", "<2@", "<3@", "<4@", "<5@", "<6@"]
    sent = lines[4].split()
    assert sent[1:] == ["sign", "alice@example.com", "<4@example.com>", "example.com", "s1", "signed",
                        "a=rsa-sha256"]
    assert "fail (accept)" in lines[3] and "body hash mismatch" in lines[3]
    assert "pass,permerror (reject)" in lines[5]


def test_log_json_prints_each_entry_as_logged_one_per_line(activity, log_path):
    result = run("log", "--config", activity, "--json")
    logged = [json.loads(line) for line in log_path.read_text().splitlines()]
    assert [json.loads(line) for line in result.stdout.splitlines()] == logged


@pytest.mark.parametrize("options, expected", [
    (["--direction", "out"], ["<1@example.com>", "<2@example.net>", "<4@example.com>"]),
    (["--direction", "in"], ["<3@example.org>", "<5@example.org>", "<6@example.com>"]),
    (["--domain", "example.org"], ["<3@example.org>", "<5@example.org>"]),
    (["--domain", "spam.example"], ["<5@example.org>"]),
    (["--account", "Alice@Example.com"], ["<4@example.com>"]),
    (["--account", "@example.org"], ["<3@example.org>", "<5@example.org>"]),
    (["--result", "fail"], ["<3@example.org>"]),
    (["--result", "reject"], ["<5@example.org>"]),
    (["--result", "skip"], ["<6@example.com>"]),
    (["--since", "1h"], ["<4@example.com>", "<5@example.org>", "<6@example.com>"]),
    (["--since", "6h", "--until", "1h"], ["<2@example.net>", "<3@example.org>"]),
    (["--event", "sign", "--last", "1"], ["<4@example.com>"]),
    (["--direction", "out", "--domain", "example.com", "--since", "1d"], ["<4@example.com>"]),
])
def test_log_filters(activity, options, expected):
    assert ids(run("log", "--config", activity, "--json", *options)) == expected


def test_log_until_a_date_takes_the_whole_day_and_times_without_zone_are_utc(config, log_path):
    write(log_path, *({"time": t, "event": "sign", "message_id": f"<{t}>"} for t in (
        "2024-04-30T23:59:59Z", "2024-05-01T00:00:00.000Z", "2024-05-01T23:59:59.999Z", "2024-05-02T00:00:00Z")))
    assert ids(run("log", "--config", config, "--json", "--since", "2024-05-01", "--until", "2024-05-01")) == \
        ["<2024-05-01T00:00:00.000Z>", "<2024-05-01T23:59:59.999Z>"]
    assert ids(run("log", "--config", config, "--json", "--since", "2024-05-01T23:00",
                   "--until", "2024-05-02T01:00+01:00")) == ["<2024-05-01T23:59:59.999Z>"]


def test_log_reads_the_rotated_files_oldest_first(config, log_path):
    log = ActivityLog(log_path, max_bytes=400, backups=20)
    for n in range(30):
        log.record("sign", message_id=f"<{n}@example.com>", d="example.com", s="s1", reason="r" * 40)
    log.close()
    assert len(list(log_path.parent.iterdir())) > 5
    assert ids(run("log", "--config", config, "--json", "--last", "100")) == \
        [f"<{n}@example.com>" for n in range(30)]
    assert ids(run("log", "--config", config, "--json", "--last", "2")) == ["<28@example.com>", "<29@example.com>"]


def test_log_says_when_it_shows_only_the_newest(activity):
    result = run("log", "--config", activity, "--last", "2")
    assert len(result.stdout.splitlines()) == 3
    assert "newest 2 matching entries; --last N shows more" in result.stderr


def test_log_says_when_there_is_nothing(config):
    result = run("log", "--config", config)
    assert result.exit_code == 0 and result.stdout.startswith("no entries in ")
    assert run("log", "--config", config, "--domain", "example.com").stdout.startswith("no matching entries")
    assert run("log", "--config", config, "--json").stdout == ""


def test_log_prints_control_characters_a_sender_wrote_as_question_marks(config, log_path):
    write(log_path, {"time": ago(minutes=1), "event": "verify", "message_id": "<\x1b[2Jevil@x>",
                     "results": [{"d": "x.example", "s": "s", "result": "fail", "reason": "bad\x07"}]})
    out = run("log", "--config", config).stdout
    assert "\x1b" not in out and "\x07" not in out and "<?[2Jevil@x>" in out


@pytest.mark.parametrize("args, says", [
    (["--since", "last tuesday"], "salmon-dkim log: --since: 'last tuesday' is not a time"),
    (["--until", "2024-13-01"], "salmon-dkim log: --until: '2024-13-01' is not a time"),
])
def test_log_bad_times_exit_2_with_one_line(config, args, says):
    result = run("log", "--config", config, *args)
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.startswith(says) and len(result.stderr.splitlines()) == 1


@pytest.mark.parametrize("command", ["log", "stats"])
def test_no_activity_log_configured_exits_2(command):
    result = run(command)
    assert result.exit_code == 2
    assert result.stderr == f"salmon-dkim {command}: no activity log configured ([Logging] ActivityLog); " \
                            "give --config FILE\n"


@pytest.mark.parametrize("command", ["log", "stats"])
def test_unreadable_activity_log_exits_2_saying_so(tmp_path, command):
    (tmp_path / "activity.jsonl").symlink_to("activity.jsonl")  # a loop: there, but never readable
    ini = tmp_path / "salmon_dkim.ini"
    ini.write_text(f"[Logging]\nActivityLog = {tmp_path / 'activity.jsonl'}\n")
    result = run(command, "--config", ini)
    assert result.exit_code == 2 and result.stdout == ""
    assert f"salmon-dkim {command}: cannot read the activity log" in result.stderr


@pytest.mark.parametrize("command", ["log", "stats"])
def test_a_bad_direction_is_a_usage_error_exit_2(config, command):
    result = run(command, "--config", config, "--direction", "sideways")
    assert result.exit_code == 2 and "Invalid value for '--direction'" in result.stderr


# --- stats -----------------------------------------------------------------------------------------

def test_stats_counts_signed_unsigned_verify_results_and_actions(activity):
    out = run("stats", "--config", activity).stdout
    assert "signed messages: 2" in out and "unsigned messages: 1" in out and "verified messages: 2" in out
    counts = {" ".join(line.split()[:-1]): int(line.split()[-1]) for line in out.splitlines()
              if line.startswith("  ")}
    assert counts == {"d=example.com s=s1": 2, "d=example.com s=ed1": 1,
                      "no signing key for example.net": 1, "fail": 1, "pass": 1, "permerror": 1,
                      "accept": 1, "reject": 1, "authenticated session": 1}


def test_stats_takes_the_log_filters(activity):
    counts = json.loads(run("stats", "--config", activity, "--since", "1h", "--json").stdout)
    assert counts["entries"] == 3 and counts["signed"] == {"messages": 1, "by_key": {"d=example.com s=s1": 1}}
    assert counts["verified"]["by_action"] == {"reject": 1}
    assert json.loads(run("stats", "--config", activity, "--direction", "out", "--json").stdout)["entries"] == 3


def test_stats_says_when_there_is_nothing(config):
    result = run("stats", "--config", config)
    assert result.exit_code == 0 and result.stdout.startswith("no entries in ")


# --- Tracemail on a running app ----------------------------------------------------------------------

def test_log_finds_what_a_running_app_signed_and_verified(tmp_path):
    from salmonserver import start_dkim_app  # noqa: PLC0415 (the server only for this test)
    with start_dkim_app(tmp_path / "app", live_dns=False) as app:
        with app.submission() as client:
            client.sendmail("alice@example.com", ["trace@remote.example"],
                            message("plain.eml").replace(b"<lunch-1@", b"<trace-out@"))
        with app.smtp() as client:
            client.sendmail("olga@example.org", ["trace@inbound.test"],
                            message("plain.eml").replace(b"<lunch-1@", b"<trace-in@"))
        app.activity_entries()  # until the server's writer is done
        ini = app.configs["main"]
        out = subprocess.run([str(SALMON_DKIM), "log", "--config", str(ini), "--direction", "out"],
                             capture_output=True, text=True, check=True).stdout
        sent = [line for line in out.splitlines() if "<trace-out@example.com>" in line]
        assert len(sent) == 1 and sent[0].split()[4:7] == ["example.com", "s1", "signed"]
        found = subprocess.run([str(SALMON_DKIM), "log", "--config", str(ini), "--direction", "in",
                                "--result", "none", "--json"], capture_output=True, text=True, check=True).stdout
        assert [json.loads(line)["message_id"] for line in found.splitlines()] == ["<trace-in@example.com>"]
