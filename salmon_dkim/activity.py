"""The activity log: one JSON line per message signed, left unsigned or verified.

Append-only JSON lines, read back by ``salmon-dkim log`` and ``stats``.  A
failure to write is a warning in the Python log, never an error in mail flow.
Never give it key material.
"""
from __future__ import annotations

import json
import logging
import os
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator, List, Optional, Union

log = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]


class ActivityLog:
    """Appends one JSON object per event to ``path``; with no path it logs nothing."""

    def __init__(self, path: Optional[PathLike]) -> None:
        self.path = Path(path) if path is not None else None
        self._lock = threading.Lock()

    def record(self, event: str, **fields) -> None:
        if self.path is None:
            return
        entry = {"time": _now(), "event": event, **fields}
        line = json.dumps(entry, ensure_ascii=False, default=str) + "\n"
        try:
            with self._lock:
                self._append(line.encode("utf-8"))
        except OSError as exc:
            log.warning("activity log %s: cannot write (%s); entry dropped", self.path, exc)

    def _append(self, data: bytes) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # O_APPEND keeps concurrent writers' lines whole; 0640 lets the log group read it
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)

    def __repr__(self) -> str:
        return f"ActivityLog({str(self.path)!r})"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def read_activity(path: PathLike, *, event: Optional[str] = None, domain: Optional[str] = None,
                  last: Optional[int] = None) -> List[dict]:
    """The entries of an activity log, oldest first, filtered; unreadable lines are skipped.

    ``domain`` matches a sign entry's d=, or any d= among a verify entry's results.
    ``last``: only the newest ``last`` matching entries (read from the end of the file).
    A missing file reads as no entries.
    """
    if last is not None and last <= 0:
        return []
    domain = domain.lower().rstrip(".") if domain is not None else None
    entries = []
    try:
        with open(path, "rb") as f:
            for line in _newest_first(f):
                entry = _parse(line)
                if entry is None or (event is not None and entry.get("event") != event):
                    continue
                if domain is not None and domain not in _domains(entry):
                    continue
                entries.append(entry)
                if last is not None and len(entries) == last:
                    break
    except FileNotFoundError:
        return []
    entries.reverse()
    return entries


def _newest_first(f, block: int = 1 << 16) -> Iterator[bytes]:
    """The lines of a binary file, last line first, reading backwards a block at a time."""
    position = f.seek(0, os.SEEK_END)
    tail = b""
    while position > 0:
        step = min(block, position)
        position -= step
        f.seek(position)
        lines = (f.read(step) + tail).split(b"\n")
        tail = lines.pop(0)  # may be the end of a line that starts in the block before
        yield from reversed(lines)
    yield tail


def _parse(line: bytes) -> Optional[dict]:
    try:
        entry = json.loads(line)
    except ValueError:
        return None
    return entry if isinstance(entry, dict) else None


def _domains(entry: dict) -> set:
    found = {entry.get("d"), entry.get("domain")}
    for result in entry.get("results") or ():
        if isinstance(result, dict):
            found.add(result.get("d"))
    return {str(d).lower() for d in found if d}
