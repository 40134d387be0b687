"""salmon-dkim cache: show (or empty) the DNS answers a running server has cached.

The server writes its cache to ``[DNS] CacheFile`` every few seconds while it
changes; this command reads that snapshot, as MDaemon's DKIM cache viewer does.
"""
from __future__ import annotations

import datetime
import time
from pathlib import Path
from typing import List, Optional

import click

from salmon_dkim.dns.cache import SnapshotError, read_snapshot, snapshot_entries, write_snapshot
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


def _rows(entries, now: float, full: bool) -> List[List[str]]:
    rows = []
    for name, records, expires_at in sorted(entries, key=lambda e: e[0]):
        answers = ["does not exist"] if records is None else ["no TXT record"] if not records else [
            _shorten(r.decode("utf-8", "backslashreplace"), full) for r in records]
        for i, answer in enumerate(answers):
            rows.append([name, answer, _duration(expires_at - now), _utc(expires_at)] if i == 0
                        else ["", answer, "", ""])
    return rows


def _table(rows: List[List[str]]) -> str:
    header = ["NAME", "ANSWER", "EXPIRES IN", "EXPIRES AT"]
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip()
                     for row in [header] + rows)


def _read(path: Path) -> Optional[list]:
    """The snapshot's entries, None when there is no file yet; exit 2 when it is unreadable."""
    try:
        return snapshot_entries(read_snapshot(path))
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
    entries = _read(path)
    if entries is None:
        stop(0, f"Nothing cached yet: {path} does not exist "
                 "(the server writes it once it caches an answer).")
    if not entries:
        stop(0, f"The DNS cache is empty ({path}).")
    click.echo(f"{len(entries)} cached answers in {path}")
    click.echo(_table(_rows(entries, time.time(), full)))


def _clear(path: Path) -> None:
    if not path.exists():
        stop(0, f"Nothing to clear: {path} does not exist.")
    try:
        count = len(snapshot_entries(read_snapshot(path)))
    except (OSError, SnapshotError):
        count = 0
    try:
        write_snapshot(path, [], cleared_at=time.time())
    except OSError as exc:
        stop(2, f"{path}: cannot be written: {exc}")
    click.echo(f"Cleared {count} cached answers from {path}; a running server drops its copy within seconds.")
