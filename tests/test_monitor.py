"""salmon-dkim monitor: the live view, as a person sees it in an 80x24 terminal (tmux), and its counts."""
import os
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from rich.console import Console

from salmon_dkim.cli.monitor_cmds import ActivityView, render

SALMON_DKIM = Path(sys.executable).with_name("salmon-dkim")
NOW = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)


def at(seconds_ago: float) -> str:
    return (NOW - timedelta(seconds=seconds_ago)).isoformat(timespec="milliseconds").replace("+00:00", "Z")


ENTRIES = [
    {"time": at(7200), "event": "sign", "d": "old.example", "s": "s1"},  # over an hour ago: not counted
    {"time": at(1800), "event": "sign", "d": "example.com", "s": "s1", "algorithm": "rsa-sha256"},
    {"time": at(600), "event": "unsigned", "reason": "no signing key for example.net"},
    {"time": at(30), "event": "verify", "action": "reject",
     "results": [{"d": "example.org", "s": "s2048", "result": "fail", "reason": "body hash mismatch"}]},
    {"time": at(20), "event": "verify", "action": "accept",
     "results": [{"d": "example.com", "s": "s1", "result": "pass", "reason": ""}]},
    {"time": at(10), "event": "key", "d": "example.com", "s": "s2", "state": "active"},
]


def screen(view: ActivityView, width: int = 80, height: int = 24, **kwargs) -> str:
    console = Console(width=width, height=height, record=True, file=open(os.devnull, "w"))
    console.print(render(view, Path("logs/dkim-activity.jsonl"), NOW, height, **kwargs))
    return console.export_text()


def test_counts_per_result_and_domain_for_the_last_minute_and_hour():
    view = ActivityView()
    view.add(ENTRIES, NOW)
    by_result, by_domain = view.counts(NOW)
    assert by_result == {"signed": [0, 1], "unsigned": [0, 1], "fail": [1, 1], "pass": [1, 1]}
    assert by_domain == {"example.com": [1, 2], "example.org": [1, 1]}
    by_result, _ = view.counts(NOW + timedelta(minutes=1))
    assert by_result["fail"] == [0, 1]
    view.add([], NOW + timedelta(minutes=45))  # time passes: the hour moves on
    assert view.counts(NOW + timedelta(minutes=45))[0] == {"unsigned": [0, 1], "fail": [0, 1], "pass": [0, 1]}


def test_the_screen_fits_80_by_24_with_the_latest_messages_and_counts():
    view = ActivityView()
    view.add(ENTRIES, NOW)
    text = screen(view)
    lines = text.splitlines()
    assert len(lines) <= 24 and max(len(line) for line in lines) <= 80
    assert lines[0].startswith("salmon-dkim monitor  12:00:00 UTC")
    row = next(line for line in lines if "s2048" in line).split()
    assert row[:6] == ["11:59:30", "in", "example.org", "s2048", "fail", "(reject)"] and "body" in row
    assert next(line for line in lines if line.startswith("11:30:00")).split() == \
        ["11:30:00", "out", "example.com", "s1", "signed"]
    counts = {line.split()[0]: line.split()[1:3] for line in lines[lines.index(next(
        line for line in lines if line.startswith("result "))) + 2:] if line.strip()}
    assert counts["fail"] == ["1", "1"] and counts["signed"] == ["0", "1"]
    assert "keys:" not in text  # no key states yet: no line rather than a made-up one


def test_the_newest_messages_stay_on_screen_when_there_are_more_than_fit():
    view = ActivityView()
    view.add([{"time": at(100 - n), "event": "sign", "d": f"d{n}.example", "s": "s1"} for n in range(60)], NOW)
    lines = screen(view).splitlines()
    latest = [line.split()[2] for line in lines if line[:2] == "11" and line[2] == ":"]
    assert len(lines) <= 24 and len(latest) >= 5
    assert latest == [f"d{n}.example" for n in range(60 - len(latest), 60)]


def test_a_keys_line_shows_the_states_given():
    view = ActivityView()
    text = screen(view, keys=[("example.com", "s1", "active"), ("example.com", "s2", "pending")])
    assert "keys: example.com s1 active, example.com s2 pending" in text


def test_sender_text_cannot_draw_on_the_screen():
    view = ActivityView()
    view.add([{"time": at(5), "event": "verify", "action": "accept",
               "results": [{"d": "[red]x\x1b[2J.example", "s": "s", "result": "fail", "reason": "r"}]}], NOW)
    text = screen(view)
    assert "\x1b" not in text and "[red]x?[2J.example" in text


def test_monitor_without_a_log_configured_exits_2():
    result = subprocess.run([str(SALMON_DKIM), "monitor"], capture_output=True, text=True)
    assert result.returncode == 2 and result.stderr.startswith("salmon-dkim monitor: no activity log configured")


# --- under tmux, against the running example project ----------------------------------------------------

pytestmark_tmux = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux not installed (make debs)")


class Tmux:
    """A private tmux server with one 80x24 window running ``command``."""

    def __init__(self, command: list, cwd: Path, record: Path) -> None:
        self.socket = f"salmon-dkim-test-{uuid.uuid4().hex[:8]}"
        # bash writes down how the command ended (tmux does not always reap it) and its errors; on
        # Ctrl-C bash waits for the command and goes on when the command exits normally
        self.status, self.errors = record / "status", record / "stderr"
        script = f'{shlex.join(command)} 2>{shlex.quote(str(self.errors))}; echo $? >{shlex.quote(str(self.status))}'
        self.tmux("new-session", "-d", "-s", "monitor", "-x", "80", "-y", "24", "-c", str(cwd),
                  "bash", "-c", script, ";", "set-option", "-t", "monitor", "remain-on-exit", "on")

    def tmux(self, *args) -> str:
        return subprocess.run(["tmux", "-L", self.socket, "-f", os.devnull, *args], capture_output=True, text=True,
                              check=True, env=dict(os.environ, TERM="xterm-256color")).stdout

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", "monitor")

    def wait_for(self, condition, timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            shown = self.screen()
            if condition(shown):
                return shown
            if time.monotonic() > deadline:
                raise AssertionError(f"the screen never showed it; it shows:\n{shown}")
            time.sleep(0.2)

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True)


def rows(shown: str, *cells: str) -> list:
    """Screen lines holding every one of ``cells`` as whole words."""
    return [line for line in shown.splitlines() if all(c in line.split() for c in cells)]


def count(shown: str, name: str) -> list:
    """The [1 min, 1 hour] counts the screen shows for a result or a domain."""
    for line in shown.splitlines():
        words = line.split()
        for n in range(len(words) - 2):
            if words[n] == name and words[n + 1].isdigit() and words[n + 2].isdigit():
                return [int(words[n + 1]), int(words[n + 2])]
    return []


@pytestmark_tmux
def test_monitor_under_tmux_shows_the_example_projects_mail_live_through_rotations(tmp_path):
    from test_example_project import PROJECT, STATE, RunningExample  # noqa: PLC0415

    folder = tmp_path / "example_project"
    shutil.copytree(PROJECT, folder, ignore=shutil.ignore_patterns(*STATE))
    ini = folder / "config" / "salmon_dkim.ini"
    ini.write_text(ini.read_text().replace("[Logging]\n", "[Logging]\nActivityLogMaxBytes = 700\nActivityLogBackups = 20\n"))
    assert "ActivityLogMaxBytes = 700" in ini.read_text()
    example = RunningExample(folder)
    tmux = Tmux([str(SALMON_DKIM), "monitor", "--config", "config/salmon_dkim.ini", "--refresh", "0.3"],
                cwd=folder, record=tmp_path)
    try:
        tmux.wait_for(lambda s: s.startswith("salmon-dkim monitor") and "waiting for entries in" in s)
        send = example.send_module
        signed = send.sign_as_sender(send.compose("alice@example.com", "bob@example.com", "Hi", "Hello\n"),
                                     "config/salmon_dkim.ini")
        example.send(example.mx, "alice@example.com", "bob@example.com", signed)
        example.send(example.submission, "alice@example.com", "dave@example.net",
                     send.compose("alice@example.com", "dave@example.net", "Out", "Hello\n"))
        example.send(example.mx, "eve@example.org", "bob@example.com",
                     send.compose("eve@example.org", "bob@example.com", "Unsigned", "Hello\n"))
        shown = tmux.wait_for(lambda s: count(s, "pass") == [1, 1] and count(s, "signed") == [1, 1]
                              and count(s, "none") == [1, 1])
        assert len(rows(shown, "in", "example.com", "s1", "pass", "(accept)")) == 1
        assert len(rows(shown, "out", "example.com", "s1", "signed")) == 1
        assert count(shown, "example.com") == [2, 2]
        assert all(len(line) <= 80 for line in shown.splitlines()) and len(shown.splitlines()) <= 24

        for n in range(6):  # each line or two rotates the log now
            example.send(example.submission, "alice@example.com", "dave@example.net",
                         send.compose("alice@example.com", f"dave{n}@example.net", f"Out {n}", "Hello\n"))
        shown = tmux.wait_for(lambda s: count(s, "signed") == [7, 7])
        assert len(list(folder.glob("logs/dkim-activity.jsonl.*[0-9]"))) >= 3  # it did rotate
        (tmp_path / "screen.txt").write_text(shown)

        tmux.tmux("send-keys", "-t", "monitor", "C-c")
        deadline = time.monotonic() + 10
        while not tmux.status.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert tmux.status.read_text() == "0\n" and tmux.errors.read_text() == ""
    finally:
        tmux.close()
        example.stop()
