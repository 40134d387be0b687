"""The DNS cache: dnspython's own LRU answer cache, capped as [DNS] says, listable for `salmon-dkim cache`.

Why it is this small: dnspython's resolver already caches what a resolver
should.  Answers stay for their TTL (the smallest along a CNAME chain);
NXDOMAIN and "no record of that type" stay for the negative TTL of the
answer's SOA (RFC 2308 section 5; 300 s when it has none); timeouts, SERVFAIL
and other failures are never cached; ``LRUCache`` bounds the number of
answers and drops the least recently used first.  On top of it there is
only what the [DNS] options and MDaemon's cache viewer need:

- the caps: no answer longer than ``max_ttl`` (MaxCacheTTL), no negative
  answer longer than ``negative_ttl`` (NegativeCacheTTL); 0 caches none;
- ``entries()``: every live answer with its expiry (wall-clock time, as
  dnspython keeps it);
- with ``path`` (CacheFile), a JSON snapshot of ``entries()`` for the viewer
  in another process.  A lookup that finds the cache changed and the last
  snapshot older than ``snapshot_interval`` seconds starts a short-lived thread
  that writes it (10,000 answers take a few hundred ms here: no lookup waits
  for that), and ``close()`` writes the last one; the file says when it was
  written.  ``salmon-dkim cache --clear`` leaves a request file beside it
  (``request_clear``) that the running cache looks for at each lookup (one
  stat, about 2 us) and obeys before answering.  No timer, no exit hook, no
  reading back at start.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Union

import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.resolver

log = logging.getLogger(__name__)

SNAPSHOT_VERSION = 2
# How stale the viewer's picture may be while the server is busy.
SNAPSHOT_INTERVAL = 10.0


@dataclass(frozen=True)
class CacheEntry:
    """One cached answer: records as text, None for "does not exist" (rdtype "ANY"), [] for "no record of that type"."""

    name: str
    rdtype: str
    records: Optional[List[str]]
    expires_at: float  # Unix time


class SnapshotError(ValueError):
    """A snapshot file that cannot be read; str() names the file and the problem."""


def _record_text(rdata) -> str:
    if rdata.rdtype == dns.rdatatype.TXT:
        return b"".join(rdata.strings).decode("utf-8", "backslashreplace")
    return rdata.to_text()


def _entry(key, answer) -> CacheEntry:
    qname, rdtype, _ = key
    name = qname.to_text(omit_final_dot=True)
    if answer.response.rcode() == dns.rcode.NXDOMAIN:
        return CacheEntry(name, "ANY", None, answer.expiration)
    records = [] if answer.rrset is None else [_record_text(r) for r in answer.rrset]
    return CacheEntry(name, dns.rdatatype.to_text(rdtype), records, answer.expiration)


class DNSCache(dns.resolver.LRUCache):
    """dnspython's LRUCache with the [DNS] caps and a snapshot for the viewer (see the module docstring)."""

    def __init__(self, max_size: int, max_ttl: int, negative_ttl: int,
                 path: Union[str, os.PathLike, None] = None, *,
                 snapshot_interval: float = SNAPSHOT_INTERVAL) -> None:
        super().__init__(max_size)
        self.snapshot_interval = snapshot_interval
        self.max_ttl = max_ttl
        self.negative_ttl = negative_ttl
        self.path = Path(path) if path is not None else None
        self._dirty = False
        self._next_write = 0.0
        self._clear_request = str(clear_request_path(self.path)) if self.path is not None else None
        self._writing = threading.Lock()  # held by the one snapshot writer at a time
        self._write_failed = False

    # dnspython tests ``if resolver.cache:``; an empty cache must still count as a cache.
    def __bool__(self) -> bool:
        return True

    def put(self, key, value: dns.resolver.Answer) -> None:
        now = time.time()
        cap = self.negative_ttl if value.rrset is None else self.max_ttl
        value.expiration = min(value.expiration, now + cap)
        if value.expiration > now:
            super().put(key, value)
            self._dirty = True
        self._sync()

    def lookup(self, qname: dns.name.Name, rdtype: dns.rdatatype.RdataType) -> Optional[dns.resolver.Answer]:
        """The cached answer for (qname, rdtype), or the cached NXDOMAIN for qname, or None."""
        self._obey_clear_request()
        self._sync()
        answer = self.get((qname, rdtype, dns.rdataclass.IN))
        if answer is not None:
            return answer
        answer = self.get((qname, dns.rdatatype.ANY, dns.rdataclass.IN))
        if answer is not None and answer.response.rcode() == dns.rcode.NXDOMAIN:
            return answer
        return None

    def _obey_clear_request(self) -> None:
        """Empty the cache when `salmon-dkim cache --clear` asked for it (one stat when it did not)."""
        if self._clear_request is None or not os.path.exists(self._clear_request):
            return
        self.flush()
        self._next_write = 0.0  # show the emptied cache at once
        with contextlib.suppress(OSError):  # removed already
            os.unlink(self._clear_request)

    def entries(self) -> List[CacheEntry]:
        """Every answer not yet expired, most recently used first."""
        return [_entry(key, answer) for key, answer in self._live()]

    def _live(self) -> list:
        now = time.time()
        with self.lock:
            pairs, node = [], self.sentinel.next
            while node is not self.sentinel:
                if node.value.expiration > now:
                    pairs.append((node.key, node.value))
                node = node.next
        return pairs

    def flush(self, key=None) -> None:
        super().flush(key)
        self._dirty = True

    def close(self) -> None:
        """Write the snapshot now if anything changed since the last write (waits for a running writer)."""
        self._sync(force=True)

    def _sync(self, force: bool = False) -> None:
        """Start a snapshot write when one is due (``force``: write now, in this thread)."""
        if self.path is None:
            return
        now = time.monotonic()
        if force:
            with self._writing:
                pass  # let a running writer finish first
        if not self._dirty or (not force and now < self._next_write):
            return
        if not self._writing.acquire(blocking=force):
            return  # a writer is at work; the next lookup after it starts another
        self._dirty = False
        self._next_write = now + self.snapshot_interval
        pairs = self._live()
        if force:
            self._write(pairs)
        else:
            threading.Thread(target=self._write, args=(pairs,), name="dns-cache-snapshot", daemon=True).start()

    def _write(self, pairs: list) -> None:
        try:
            write_snapshot(self.path, [_entry(key, answer) for key, answer in pairs])
        except OSError as exc:
            if not self._write_failed:  # once, not every few seconds
                log.warning("%s: cannot write the DNS cache snapshot: %s", self.path, exc)
            self._write_failed = True
        else:
            self._write_failed = False
        finally:
            self._writing.release()


def clear_request_path(path: Union[str, os.PathLike]) -> Path:
    """The file `salmon-dkim cache --clear` leaves for the running cache: CacheFile + ".clear"."""
    path = Path(path)
    return path.with_name(path.name + ".clear")


def request_clear(path: Union[str, os.PathLike]) -> None:
    """Ask the cache that writes ``path`` to empty itself (before its next lookup), and empty the snapshot."""
    clear_request_path(path).touch()
    write_snapshot(path, [])


def write_snapshot(path: Union[str, os.PathLike], entries: List[CacheEntry]) -> None:
    """Write entries to path atomically, readable by the viewer (public DNS data only)."""
    path = Path(path)
    data = {"version": SNAPSHOT_VERSION, "written_at": round(time.time(), 3),
            "entries": [{"name": e.name, "type": e.rdtype, "records": e.records,
                         "expires_at": round(e.expires_at, 3)} for e in entries]}
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, separators=(",", ":"))
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def read_snapshot(path: Union[str, os.PathLike]) -> "tuple[float, List[CacheEntry]]":
    """(written_at, entries) of the snapshot at path; raises OSError or SnapshotError."""
    with open(path, encoding="utf-8") as f:
        try:
            data = json.load(f)
        except (ValueError, UnicodeDecodeError) as exc:
            raise SnapshotError(f"{path}: not a DNS cache snapshot ({exc})") from None
    if not isinstance(data, dict) or data.get("version") != SNAPSHOT_VERSION:
        raise SnapshotError(f"{path}: not a DNS cache snapshot of this version (version {SNAPSHOT_VERSION} "
                            "expected); it is rewritten by the server within seconds of its next lookup")
    try:
        entries = [CacheEntry(str(e["name"]), str(e["type"]),
                              None if e["records"] is None else [str(r) for r in e["records"]],
                              float(e["expires_at"])) for e in data["entries"]]
        return float(data["written_at"]), entries
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise SnapshotError(f"{path}: malformed entry in DNS cache snapshot ({exc!r})") from None
