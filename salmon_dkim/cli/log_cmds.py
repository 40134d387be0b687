"""salmon-dkim log, stats: find messages in the activity log (Tracemail) and count what happened.

Both read the log ``[Logging] ActivityLog`` names, with its rotated files, and
take the same filters.  ``log`` prints one row per entry (the signing domain
and selector for each sent message) or, with ``--json``, one JSON object per
line.  Exit 0, or 2 with one line for bad arguments, no log configured, or a
log that cannot be read.
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Callable, Iterable, List, NoReturn, Optional, Sequence

import click

from salmon_dkim.activity import (EVENTS, EntryFilter, iter_activity, parse_when, read_activity, result_words,
                                  results_of)
from salmon_dkim.cli import main
from salmon_dkim.cli.common import settings_or_stop, stop

RESULTS = ("pass", "fail", "neutral", "policy", "temperror", "permerror", "none",
           "accept", "reject", "tempfail", "skip")
COLUMN_LIMITS = {"account": 32, "message-id": 40}
HEADER = ["time", "event", "account", "message-id", "d=", "s=", "result", "details"]


def _stop(command: str, message: str) -> NoReturn:
    stop(2, f"salmon-dkim {command}: {message}", err=True)


def _log_path(command: str, config_file: Optional[str]) -> Path:
    path = settings_or_stop(config_file, f"salmon-dkim {command}: ").logging.activity_log
    if path is None:
        _stop(command, "no activity log configured ([Logging] ActivityLog); give --config FILE")
    return path


def _filter(command: str, direction, domain, account, result, since, until, event=None) -> EntryFilter:
    times = {}
    for option, text, end_of_day in (("since", since, False), ("until", until, True)):
        if text is not None:
            try:
                times[option] = parse_when(text, end_of_day=end_of_day)
            except ValueError as exc:
                _stop(command, f"--{option}: {exc}")
    return EntryFilter(event=event, direction=direction, domain=domain, account=account, result=result, **times)


def _reading(command: str, path: Path, read: Callable[[], object]):
    try:
        return read()
    except OSError as exc:
        _stop(command, f"cannot read the activity log {path}: {exc.strerror or exc}")


def filter_options(func):
    """The filters ``log`` and ``stats`` share."""
    for option in reversed([
        click.option("--config", "config_file", type=click.Path(dir_okay=False), help="salmon_dkim.ini to read."),
        click.option("--direction", type=click.Choice(["in", "out"]),
                     help="in: verified (or not) on arrival; out: signed or sent unsigned."),
        click.option("--domain", help="Signed as this d= domain, or carrying a signature of it."),
        click.option("--account", help="Sent by this account (authenticated user or author); @DOMAIN for all of a domain."),
        click.option("--result", type=click.Choice(RESULTS, case_sensitive=False),
                     help="A signature with this result (none: unsigned), or this policy action."),
        click.option("--since", metavar="TIME", help="From TIME: 2024-05-01, 2024-05-01T14:30 (UTC), or an age: 1h, 2d."),
        click.option("--until", metavar="TIME", help="Before TIME (a date alone: to the end of that day)."),
    ]):
        func = option(func)
    return func


# --- log ---------------------------------------------------------------------------------------------

def printable(text: str) -> str:
    """Sender text made safe for a terminal: control characters (escape sequences) become '?'."""
    return "".join(c if c.isprintable() else "?" for c in text)


def short_time(entry: dict) -> str:
    """The entry's time to the second: 2024-05-01T10:00:01Z."""
    stamp = str(entry.get("time") or "")
    return stamp[:19] + "Z" if len(stamp) >= 19 and stamp[10:11] == "T" else stamp


def describe(entry: dict) -> dict:
    """What one entry says, in words for a person: d=, s=, result and details."""
    event = entry.get("event")
    if event == "verify":
        results = results_of(entry)
        d = ",".join(dict.fromkeys(str(r.get("d") or "?") for r in results))
        s = ",".join(str(r.get("s") or "?") for r in results)
        result = ",".join(result_words(entry))
        if entry.get("action"):
            result += f" ({entry['action']})"
        reasons = [str(r.get("reason")) for r in results if r.get("result") != "pass" and r.get("reason")]
        details = str(entry.get("reason") or "; ".join(reasons))
    elif event == "sign":
        d, s, result = str(entry.get("d") or ""), str(entry.get("s") or ""), "signed"
        details = f"a={entry['algorithm']}" if entry.get("algorithm") else ""
    elif event == "key":
        d, s, result = str(entry.get("d") or ""), str(entry.get("s") or ""), str(entry.get("state") or "")
        details = str(entry.get("reason") or "")
    else:
        d, s = "", ""
        result = (result_words(entry) or (str(event),))[0]
        details = str(entry.get("reason") or "")
    return {"d": d, "s": s, "result": result, "details": details}


def _row(entry: dict) -> List[str]:
    said = describe(entry)
    return [printable(cell) for cell in (
        short_time(entry), str(entry.get("event") or ""), str(entry.get("account") or "-"),
        str(entry.get("message_id") or "-"), said["d"] or "-", said["s"] or "-", said["result"], said["details"])]


def format_table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> str:
    """Columns padded to their widest cell (the last one left ragged); long cells cut with '…'."""
    cut = [[_cut(cell, COLUMN_LIMITS.get(name)) for cell, name in zip(row, header)] for row in rows]
    table = [list(header)] + cut
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    return "\n".join(("  ".join(cell.ljust(w) for cell, w in zip(row[:-1], widths)) + "  " + row[-1])
                     .rstrip(" ") for row in table)


def _cut(text: str, limit: Optional[int]) -> str:
    return text if limit is None or len(text) <= limit else text[:limit - 1] + "…"


@main.command("log")
@filter_options
@click.option("--event", type=click.Choice(EVENTS), help="Only entries of this kind.")
@click.option("--last", type=click.IntRange(min=1), default=20, show_default=True,
              help="How many of the most recent matching entries.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line, as logged, for scripts.")
def log_command(config_file: Optional[str], direction, domain, account, result, since, until,
                event: Optional[str], last: int, as_json: bool) -> None:
    """Find messages in the activity log: who sent what, signed with which domain and selector."""
    path = _log_path("log", config_file)
    wanted = _filter("log", direction, domain, account, result, since, until, event)
    entries = _reading("log", path, lambda: read_activity(path, last=last + 1, where=wanted))
    more = len(entries) > last
    entries = entries[-last:]
    if as_json:
        for entry in entries:
            click.echo(json.dumps(entry, ensure_ascii=False))
        return
    if not entries:
        click.echo(f"no {'matching ' if wanted != EntryFilter() else ''}entries in {path}")
        return
    click.echo(format_table([_row(e) for e in entries], HEADER))
    if more:
        click.echo(f"(the newest {last} matching entries; --last N shows more)", err=True)


# --- stats -------------------------------------------------------------------------------------------

def count_entries(entries: Iterable[dict]) -> dict:
    """The counts ``stats`` prints: entries, first and last time, and per kind what happened."""
    total, first, last = 0, None, None
    events: Counter = Counter()
    signed, unsigned, verified, actions, skipped = Counter(), Counter(), Counter(), Counter(), Counter()
    for e in entries:
        total += 1
        stamp = e.get("time")
        if isinstance(stamp, str):
            first, last = min(first or stamp, stamp), max(last or stamp, stamp)
        event = e.get("event")
        events[event] += 1
        if event == "sign":
            for selector in str(e.get("s") or "?").split(","):
                signed[f"d={e.get('d')} s={selector}"] += 1
        elif event == "unsigned":
            unsigned[str(e.get("reason") or "?")] += 1
        elif event == "verify":
            words = [str(r.get("result")) for r in results_of(e)]
            verified.update(words or ["none (no signature)"])
            if e.get("action"):
                actions[str(e["action"])] += 1
        elif event == "skip-verify":
            skipped[str(e.get("reason") or "?")] += 1
    return {"entries": total, "first": first, "last": last,
            "signed": {"messages": events["sign"], "by_key": dict(signed.most_common())},
            "unsigned": {"messages": events["unsigned"], "by_reason": dict(unsigned.most_common())},
            "verified": {"messages": events["verify"], "by_result": dict(verified.most_common()),
                         "by_action": dict(actions.most_common())},
            "skipped": {"messages": events["skip-verify"], "by_reason": dict(skipped.most_common())}}


@main.command("stats")
@filter_options
@click.option("--json", "as_json", is_flag=True, help="The counts as one JSON object.")
def stats_command(config_file: Optional[str], direction, domain, account, result, since, until,
                  as_json: bool) -> None:
    """Count what the activity log holds: signed by key, unsigned by reason, verify results."""
    path = _log_path("stats", config_file)
    wanted = _filter("stats", direction, domain, account, result, since, until)
    counts = _reading("stats", path, lambda: count_entries(iter_activity(path, wanted)))
    if as_json:
        click.echo(json.dumps(dict(counts, log=str(path)), ensure_ascii=False))
        return
    if not counts["entries"]:
        click.echo(f"no {'matching ' if wanted != EntryFilter() else ''}entries in {path}")
        return
    click.echo(f"{counts['entries']} entries in {path}, {counts['first']} to {counts['last']}")
    verified = counts["verified"]
    for title, total, table in (("signed messages", counts["signed"]["messages"], counts["signed"]["by_key"]),
                                ("unsigned messages", counts["unsigned"]["messages"], counts["unsigned"]["by_reason"]),
                                ("verified messages", verified["messages"], verified["by_result"]),
                                ("policy actions", sum(verified["by_action"].values()), verified["by_action"]),
                                ("verification skipped", counts["skipped"]["messages"], counts["skipped"]["by_reason"])):
        click.echo(f"\n{title}: {total}")
        width = max((len(k) for k in table), default=0)
        for name, n in table.items():
            click.echo(f"  {printable(name).ljust(width)}  {n:>6}")
