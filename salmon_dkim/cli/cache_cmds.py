"""salmon-dkim cache: show (or empty) the DNS answers a running server has cached.

The server writes its cache to ``[DNS] CacheFile`` every few seconds while it
changes (see salmon_dkim.dns.cache); this command reads that snapshot, as
MDaemon's DKIM cache viewer does, and says how old it is.  ``--clear`` leaves a
request the running server obeys before its next lookup.
"""
from __future__ import annotations

import datetime
import time
from pathlib import Path
from typing import List, Optional

import click

from salmon_dkim.dns.cache import CacheEntry, SnapshotError, read_snapshot, request_clear
from salmon_dkim.cli import main
from salmon_dkim.cli.common import settings_or_stop, stop
from salmon_dkim.config import Settings

ANSWER_WIDTH = 60


def _snapshot_path(settings: Settings, clearing: bool) -> Path:
    """The configured CacheFile, or stop saying why there is nothing to show."""
    dns = settings.dns
    if dns.zone_file is not None:
        stop(0, f"[DNS] ZoneFile is set: answers come from {dns.zone_file} and are not cached.")
    if dns.cache_size == 0:
        stop(0, "DNS caching is off ([DNS] CacheSize = 0 or [Verification] UseCache = No).")
    if dns.cache_file is None:
        stop(1 if clearing else 0,
              "No [DNS] CacheFile is configured: the server keeps its DNS cache in memory only"
              + (" (restart it to empty the cache)." if clearing else
                 ".\nSet [DNS] CacheFile (for instance CacheFile = dns-cache.json) to see it here."))
    return dns.cache_file


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds <= 0:
        return "expired"
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{days}d" * bool(days), f"{hours}h" * bool(hours), f"{minutes}m" * bool(minutes),
             f"{secs}s" * bool(secs and not days)]
    return " ".join(p for p in parts if p)


def _utc(wall: float) -> str:
    return datetime.datetime.fromtimestamp(wall, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _shorten(text: str, full: bool) -> str:
    return text if full or len(text) <= ANSWER_WIDTH else text[:ANSWER_WIDTH - 1] + "…"


def _rows(entries: List[CacheEntry], now: float, full: bool) -> List[List[str]]:
    rows = []
    for e in sorted(entries, key=lambda e: (e.name, e.rdtype)):
        if e.expires_at <= now:
            continue
        answers = (["does not exist"] if e.records is None else [f"no {e.rdtype} record"] if not e.records
                   else [_shorten(r, full) for r in e.records])
        for i, answer in enumerate(answers):
            rows.append([e.name, e.rdtype, answer, _duration(e.expires_at - now), _utc(e.expires_at)] if i == 0
                        else ["", "", answer, "", ""])
    return rows


def _table(rows: List[List[str]]) -> str:
    header = ["NAME", "TYPE", "ANSWER", "EXPIRES IN", "EXPIRES AT"]
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip()
                     for row in [header] + rows)


def _read(path: Path) -> Optional[tuple]:
    """(written_at, entries) of the snapshot, None when there is no file yet; exit 2 when it is unreadable."""
    try:
        return read_snapshot(path)
    except FileNotFoundError:
        return None
    except SnapshotError as exc:
        stop(2, str(exc))
    except OSError as exc:
        stop(2, f"{path}: cannot be read: {exc.strerror}")


@main.command("cache")
@click.option("--config", "config_file", type=click.Path(dir_okay=False),
              help="salmon_dkim.ini (default: built-in defaults).")
@click.option("--clear", is_flag=True, help="Empty the cache (a running server follows within seconds).")
@click.option("--full", is_flag=True, help="Show whole records instead of their first characters.")
def cache(config_file: Optional[str], clear: bool, full: bool) -> None:
    """Show the DNS answers (DKIM keys, missing names) the server has cached."""
    settings = settings_or_stop(config_file)
    path = _snapshot_path(settings, clear)
    if clear:
        _clear(path)
        return
    snapshot = _read(path)
    if snapshot is None:
        stop(0, f"Nothing cached yet: {path} does not exist "
                 "(the server writes it once it caches an answer).")
    written_at, entries = snapshot
    now = time.time()
    rows = _rows(entries, now, full)
    as_of = f"as of {_utc(written_at)}, {_duration(now - written_at) if now - written_at >= 1 else '0s'} ago"
    if not rows:
        stop(0, f"The DNS cache is empty ({path}, {as_of}).")
    live = sum(1 for e in entries if e.expires_at > now)
    click.echo(f"{live} cached answers in {path} ({as_of})")
    click.echo(_table(rows))


def _clear(path: Path) -> None:
    if not path.exists():
        stop(0, f"Nothing to clear: {path} does not exist.")
    try:
        count = sum(1 for e in read_snapshot(path)[1] if e.expires_at > time.time())
    except (OSError, SnapshotError):
        count = 0
    try:
        request_clear(path)
    except OSError as exc:
        stop(2, f"{path}: cannot be written: {exc}")
    click.echo(f"Cleared {count} cached answers from {path}; a running server empties its cache "
               "before its next lookup.")
