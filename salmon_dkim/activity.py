"""The activity log: one JSON line per event (message signed, left unsigned, verified, key change).

Written off the message path: :meth:`ActivityLog.record` stamps the entry,
hands it to the in-process listeners (metrics) and queues it; a writer thread
appends what is queued in batches.  ``flush()`` and ``close()`` write
everything queued; at exit (``atexit``, and SIGTERM when no one else handles
it) every log in the process is flushed, so a clean stop loses no line.  A
failure to write is a warning in the Python log, never an error in mail flow.
Never give it key material.

Rotation by size (``[Logging] ActivityLogMaxBytes``, ``ActivityLogBackups``):
FILE, FILE.1 (newer) ... FILE.N (oldest).  Several processes may share one
log: each batch is appended with O_APPEND under an fcntl lock on FILE.lock,
which also covers the size check and the renames, so no line is lost, split
or written twice.

Readers: :func:`read_activity` (filtered, across the rotated files, in time
order), :class:`EntryFilter`, and :class:`ActivityFollower` (new lines as
they come, through rotations) for ``salmon-dkim log``, ``stats`` and ``monitor``.

Entries have ``time`` (ISO 8601 UTC, "Z") and ``event``; readers tolerate
older lines without the other fields (``direction``, ``account``, ...).
"""
from __future__ import annotations

import atexit
import collections
import contextlib
import fcntl
import json
import logging
import os
import re
import signal
import threading
import weakref
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import IO, Callable, Deque, Iterator, List, Optional, Sequence, Tuple, Union

log = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]
Listener = Callable[[dict], None]

EVENTS = ("sign", "unsigned", "verify", "skip-verify", "key")
DIRECTIONS = {"sign": "out", "unsigned": "out", "verify": "in", "skip-verify": "in"}
# what the [Logging] options default to (the spec says the same)
DEFAULT_MAX_BYTES = 10 * 1024 * 1024
DEFAULT_BACKUPS = 5
# lines waiting for the writer at most: about 5 MB of typical lines; beyond, new lines are dropped
DEFAULT_QUEUE_LIMIT = 10000
# the writer gathers lines for this long before it writes them (or until WRITE_BATCH wait): woken for
# every line, it took the GIL from the message path so often that verifying cost twice as much
WRITE_INTERVAL = 0.1
WRITE_BATCH = 256
# a writer thread with nothing to write for this long ends; the next record() starts another
WRITER_IDLE_SECONDS = 5.0
# flush() at exit or on SIGTERM waits this long for a writer that is busy (a hung disk) before giving up
FLUSH_TIMEOUT = 5.0

_logs: "weakref.WeakSet[ActivityLog]" = weakref.WeakSet()  # every log of this process, for exit and readers
_logs_lock = threading.Lock()


class ActivityLog:
    """Appends one JSON object per event to ``path``, off the caller's thread; with no path, writes nothing.

    ``max_bytes``: rotate before a file would pass this size (0 = never);
    ``backups``: rotated files kept (FILE.1 ... FILE.N).  ``queue_limit``:
    lines waiting for the writer at most; ``record`` never blocks on the disk
    and drops (and counts in :attr:`dropped`) what does not fit.
    """

    def __init__(self, path: Optional[PathLike], *, max_bytes: int = DEFAULT_MAX_BYTES,
                 backups: int = DEFAULT_BACKUPS, queue_limit: int = DEFAULT_QUEUE_LIMIT) -> None:
        self.path = Path(path) if path is not None else None
        self.max_bytes = max(0, int(max_bytes))
        self.backups = max(0, int(backups))
        self.queue_limit = max(1, int(queue_limit))
        self.dropped = 0  # lines lost: queue full, or the file could not be written
        self._listeners: List[Listener] = []
        self._queue: Deque[dict] = collections.deque()
        self._queued = threading.Condition(threading.Lock())  # guards _queue and _writer
        self._writing = threading.Lock()  # one batch at a time reaches the file, in queue order
        self._writer: Optional[threading.Thread] = None
        self._fd: Optional[int] = None
        self._lock_fd: Optional[int] = None
        self._warned_full = False
        self._failing = False
        self._closed = False
        if self.path is not None:
            with _logs_lock:
                _logs.add(self)
            _flush_on_sigterm()

    @classmethod
    def from_settings(cls, logging_settings) -> "ActivityLog":
        """The log ``[Logging]`` describes (a LoggingSettings): its file, rotation size and backups."""
        return cls(logging_settings.activity_log, max_bytes=logging_settings.activity_log_max_bytes,
                   backups=logging_settings.activity_log_backups)

    # -- the message path ----------------------------------------------------------------

    def record(self, event: str, **fields) -> None:
        """Stamp and queue one entry; listeners see it now, the file within WRITE_INTERVAL seconds."""
        if self.path is None and not self._listeners:
            return
        entry = {"time": _now(), "event": event, **fields}
        for listener in tuple(self._listeners):
            try:
                listener(entry)
            except Exception:  # noqa: BLE001 (a listener's bug must never reach the mail)
                log.exception("activity log listener %r failed on a %s entry", listener, event)
        if self.path is None:
            return
        if self._closed:  # after close(): no thread to hand it to, so write it now
            with self._writing:
                self._write_queued([entry])
            return
        with self._queued:
            if len(self._queue) >= self.queue_limit:
                self.dropped += 1
                if not self._warned_full:
                    self._warned_full = True
                    log.warning("activity log %s: %d lines wait for the disk; new lines are dropped until it "
                                "catches up (ActivityLog.dropped counts them)", self.path, len(self._queue))
                return
            self._queue.append(entry)
            if self._writer is None:
                self._writer = threading.Thread(target=self._write_forever, daemon=True,
                                                name=f"activity-log {self.path.name}")
                self._writer.start()
            elif len(self._queue) == WRITE_BATCH:
                self._queued.notify()

    def subscribe(self, listener: Listener) -> None:
        """Call ``listener(entry)`` for every entry, as it is recorded (before the disk write).

        The entry is shared: read it, do not change it.  A listener that raises is
        logged and skipped; mail goes on.
        """
        self._listeners.append(listener)

    def unsubscribe(self, listener: Listener) -> None:
        with contextlib.suppress(ValueError):
            self._listeners.remove(listener)

    @property
    def pending(self) -> int:
        """Lines queued and not yet written."""
        return len(self._queue)

    # -- writing -------------------------------------------------------------------------

    def flush(self, timeout: float = FLUSH_TIMEOUT) -> bool:
        """Write everything queued so far, in this thread; False if the writer stayed busy past ``timeout``."""
        if self.path is None:
            return True
        if not self._writing.acquire(timeout=timeout):
            log.warning("activity log %s: still busy writing after %.0f s; %d lines not flushed",
                        self.path, timeout, len(self._queue))
            return False
        try:
            self._write_queued(self._take_all())
        finally:
            self._writing.release()
        return True

    def close(self, timeout: float = FLUSH_TIMEOUT) -> bool:
        """Flush and close the file; entries recorded later are written at once (slow, but not lost)."""
        self._closed = True
        with self._queued:
            self._queued.notify()
        done = self.flush(timeout)
        if done and self._writing.acquire(timeout=timeout):
            try:
                self._close_files()
            finally:
                self._writing.release()
        return done

    def _take_all(self) -> List[dict]:
        # bounded wait: a SIGTERM handler may interrupt this thread inside record()
        if not self._queued.acquire(timeout=FLUSH_TIMEOUT):
            return []
        try:
            batch = list(self._queue)
            self._queue.clear()
        finally:
            self._queued.release()
        return batch

    def _write_forever(self) -> None:
        idle = 0.0
        while True:
            with self._queued:
                if len(self._queue) < WRITE_BATCH and not self._closed:
                    self._queued.wait(WRITE_INTERVAL)
                if not self._queue:
                    idle += WRITE_INTERVAL
                    if self._closed or idle >= WRITER_IDLE_SECONDS:
                        self._writer = None  # idle (or closed): the next record() starts a new writer
                        break
                    continue
            idle = 0.0
            with self._writing:
                batch = self._take_all()
                try:
                    self._write_queued(batch)
                except Exception:  # noqa: BLE001 (a bug here must not stop the writer for good)
                    self.dropped += len(batch)
                    log.exception("activity log %s: writing failed; %d lines dropped", self.path, len(batch))
        with self._writing:
            self._close_files()

    def _write_queued(self, entries: List[dict]) -> None:
        """Append ``entries`` as lines (caller holds ``_writing``, or the log is closed)."""
        if not entries:
            return
        lines = []
        for entry in entries:
            try:
                lines.append((json.dumps(entry, ensure_ascii=False, default=str) + "\n").encode("utf-8"))
            except (TypeError, ValueError) as exc:
                self.dropped += 1
                log.warning("activity log %s: a %s entry cannot be written as JSON (%s); dropped",
                            self.path, entry.get("event"), exc)
        try:
            with self._file_lock():
                self._append_lines(lines)
        except OSError as exc:
            self.dropped += len(lines)
            self._close_files()
            if not self._failing:
                self._failing = True
                log.warning("activity log %s: cannot write (%s); lines are dropped until it can",
                            self.path, exc.strerror or exc)
            return
        if self._failing:
            self._failing = False
            log.warning("activity log %s: writing again (%d lines dropped so far)", self.path, self.dropped)

    def _append_lines(self, lines: Sequence[bytes]) -> None:
        fd = self._open()
        size = os.fstat(fd).st_size
        chunk: List[bytes] = []
        chunk_size = 0
        for line in lines:
            if self.max_bytes and size + chunk_size and size + chunk_size + len(line) > self.max_bytes:
                _write_all(fd, b"".join(chunk))
                chunk, chunk_size = [], 0
                fd, size = self._rotate(), 0
            chunk.append(line)
            chunk_size += len(line)
        _write_all(fd, b"".join(chunk))

    def _open(self) -> int:
        """The log file open for appending; reopened when another process rotated it away."""
        if self._fd is not None:
            try:
                same = os.path.samestat(os.fstat(self._fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                return self._fd
            os.close(self._fd)
            self._fd = None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # O_APPEND keeps concurrent writers' lines whole; 0640 lets the log group read it
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        return self._fd

    def _rotate(self) -> int:
        """FILE.N-1 -> FILE.N, ..., FILE -> FILE.1 (under the file lock); the new, empty FILE."""
        for n in range(self.backups - 1, 0, -1):
            with contextlib.suppress(FileNotFoundError):
                os.replace(_backup(self.path, n), _backup(self.path, n + 1))
        if self.backups:
            os.replace(self.path, _backup(self.path, 1))
        else:
            os.unlink(self.path)
        return self._open()

    @contextlib.contextmanager
    def _file_lock(self) -> Iterator[None]:
        """Exclusive with every other writer of this log (other processes too) while it rotates."""
        if not self.max_bytes:  # no rotation: O_APPEND alone keeps lines whole
            yield
            return
        if self._lock_fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._lock_fd = os.open(_lock_path(self.path), os.O_RDWR | os.O_CREAT, 0o640)
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def _close_files(self) -> None:
        for name in ("_fd", "_lock_fd"):
            fd = getattr(self, name)
            if fd is not None:
                setattr(self, name, None)
                with contextlib.suppress(OSError):
                    os.close(fd)

    def __repr__(self) -> str:
        return f"ActivityLog({str(self.path) if self.path else None!r})"


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _backup(path: Path, n: int) -> Path:
    return path.with_name(f"{path.name}.{n}")


def _lock_path(path: Path) -> Path:
    return path.with_name(f"{path.name}.lock")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# -- a clean stop loses nothing ---------------------------------------------------------------

def flush_all(timeout: float = FLUSH_TIMEOUT) -> None:
    """Flush every activity log of this process (at exit, on SIGTERM)."""
    locked = _logs_lock.acquire(timeout=timeout)  # bounded: a signal may arrive while it is held
    try:
        logs = list(_logs)
    finally:
        if locked:
            _logs_lock.release()
    for activity in logs:
        try:
            activity.flush(timeout)
        except Exception:  # noqa: BLE001 (one log's trouble must not keep the others unwritten)
            log.exception("activity log %s: flushing at exit failed", activity.path)


atexit.register(flush_all)

_sigterm_hooked = False


def _flush_on_sigterm() -> None:
    """Flush the logs on SIGTERM where nothing else handles it (``salmon start --no-daemon``).

    Python's default for SIGTERM ends the process at once, without atexit.  Only
    that default is replaced, by a handler that flushes and then dies of SIGTERM
    as before; a handler someone else installed (python-daemon's, an app's) is
    left alone, and the exit it makes runs ``atexit``.
    """
    global _sigterm_hooked
    if _sigterm_hooked or threading.current_thread() is not threading.main_thread():
        return
    try:
        if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
            return
        signal.signal(signal.SIGTERM, _flush_and_die)
    except (ValueError, OSError):  # not the main interpreter, or no signals here
        return
    _sigterm_hooked = True


def _flush_and_die(signum, frame) -> None:
    flush_all()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


_flush_and_die.stands_for_default = True  # a clean stop of the receivers may take its place (exit runs atexit)


def _flush_writers_of(path: PathLike) -> None:
    """A reader in this process sees every line recorded here before it reads."""
    wanted = os.path.abspath(path)
    with _logs_lock:
        logs = [a for a in _logs if a.path is not None and os.path.abspath(a.path) == wanted]
    for activity in logs:
        activity.flush()


# -- reading ----------------------------------------------------------------------------------

def log_files(path: PathLike) -> List[Path]:
    """The files of a log, oldest first: FILE.N ... FILE.1, then FILE (those that exist)."""
    path = Path(path)
    pattern = re.compile(re.escape(path.name) + r"\.([1-9][0-9]{0,5})")
    try:
        names = os.listdir(path.parent)
    except FileNotFoundError:
        return []
    numbered = sorted(((int(m.group(1)), path.with_name(name)) for name in names
                       if (m := pattern.fullmatch(name))), reverse=True)
    files = [p for _, p in numbered]
    if path.name in names:
        files.append(path)
    return files


def entry_time(entry: dict) -> Optional[datetime]:
    """The entry's ``time`` as an aware UTC datetime; None when missing or unreadable."""
    value = entry.get("time")
    if not isinstance(value, str):
        return None
    try:
        stamp = datetime.fromisoformat(value.replace("Z", "+00:00") if value.endswith("Z") else value)
    except ValueError:
        return None
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=timezone.utc)


def direction_of(entry: dict) -> Optional[str]:
    """"out" (signed or left unsigned), "in" (verified or not), or None (key events)."""
    direction = entry.get("direction")
    return direction if direction in ("in", "out") else DIRECTIONS.get(entry.get("event"))


def domains_of(entry: dict) -> set:
    """The d= domains an entry names: the signing domain, or every verified signature's."""
    found = {entry.get("d"), entry.get("domain")}
    for result in results_of(entry):
        found.add(result.get("d"))
    return {str(d).lower().rstrip(".") for d in found if d}


def results_of(entry: dict) -> List[dict]:
    """A verify entry's signature results (dicts); [] for anything else or a damaged list."""
    results = entry.get("results")
    return [r for r in results if isinstance(r, dict)] if isinstance(results, list) else []


@dataclass(frozen=True)
class EntryFilter:
    """Which entries a reader wants; every field left None lets all through.

    ``domain``: the signing d=, or any verified signature's d=.  ``account``:
    the authenticated user or the author address (case does not matter).
    ``result``: a verify entry with a signature of that result ("none" = no
    signature), or with that action (accept, reject, tempfail, skip).
    ``since``/``until``: times (aware datetimes), ``until`` excluded.
    """

    event: Optional[str] = None
    direction: Optional[str] = None
    domain: Optional[str] = None
    account: Optional[str] = None
    result: Optional[str] = None
    since: Optional[datetime] = None
    until: Optional[datetime] = None

    def __call__(self, entry: dict) -> bool:
        if self.event is not None and entry.get("event") != self.event:
            return False
        if self.direction is not None and direction_of(entry) != self.direction:
            return False
        if self.domain is not None and self.domain.lower().rstrip(".") not in domains_of(entry):
            return False
        if self.account is not None and not _is_account(entry, self.account.lower()):
            return False
        if self.result is not None and not _has_result(entry, self.result.lower()):
            return False
        if self.since is not None or self.until is not None:
            stamp = entry_time(entry)
            if stamp is None or (self.since is not None and stamp < self.since) or \
                    (self.until is not None and stamp >= self.until):
                return False
        return True


def _is_account(entry: dict, wanted: str) -> bool:
    """``wanted`` is the entry's account (or author, or user); "@domain" matches any account there."""
    for field in ("account", "author", "user"):
        value = str(entry.get(field) or "").lower()
        if value and (value == wanted or wanted.startswith("@") and value.endswith(wanted)):
            return True
    return False


def _has_result(entry: dict, wanted: str) -> bool:
    if entry.get("event") == "skip-verify":
        return wanted == "skip"
    if entry.get("event") != "verify":
        return False
    words = {str(r.get("result")).lower() for r in results_of(entry)} or {"none"}
    return wanted in words or wanted == str(entry.get("action") or "").lower()


def read_activity(path: PathLike, *, event: Optional[str] = None, domain: Optional[str] = None,
                  last: Optional[int] = None, where: Optional[Callable[[dict], bool]] = None) -> List[dict]:
    """The entries of an activity log and its rotated files, oldest first, filtered.

    ``domain`` matches a sign entry's d=, or any d= among a verify entry's results;
    ``where`` is any other test (an :class:`EntryFilter`, say).  ``last``: only
    the newest ``last`` matching entries (read from the end).  Unreadable lines
    are skipped; a missing log reads as no entries; other OSErrors are raised.
    Lines recorded in this process and not yet written are written first.
    """
    if last is not None and last <= 0:
        return []
    wanted = EntryFilter(event=event, domain=domain)
    if last is None:
        return in_time_order([e for e in iter_activity(path, where) if wanted(e)])
    _flush_writers_of(path)
    entries: List[dict] = []
    with _open_files(path) as files:
        for f in reversed(files):
            for line in _newest_first(f):
                entry = _parse(line)
                if entry is not None and wanted(entry) and (where is None or where(entry)):
                    entries.append(entry)
                    if len(entries) == last:
                        break
            if len(entries) == last:
                break
    entries.reverse()
    return in_time_order(entries)


def iter_activity(path: PathLike, where: Optional[Callable[[dict], bool]] = None) -> Iterator[dict]:
    """Every readable entry ``where`` accepts, file by file (oldest first), without holding them all.

    For counting over a large log; :func:`read_activity` sorts by time.
    """
    _flush_writers_of(path)
    since = getattr(where, "since", None)
    with _open_files(path) as files:
        for f in files:
            if since is not None and _modified(f) < since:
                continue  # written to last before the time asked for: nothing in it can match
            yield from (e for e in _entries(f) if where is None or where(e))


def in_time_order(entries: List[dict]) -> List[dict]:
    """Sorted by ``time``, stable; an entry without a readable time keeps its place after the one before."""
    keyed, previous = [], datetime.min.replace(tzinfo=timezone.utc)
    for n, entry in enumerate(entries):
        previous = entry_time(entry) or previous
        keyed.append((previous, n, entry))
    keyed.sort(key=lambda k: (k[0], k[1]))
    return [entry for _, _, entry in keyed]


@contextlib.contextmanager
def _open_files(path: PathLike) -> Iterator[List[IO[bytes]]]:
    """The log's files open for reading, oldest first; one file seen under two names is read once.

    Opened newest first, so a rotation while opening shows a file twice (skipped
    by its inode) rather than not at all.
    """
    opened: List[IO[bytes]] = []
    seen = set()
    try:
        for name in reversed(log_files(path)):
            try:
                f = open(name, "rb")
            except FileNotFoundError:
                continue
            st = os.fstat(f.fileno())
            if (st.st_dev, st.st_ino) in seen:
                f.close()
                continue
            seen.add((st.st_dev, st.st_ino))
            opened.append(f)
        opened.reverse()
        yield opened
    finally:
        for f in opened:
            f.close()


def _modified(f: IO[bytes]) -> datetime:
    return datetime.fromtimestamp(os.fstat(f.fileno()).st_mtime, timezone.utc)


def _entries(f: IO[bytes], end: Optional[int] = None) -> Iterator[dict]:
    """The readable entries of a file from its start (up to byte ``end``)."""
    f.seek(0)
    lines = f if end is None else f.read(end).split(b"\n")
    for line in lines:
        entry = _parse(line)
        if entry is not None:
            yield entry


def _newest_first(f: IO[bytes], block: int = 1 << 16) -> Iterator[bytes]:
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
    if not line.strip():
        return None
    try:
        entry = json.loads(line)
    except ValueError:
        return None
    return entry if isinstance(entry, dict) else None


# -- following --------------------------------------------------------------------------------

class ActivityFollower:
    """The entries appended to a log from now on, through rotations (``tail -F`` for JSON lines).

    :meth:`read_new` never blocks: it returns what was written since the last
    call (complete lines only).  :meth:`history` returns what was there before
    the follower started, so the two together miss and repeat nothing.
    """

    def __init__(self, path: PathLike) -> None:
        self.path = Path(path)
        self._file: Optional[IO[bytes]] = None
        self._partial = b""
        self._start = 0
        _flush_writers_of(self.path)
        self._reopen(at_end=True)
        self._start = self._file.tell() if self._file is not None else 0
        # with no file yet, the backups there now are history, any others came after we started
        self._old_backups = set() if self._file is not None else {
            _identity(p) for p in log_files(self.path) if p != self.path} - {None}

    def _reopen(self, at_end: bool = False) -> None:
        try:
            f = open(self.path, "rb")
        except FileNotFoundError:
            self._file = None
            return
        if at_end:
            f.seek(0, os.SEEK_END)
        self._file, self._partial = f, b""

    def history(self, since: Optional[datetime] = None) -> List[dict]:
        """Entries written before the follower started (rotated files included), in time order."""
        wanted = EntryFilter(since=since)
        entries: List[dict] = []
        ours = os.fstat(self._file.fileno()) if self._file is not None else None
        if ours is None or ours.st_nlink:  # our file deleted: everything left on disk came after it
            for name in log_files(self.path):
                if name == self.path:
                    continue  # our file (read below) or one begun after it
                with contextlib.suppress(FileNotFoundError), open(name, "rb") as f:
                    if ours is not None and os.path.samestat(os.fstat(f.fileno()), ours):
                        break  # rotated since we started: the backups after it are new lines
                    if ours is None and _identity(name) not in self._old_backups:
                        break  # begun after we started, when there was no file yet
                    if since is None or _modified(f) >= since:
                        entries.extend(e for e in _entries(f) if wanted(e))
        if self._file is not None and self._start:
            position = self._file.tell()
            entries.extend(e for e in _entries(self._file, self._start) if wanted(e))
            self._file.seek(position)
        return in_time_order(entries)

    def read_new(self) -> List[dict]:
        """Entries written since the last call, oldest first."""
        _flush_writers_of(self.path)
        entries: List[dict] = []
        if self._file is None:
            self._reopen()
            if self._file is None:
                return []
            # rotated before we first saw the file: what went to backups since we started
            for name in log_files(self.path):
                if name != self.path and _identity(name) not in self._old_backups:
                    with contextlib.suppress(FileNotFoundError), open(name, "rb") as f:
                        entries.extend(_entries(f))
            self._old_backups = set()
        entries += self._read_lines()
        if self._rotated():
            entries += self._read_lines()  # the last lines written before the rename
            entries += self._read_newer_backups(os.fstat(self._file.fileno()))
            self._file.close()
            self._reopen()
            if self._file is not None:
                entries += self._read_lines()
        return entries

    def _read_newer_backups(self, ours: os.stat_result) -> List[dict]:
        """Files rotated past since the last read (several rotations between two reads).

        Our file is FILE.k now: FILE.k-1 ... FILE.1 came after it.  If it was
        dropped as the oldest, every backup left came after it.
        """
        backups = [p for p in log_files(self.path) if p != self.path]
        newer = backups
        for n, name in enumerate(backups):
            with contextlib.suppress(FileNotFoundError):
                if os.path.samestat(os.stat(name), ours):
                    newer = backups[n + 1:]
                    break
        entries: List[dict] = []
        for name in newer:
            with contextlib.suppress(FileNotFoundError), open(name, "rb") as f:
                entries.extend(_entries(f))
        return entries

    def _read_lines(self) -> List[dict]:
        data = self._partial + self._file.read()
        lines = data.split(b"\n")
        self._partial = lines.pop()  # an incomplete last line waits for its end
        return [e for e in map(_parse, lines) if e is not None]

    def _rotated(self) -> bool:
        try:
            return not os.path.samestat(os.fstat(self._file.fileno()), os.stat(self.path))
        except FileNotFoundError:
            return True

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _identity(path: Path) -> Optional[Tuple[int, int]]:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


def follow(path: PathLike, *, poll: float = 0.5, stop: Optional[threading.Event] = None) -> Iterator[dict]:
    """New entries of ``path`` as they are written, until ``stop`` is set (or forever)."""
    follower = ActivityFollower(path)
    stop = stop or threading.Event()
    try:
        while not stop.is_set():
            yield from follower.read_new()
            stop.wait(poll)
    finally:
        follower.close()


# -- for readers: times a person gives, results in words----------------------------------------------------------------------------

def parse_when(text: str, *, now: Optional[datetime] = None, end_of_day: bool = False) -> datetime:
    """A time a person gives: ISO date or date-time (UTC unless it says), or ago: 30s, 15m, 1h, 2d, 1w.

    ``end_of_day``: a bare date means the end of that day (for "until").
    Raises ValueError saying what is accepted.
    """
    now = now or datetime.now(timezone.utc)
    text = text.strip()
    found = re.fullmatch(r"(\d{1,6})\s*([smhdw])", text.lower())
    if found:
        unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}[found.group(2)]
        return now - timedelta(**{unit: int(found.group(1))})
    try:
        stamp = datetime.fromisoformat(text[:-1] + "+00:00" if text[-1:] in "Zz" and text else text)
    except ValueError:
        raise ValueError(f"{text!r} is not a time; give an ISO date or time (2024-05-01, "
                         "2024-05-01T14:30, UTC unless it says) or an age such as 30m, 1h, 2d") from None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=timezone.utc)
    if end_of_day and re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        stamp += timedelta(days=1)
    return stamp


def result_words(entry: dict) -> Tuple[str, ...]:
    """What happened to a message in one word each: signed/unsigned, or its signatures' results."""
    event = entry.get("event")
    if event == "verify":
        return tuple(dict.fromkeys(str(r.get("result")) for r in results_of(entry))) or ("none",)
    return {"sign": ("signed",), "unsigned": ("unsigned",), "skip-verify": ("skipped",)}.get(event, ())
