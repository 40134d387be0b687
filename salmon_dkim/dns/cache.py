"""A bounded cache of TXT answers that honours their TTL, with an optional snapshot file.

Answers (records) are kept for their TTL, capped at ``max_ttl``; final negative
answers (NXDOMAIN, no TXT) for ``negative_ttl``, or for the SOA minimum when the
answer carries one and it is shorter.  Temporary errors are never cached.  The
least recently used entry goes first when ``max_size`` is reached; ``max_size``
0 turns caching off.

With ``path``, the cache writes a JSON snapshot there (atomically, at most every
``flush_interval`` seconds while it changes, and on ``close``) so that
``salmon-dkim cache`` in another process can show it, and reads it back at
start.  Expiry times in the file are wall-clock (Unix) times.  A snapshot
written by ``salmon-dkim cache --clear`` empties the running cache too.
"""
from __future__ import annotations

import atexit
import json
import logging
import os
import tempfile
import threading
import time
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional, Tuple, Union

log = logging.getLogger(__name__)

SNAPSHOT_VERSION = 1


@dataclass(frozen=True)
class CachedAnswer:
    """A cached answer: the records, or None for "does not exist"; expires_at on the cache's clock."""

    records: Optional[Tuple[bytes, ...]]
    expires_at: float


class SnapshotError(ValueError):
    """A snapshot file that cannot be read; str() names the file and the problem."""


def read_snapshot(path: Union[str, os.PathLike]) -> dict:
    """The parsed snapshot at path ({"entries": [...], ...}); raises OSError or SnapshotError."""
    with open(path, encoding="utf-8") as f:
        try:
            data = json.load(f)
        except (ValueError, UnicodeDecodeError) as exc:
            raise SnapshotError(f"{path}: not a DNS cache snapshot ({exc})") from None
    if (not isinstance(data, dict) or data.get("version") != SNAPSHOT_VERSION
            or not isinstance(data.get("entries"), list)):
        raise SnapshotError(f"{path}: not a DNS cache snapshot (version {SNAPSHOT_VERSION} expected)")
    return data


def snapshot_entries(data: dict) -> List[Tuple[str, Optional[List[bytes]], float]]:
    """(name, records or None, expires_at wall-clock) from a parsed snapshot; SnapshotError if malformed."""
    try:
        entries = [(e["name"],
                    None if e["records"] is None
                    else [r.encode("utf-8", "surrogateescape") for r in e["records"]],
                    float(e["expires_at"])) for e in data["entries"]]
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise SnapshotError(f"malformed entry in DNS cache snapshot ({exc!r})") from None
    for name, _, _ in entries:
        if not isinstance(name, str):
            raise SnapshotError(f"malformed entry in DNS cache snapshot (name {name!r} is not text)")
    return entries


def write_snapshot(path: Union[str, os.PathLike], entries, *, cleared_at: Optional[float] = None) -> None:
    """Write entries [(name, records or None, expires_at wall-clock)] to path atomically."""
    path = Path(path)
    data = {"version": SNAPSHOT_VERSION, "written_at": time.time(), "cleared_at": cleared_at,
            "entries": [{"name": name,
                         "records": None if records is None
                         else [r.decode("utf-8", "surrogateescape") for r in records],
                         "expires_at": round(expires_at, 3)} for name, records, expires_at in entries]}
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1)
        os.chmod(tmp, 0o644)  # public DNS data only, readable by the viewer
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _close_if_alive(ref) -> None:
    cache = ref()
    if cache is not None:
        cache.close()


class TTLCache:
    """TXT answers by name, honouring TTL, bounded in size (LRU); see the module docstring."""

    def __init__(self, max_size: int, max_ttl: int, negative_ttl: int,
                 path: Union[str, os.PathLike, None] = None, *,
                 clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time, flush_interval: float = 2.0) -> None:
        self.max_size = max_size
        self.max_ttl = max_ttl
        self.negative_ttl = negative_ttl
        self.path = Path(path) if path is not None and max_size > 0 else None
        self.clock = clock
        self.wall_clock = wall_clock
        self.flush_interval = flush_interval
        self._entries: "OrderedDict[str, CachedAnswer]" = OrderedDict()
        self._lock = threading.RLock()
        self._dirty = False
        self._timer: Optional[threading.Timer] = None
        self._last_write = float("-inf")
        self._last_clear_check = time.monotonic()
        self._written_at = 0.0
        self._mtime: Optional[int] = None
        self._write_failed = False
        if self.path is not None:
            self._load()
            atexit.register(_close_if_alive, weakref.ref(self))

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, name: str) -> Optional[CachedAnswer]:
        """The live cached answer for name, or None (not cached, or expired)."""
        if self.max_size <= 0:
            return None
        self._check_cleared()
        key = _key(name)
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if entry.expires_at <= self.clock():
                del self._entries[key]
                self._changed()
                return None
            self._entries.move_to_end(key)
            return entry

    def put(self, name: str, records: List[bytes], ttl: float) -> None:
        """Cache records for ttl seconds (at most max_ttl; 0 caches nothing)."""
        self._store(name, tuple(records), min(ttl, self.max_ttl))

    def put_negative(self, name: str, soa_ttl: Optional[float] = None, *, exists: bool = False) -> None:
        """Cache "does not exist" (records None) or, with ``exists``, "no TXT record" (records ()).

        For negative_ttl, or the SOA minimum when given and shorter.
        """
        ttl = self.negative_ttl if soa_ttl is None else min(soa_ttl, self.negative_ttl)
        self._store(name, () if exists else None, ttl)

    def entries(self) -> List[Tuple[str, Optional[List[bytes]], float]]:
        """(name, records or None for negative, expires_at on the cache's clock), live ones only."""
        now = self.clock()
        with self._lock:
            return [(name, None if e.records is None else list(e.records), e.expires_at)
                    for name, e in self._entries.items() if e.expires_at > now]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._changed()

    def flush(self) -> None:
        """Write the snapshot now if anything changed since the last write."""
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            if not self._dirty or self.path is None:
                return
            self._check_cleared(force=True)  # else this write would undo a --clear
            now, wall = self.clock(), self.wall_clock()
            try:
                write_snapshot(self.path, [(n, r, wall + (exp - now)) for n, r, exp in self.entries()])
                self._written_at = time.time()  # compared with cleared_at, written by another process
                self._mtime = os.stat(self.path).st_mtime_ns
            except OSError as exc:
                if not self._write_failed:  # once, not every few seconds
                    log.warning("%s: cannot write the DNS cache snapshot: %s", self.path, exc)
                self._write_failed = True
            else:
                self._write_failed = False
            self._dirty = False
            self._last_write = time.monotonic()

    def close(self) -> None:
        self.flush()

    # -- internals -------------------------------------------------------------
    def _store(self, name: str, records: Optional[Tuple[bytes, ...]], ttl: float) -> None:
        if self.max_size <= 0 or ttl <= 0:
            return
        key = _key(name)
        with self._lock:
            self._entries[key] = CachedAnswer(records, self.clock() + ttl)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_size:
                self._entries.popitem(last=False)
            self._changed()

    def _changed(self) -> None:
        """Throttled write: now if the last one is old enough, else once the interval has passed."""
        if self.path is None:
            return
        self._dirty = True
        wait = self._last_write + self.flush_interval - time.monotonic()
        if wait <= 0:
            self.flush()
        elif self._timer is None:
            self._timer = threading.Timer(wait, self.flush)
            self._timer.daemon = True
            self._timer.start()

    def _load(self) -> None:
        try:
            data = read_snapshot(self.path)
            loaded = snapshot_entries(data)
        except FileNotFoundError:
            return
        except (OSError, SnapshotError) as exc:
            log.warning("%s: ignoring the DNS cache snapshot: %s", self.path, exc)
            return
        now, wall = self.clock(), self.wall_clock()
        for name, records, expires_at in sorted(loaded, key=lambda e: e[2])[-self.max_size:]:
            if expires_at > wall:
                self._entries[_key(name)] = CachedAnswer(
                    None if records is None else tuple(records), now + (expires_at - wall))

    def _check_cleared(self, force: bool = False) -> None:
        """Drop everything when `salmon-dkim cache --clear` rewrote the file (checked every few seconds)."""
        if self.path is None:
            return
        if not force and time.monotonic() - self._last_clear_check < self.flush_interval:
            return
        self._last_clear_check = time.monotonic()
        try:
            mtime = os.stat(self.path).st_mtime_ns
            if mtime == self._mtime:
                return
            cleared_at = read_snapshot(self.path).get("cleared_at")
        except (OSError, SnapshotError):
            return
        with self._lock:
            self._mtime = mtime
            if isinstance(cleared_at, (int, float)) and cleared_at >= self._written_at:
                self._entries.clear()


def _key(name: str) -> str:
    return name.lower().rstrip(".")
