"""salmon-dkim monitor: a live view of the activity log, as MDaemon's DKIM tab.

Follows the log (through rotations) and redraws, until Ctrl-C: the latest
messages signed and verified (time, direction, domain, selector, result,
reason) and rolling counts per result and per domain for the last minute and
hour.  Drawn with rich, within the terminal's size (80 columns is enough).
"""
from __future__ import annotations

import collections
import os
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Deque, Dict, List, Optional, Sequence, Tuple

import click
from rich import box
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from salmon_dkim.activity import ActivityFollower, direction_of, domains_of, entry_time, result_words
from salmon_dkim.cli import main
from salmon_dkim.cli.common import settings_or_stop, stop
from salmon_dkim.cli.log_cmds import describe, printable
from salmon_dkim.config import Settings
from salmon_dkim.core.lifecycle import KeyLifecycle, LifecycleError

HOUR = timedelta(hours=1)
MINUTE = timedelta(minutes=1)
RESULT_STYLES = {"signed": "green", "pass": "green", "unsigned": "yellow", "none": "yellow",
                 "skipped": "dim", "neutral": "yellow", "policy": "yellow", "temperror": "magenta",
                 "fail": "red", "permerror": "red"}
COUNTED_ROWS = 6  # results and domains shown in the counts (the busiest in the hour)


def key_states(settings: Settings) -> List[Tuple[str, str, str]]:
    """(domain, selector, state) of each signing key, for the keys line: as the servers recorded them in
    KEYSDIR/lifecycle.json (no DNS lookup), "active, RECORD MISSING" when an active key's record is gone."""
    if not settings.signing.require_published_keys:
        return []
    try:
        statuses = KeyLifecycle.from_settings(settings).statuses()
    except (LifecycleError, OSError):
        return []
    troubled = [st for st in statuses if st.record_trouble]  # first, so a narrow screen still shows them
    return [(st.domain, st.selector, st.label) for st in troubled + [st for st in statuses if not st.record_trouble]]


@dataclass(frozen=True)
class Seen:
    """One entry as the monitor keeps it: when, and what to count it under."""

    when: datetime
    results: Tuple[str, ...]
    domains: Tuple[str, ...]
    entry: dict


class ActivityView:
    """What the screen shows: the latest entries and the counts of the last hour, updated entry by entry."""

    def __init__(self, latest: int = 200) -> None:
        self.hour: Deque[Seen] = collections.deque()
        self.latest: Deque[dict] = collections.deque(maxlen=latest)

    def add(self, entries: Sequence[dict], now: datetime) -> None:
        for entry in entries:
            if entry.get("event") not in ("sign", "unsigned", "verify", "skip-verify"):
                continue
            when = entry_time(entry) or now
            self.latest.append(entry)
            self.hour.append(Seen(when, tuple(result_words(entry)), tuple(sorted(_domains(entry))), entry))
        self.forget(now)

    def forget(self, now: datetime) -> None:
        while self.hour and self.hour[0].when < now - HOUR:
            self.hour.popleft()

    def counts(self, now: datetime) -> Tuple[Dict[str, List[int]], Dict[str, List[int]]]:
        """{result: [last minute, last hour]} and {domain: [last minute, last hour]}."""
        by_result: Dict[str, List[int]] = collections.defaultdict(lambda: [0, 0])
        by_domain: Dict[str, List[int]] = collections.defaultdict(lambda: [0, 0])
        for seen in self.hour:
            recent = seen.when >= now - MINUTE
            for key, table in [(r, by_result) for r in seen.results] + [(d, by_domain) for d in seen.domains]:
                table[key][1] += 1
                table[key][0] += recent
        return dict(by_result), dict(by_domain)


def _domains(entry: dict) -> set:
    return domains_of(entry) if entry.get("event") in ("sign", "verify") else set()


# --- drawing ------------------------------------------------------------------------------------------

def render(view: ActivityView, path: Path, now: datetime, height: int, keys: Sequence[Tuple[str, str, str]] = ()):
    """The whole screen for a terminal ``height`` lines high."""
    title = Text.assemble(("salmon-dkim monitor", "bold"), f"  {now:%H:%M:%S} UTC  ",
                          (printable(_shown(path)), "dim"), "  Ctrl-C quits")
    title.no_wrap, title.overflow = True, "ellipsis"
    by_result, by_domain = view.counts(now)
    counts = _counts_table(by_result, by_domain)
    keys_line = _keys_line(keys)
    count_lines = 3 + max(1, min(COUNTED_ROWS, max(len(by_result), len(by_domain))))
    room = max(1, height - 1 - count_lines - (1 if keys_line else 0) - 3)  # title, table frame and header
    parts = [title, _latest_table(list(view.latest)[-room:], room, path), counts]
    if keys_line:
        parts.append(keys_line)
    return Group(*parts)


def _shown(path: Path) -> str:
    """The log's path as short as it reads: relative to here when it lies below."""
    try:
        relative = os.path.relpath(path)
    except ValueError:
        return str(path)
    return str(path) if relative.startswith("..") else relative


def _latest_table(entries: List[dict], rows: int, path: Path) -> Table:
    table = Table(box=box.SIMPLE_HEAD, expand=True, padding=(0, 1, 0, 0), show_edge=False, pad_edge=False)
    table.add_column("time", width=8, no_wrap=True)
    table.add_column("dir", width=3, no_wrap=True)
    table.add_column("domain", ratio=1, min_width=17, no_wrap=True, overflow="ellipsis")
    table.add_column("selector", width=8, no_wrap=True, overflow="ellipsis")
    table.add_column("result", width=14, no_wrap=True, overflow="ellipsis")
    table.add_column("reason", ratio=1, no_wrap=True, overflow="ellipsis")
    for entry in entries:
        said = describe(entry)
        result = said["result"]
        word = result.split(",")[0].split(" ")[0]
        stamp = entry_time(entry)
        table.add_row(f"{stamp:%H:%M:%S}" if stamp else "?", direction_of(entry) or "",
                      Text(printable(said["d"] or "-")), Text(printable(said["s"] or "-")),
                      Text(printable(result), style=RESULT_STYLES.get(word, "")),
                      Text(printable(said["details"] if entry.get("event") != "sign" else "")))
    if not entries:
        table.caption = Text(printable(f"waiting for entries in {path.name}"), style="dim")
        table.caption_justify = "left"
    return table


def _counts_table(by_result: Dict[str, List[int]], by_domain: Dict[str, List[int]]) -> Table:
    results = sorted(by_result.items(), key=lambda kv: (-kv[1][1], kv[0]))[:COUNTED_ROWS]
    domains = sorted(by_domain.items(), key=lambda kv: (-kv[1][1], kv[0]))[:COUNTED_ROWS]
    table = Table(box=box.SIMPLE_HEAD, expand=True, padding=(0, 1, 0, 0), show_edge=False, pad_edge=False)
    table.add_column("result", ratio=2, no_wrap=True, overflow="ellipsis")
    table.add_column("1 min", justify="right", width=6)
    table.add_column("1 hour", justify="right", width=6)
    table.add_column("domain", ratio=3, no_wrap=True, overflow="ellipsis")
    table.add_column("1 min", justify="right", width=6)
    table.add_column("1 hour", justify="right", width=6)
    for n in range(max(1, len(results), len(domains))):
        row: List = []
        for items in (results, domains):
            if n < len(items):
                name, (minute, hour) = items[n]
                style = RESULT_STYLES.get(name, "") if items is results else ""
                row += [Text(printable(name), style=style), str(minute), str(hour)]
            else:
                row += ["", "", ""] if items or n else [Text("none yet", style="dim"), "0", "0"]
        table.add_row(*row)
    return table


def _keys_line(keys: Sequence[Tuple[str, str, str]]) -> Optional[Text]:
    if not keys:
        return None
    return Text("keys: " + ", ".join(printable(f"{d} {s} {state}") for d, s, state in keys),
                no_wrap=True, overflow="ellipsis")


# --- the command --------------------------------------------------------------------------------------

@main.command("monitor")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="salmon_dkim.ini to read.")
@click.option("--refresh", type=click.FloatRange(min=0.2, max=60), default=1.0, show_default=True,
              help="Seconds between redraws.")
@click.option("--once", is_flag=True, help="Draw the screen once and exit (for scripts and screenshots).")
def monitor_command(config_file: Optional[str], refresh: float, once: bool) -> None:
    """Live view of the activity log: latest messages and counts for the last minute and hour."""
    settings = settings_or_stop(config_file, "salmon-dkim monitor: ")
    path = settings.logging.activity_log
    if path is None:
        stop(2, "salmon-dkim monitor: no activity log configured ([Logging] ActivityLog); give --config FILE")
    try:
        follower = ActivityFollower(path)
        view = ActivityView()
        view.add(follower.history(since=datetime.now(timezone.utc) - HOUR), datetime.now(timezone.utc))
    except OSError as exc:
        stop(2, f"salmon-dkim monitor: cannot read the activity log {path}: {exc.strerror or exc}")
    console = Console()

    def screen():
        return render(view, path, datetime.now(timezone.utc), console.size.height, key_states(settings))

    if once:
        console.print(screen())
        return
    try:
        with Live(screen(), console=console, screen=True, auto_refresh=False) as live:
            while True:
                time.sleep(refresh)
                view.add(_read(follower), datetime.now(timezone.utc))
                live.update(screen(), refresh=True)
    except KeyboardInterrupt:
        pass
    finally:
        follower.close()


def _read(follower: ActivityFollower) -> List[dict]:
    """New entries; a log that cannot be read for a moment (being rotated, say) shows none this time."""
    try:
        return follower.read_new()
    except OSError:
        return []
