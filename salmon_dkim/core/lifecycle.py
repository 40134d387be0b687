"""The key lifecycle: a key signs once DNS proves it, and a rotation leaves no gap.

A key is **pending** until its published record matches the private key, then
**active**.  A key is **superseded** when another key of the same domain and
algorithm became active after it did: it is then **retiring** for
``RetireAfterDays`` (its record stays published so mail in flight still
verifies), then **retired** (its record may be removed).  A pending key whose
record has not appeared after ``PendingKeyDays`` is moved to
``KEYSDIR/retired/DOMAIN/`` (never deleted) and is retired too.

The state is derived from what is there: the key files, DNS, and one small
file, ``KEYSDIR/lifecycle.json``, that records per key when it was first seen,
when its record was first seen matching (and the key's algorithm), which key a
``rotate`` made it after, the last definite record check, and when a key was
moved out.  Times only ever move forward (the first "verified" time stays), the
file is rewritten atomically under a lock, so several servers sharing one keys
directory read the same states without a database.  A keys directory without
the file needs no migration: each key is pending until a check finds its record.

Which keys a domain signs with: the selectors its configuration names
(``[Domains] Selectors``, ``[Signing] DefaultSelectors``) and every key a
``rotate`` made after one of them; of those, the active key of each algorithm.

:func:`check_key_record` is the one comparison of a published record with a
private key (``salmon-dkim check-dns``, ``activate``, ``keys`` and the running
server all use it).  :class:`KeyLifecycle` holds the states: ``refresh`` checks
DNS and records what it finds, ``start`` runs it in a background thread,
``signing_keys`` answers the Signer without any I/O.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime
import fcntl
import json
import logging
import math
import os
import re
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

from salmon_dkim.activity import ActivityLog
from salmon_dkim.config import DNSSettings, DomainKeys, Settings, SigningSettings
from salmon_dkim.core.keys import (MIN_RSA_BITS, GeneratedKey, KeyFileError, KeyRecord, KeyRecordError, KeyStore,
                                   PrivateKey, dated_selector, generate_key, key_name, parse_key_record)
from salmon_dkim.dns.resolver import DNSError, NoRecord, TemporaryDNSError, TXTResolver, resolver_from_settings

log = logging.getLogger(__name__)

STATE_FILE = "lifecycle.json"
RETIRED_FOLDER = "retired"
STATES = ("pending", "active", "retiring", "retired")
DAY = 86400
# record words a check gives; "temperror" and "unchecked" say nothing about the record itself
DEFINITE_RECORDS = ("ok", "missing", "multiple", "malformed", "revoked", "type", "weak", "mismatch", "unusable")
_DKIM_RECORD = re.compile(rb"^\s*v\s*=\s*DKIM1\s*(;|$)|(^|;)\s*p\s*=")


class LifecycleError(Exception):
    """A lifecycle request that cannot be done (unknown domain, no key to rotate, unreadable state file)."""


# --- the one comparison of a published record with a private key ------------------------------------

@dataclass(frozen=True)
class RecordCheck:
    """What DNS publishes for a key: ``status`` one word, ``message`` one line saying it and what to do."""

    status: str  # "ok", one of DEFINITE_RECORDS, or "temperror" (could not fetch: says nothing)
    message: str
    warnings: Tuple[str, ...] = ()
    record: Optional[KeyRecord] = dataclasses.field(default=None, compare=False, repr=False)

    @property
    def good(self) -> bool:
        return self.status == "ok"


def _published(resolver: TXTResolver, name: str) -> "bytes | RecordCheck":
    """The one TXT record at name; or why there is none (several count as none, as for verifiers)."""
    try:
        records: List[bytes] = resolver.txt(name)
    except NoRecord:
        return RecordCheck("missing", f"not published: no TXT record at {name}")
    except TemporaryDNSError as exc:
        return RecordCheck("temperror", f"could not fetch: temporary DNS failure looking up {name} ({exc}); "
                                        f"try again later")
    except DNSError as exc:
        return RecordCheck("temperror", f"could not fetch: {exc}")
    if len(records) == 1:
        return records[0]
    keys = sum(1 for r in records if _DKIM_RECORD.search(r))
    if not records or not keys:
        return RecordCheck("missing", f"not published: {len(records)} TXT records at {name}, "
                                      f"none a DKIM key record")
    # the verifier's rule (core/keyfetch.py): one answer to one question
    return RecordCheck("multiple", f"multiple records: {len(records)} TXT records at {name} ({keys} of them DKIM "
                                   f"key records); a key needs exactly one, verifiers refuse it (permerror): "
                                   f"remove the others")


def check_key_record(resolver: TXTResolver, domain: str, selector: str, private: PrivateKey) -> RecordCheck:
    """Whether DNS publishes the public half of ``private`` at SELECTOR._domainkey.DOMAIN, usable for email."""
    name = key_name(selector, domain)
    found = _published(resolver, name)
    if isinstance(found, RecordCheck):
        return found
    warnings = []
    try:
        record = parse_key_record(found)
    except KeyRecordError as exc:
        return RecordCheck("malformed", f"malformed: the record at {name} has a bad {exc.tag or 'tag list'}: {exc}")
    fix = f"publish the record from salmon-dkim dns-record {domain} {selector}"
    bad = None
    if record.revoked:
        bad = "revoked", f"revoked: the record at {name} has an empty p= (key revoked); {fix}"
    elif record.key_type != private.algorithm:
        bad = "type", (f"key type differs: {name} publishes k={record.key_type} but {private.path} is "
                       f"{private.algorithm}; {fix}")
    elif record.key_type == "rsa" and record.bits() < MIN_RSA_BITS:
        bad = "weak", (f"too weak: {name} publishes a {record.bits()}-bit RSA key; verifiers refuse keys under "
                       f"{MIN_RSA_BITS} bits (RFC 8301); {fix}")
    elif not record.matches(private):
        bad = "mismatch", f"mismatch: {name} publishes a different key from the public half of {private.path}; {fix}"
    elif record.hashes is not None and "sha256" not in record.hashes:
        bad = "unusable", (f"unusable: {name} has h={':'.join(record.hashes)}, which refuses sha256 signatures; "
                           f"remove h= or add sha256")
    elif "*" not in record.services and "email" not in record.services:
        bad = "unusable", f"unusable: {name} has s={':'.join(record.services)}, not for email; remove s= or add email"
    if bad:
        return RecordCheck(bad[0], bad[1], tuple(warnings), record)
    if record.testing:
        warnings.append(f"warning: {name} has t=y (testing): verifiers may ignore failures; remove t=y when done")
    return RecordCheck("ok", f"ok: {name} publishes the public key of {private.path} "
                             f"({record.key_type}, {record.bits()} bits)", tuple(warnings), record)


def record_resolver(dns: DNSSettings) -> TXTResolver:
    """A resolver for record checks: what DNS (or the zone file, read now) serves now, never a cached answer."""
    return resolver_from_settings(dataclasses.replace(dns, cache_size=0, cache_file=None))


# --- the state file ----------------------------------------------------------------------------------

def iso(when: Optional[float]) -> Optional[str]:
    """Epoch seconds as ISO 8601 UTC to the second: 2026-03-01T12:00:00Z."""
    if when is None:
        return None
    return datetime.datetime.fromtimestamp(int(when), datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _epoch(text) -> Optional[int]:
    if not isinstance(text, str):
        return None
    try:
        return int(datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ")
                   .replace(tzinfo=datetime.timezone.utc).timestamp())
    except ValueError:
        return None


class StateFileError(LifecycleError):
    """lifecycle.json cannot be read as a state file: it is never overwritten then."""


_process_locks: Dict[Path, threading.Lock] = {}
_process_locks_guard = threading.Lock()


class StateFile:
    """KEYSDIR/lifecycle.json: {"version": 1, "keys": {"DOMAIN/SELECTOR": {field: value}}}.

    Readers need no lock (the file is replaced whole); writers read, change and
    replace it under an exclusive lock on lifecycle.json.lock.
    """

    def __init__(self, keys_dir: Path) -> None:
        self.keys_dir = Path(keys_dir)
        self.path = self.keys_dir / STATE_FILE
        self.lock_path = self.keys_dir / (STATE_FILE + ".lock")

    def stamp(self) -> Optional[tuple]:
        """Changes whenever the file is replaced (to notice another process's write cheaply)."""
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return st.st_ino, st.st_mtime_ns, st.st_size

    def read(self) -> Dict[str, dict]:
        """The keys' entries; {} when there is no file; StateFileError when it is not a state file."""
        try:
            with open(self.path, "rb") as f:
                text = f.read()
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise StateFileError(f"{self.path} cannot be read ({exc.strerror}); check its permissions") from None
        try:
            data = json.loads(text)
            entries = data["keys"]
            if not isinstance(entries, dict) or not all(isinstance(v, dict) for v in entries.values()):
                raise ValueError("keys is not an object of objects")
        except (ValueError, KeyError, TypeError) as exc:
            raise StateFileError(f"{self.path} is not a key lifecycle state file ({exc}); restore it from a "
                                 f"backup or move it away (keys then start pending until DNS is checked)") from None
        return entries

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with _process_locks_guard:
            thread_lock = _process_locks.setdefault(self.lock_path.resolve(), threading.Lock())
        with thread_lock:  # flock may be per process on network file systems: threads take turns too
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)

    def update(self, change: Callable[[Dict[str, dict]], bool]) -> Dict[str, dict]:
        """Under the lock: read, ``change(entries)`` in place (True when it changed something), write; the entries."""
        with self._locked():
            entries = self.read()
            if change(entries):
                self._write(entries)
            return entries

    def _write(self, entries: Dict[str, dict]) -> None:
        text = json.dumps({"version": 1, "keys": entries}, indent=1, sort_keys=True) + "\n"
        fd, tmp = tempfile.mkstemp(dir=self.keys_dir, prefix=".lifecycle.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o644)  # no secrets in it: monitoring may read it
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise


# --- what each key is --------------------------------------------------------------------------------

@dataclass(frozen=True)
class KeyStatus:
    """One key's state and what to do about it, as ``salmon-dkim keys`` shows it."""

    domain: str
    selector: str
    path: Path
    state: str  # pending, active, retiring, retired, or "unused" (a key file no configuration names)
    since: Optional[int]  # epoch seconds the state began (None: unknown)
    record: str  # "ok", one of DEFINITE_RECORDS, "temperror" or "unchecked"
    detail: str  # the last check's line, or why the key cannot be used
    next_step: str
    algorithm: Optional[str] = None
    bits: Optional[int] = None
    signing: bool = False  # signs mail now (active and named by a configured domain that is enabled)
    superseded_by: Optional[str] = None
    after: Optional[str] = None  # the key salmon-dkim rotate made it after
    sender: bool = False  # a [SenderSelectors] key: never superseded
    moved: bool = False  # in KEYSDIR/retired/ (never published in time)
    unusable: bool = False  # the key file cannot be used (mode, corrupt, ...): ``detail`` says why

    @property
    def id(self) -> str:
        return f"{self.domain}/{self.selector}"

    @property
    def record_trouble(self) -> bool:
        """An active key whose record is gone or wrong: it keeps signing, but receivers cannot verify."""
        return self.state == "active" and self.record in DEFINITE_RECORDS and self.record != "ok"

    @property
    def label(self) -> str:
        """The state, loud when an active key's record is missing: "active, RECORD MISSING"."""
        return f"active, RECORD {self.record.upper()}" if self.record_trouble else self.state

    def as_dict(self) -> dict:
        return {"domain": self.domain, "selector": self.selector, "algorithm": self.algorithm, "bits": self.bits,
                "state": self.state, "signing": self.signing, "since": iso(self.since), "record": self.record,
                "published": self.record == "ok" if self.record in DEFINITE_RECORDS else None,
                "record_detail": self.detail, "record_trouble": self.record_trouble,
                "superseded_by": self.superseded_by, "after": self.after, "next": self.next_step,
                "path": str(self.path), "moved": self.moved}


@dataclass(frozen=True)
class _Key:
    """A key the lifecycle looks after: where it is and why it is known."""

    domain: str
    selector: str
    path: Path
    named: bool  # named by the configuration (or made by rotate after a named key)
    sender: bool = False
    moved: bool = False  # in KEYSDIR/retired/

    @property
    def id(self) -> str:
        return f"{self.domain}/{self.selector}"


@dataclass(frozen=True)
class Rotation:
    """What ``rotate`` did for one algorithm: a new pending key, or the pending key already waiting."""

    algorithm: str
    key: Optional[GeneratedKey]
    waiting: Optional[KeyStatus]
    replaces: Optional[KeyStatus]


def _fmt(when: Optional[int]) -> str:
    return datetime.datetime.fromtimestamp(when, datetime.timezone.utc).strftime("%Y-%m-%d %H:%MZ") \
        if when is not None else "?"


class _View:
    """The states at one moment, and the answers the Signer asks for (memoised: no I/O)."""

    def __init__(self, statuses: Dict[str, KeyStatus], members: Dict[Tuple[str, Tuple[str, ...]], List[str]]):
        self.statuses = statuses
        self.members = members  # (domain, named selectors) -> selectors in the group, named first
        self._answers: Dict[tuple, Tuple[Tuple[Tuple[str, Path], ...], str]] = {}

    def signing(self, entry: DomainKeys) -> Tuple[Tuple[Tuple[str, Path], ...], str]:
        key = (entry.domain, entry.selectors, entry.key_files)
        answer = self._answers.get(key)
        if answer is None:
            answer = self._answers[key] = self._signing(entry)
        return answer

    def _signing(self, entry: DomainKeys) -> Tuple[Tuple[Tuple[str, Path], ...], str]:
        selectors = self.members.get((entry.domain, entry.selectors), list(entry.selectors))
        found = [self.statuses.get(f"{entry.domain}/{s}") for s in selectors]
        active = [st for st in found if st is not None and st.state == "active"]
        # A broken key that may be meant to sign fails closed (451 from the Signer), never "just pending".
        algorithms = {st.algorithm for st in active}
        active += [st for st in found if st is not None and st.state == "pending" and st.unusable
                   and (st.algorithm is None or st.algorithm not in algorithms)]
        order = {alg: i for i, alg in enumerate(dict.fromkeys(st.algorithm for st in found if st and st.algorithm))}
        active.sort(key=lambda st: order.get(st.algorithm, len(order)))
        if active:
            return tuple((st.selector, st.path) for st in active), ""
        waiting = [f"{st.selector} {st.state} ({st.detail})" if st.state == "pending" and st.detail
                   else f"{st.selector} {st.state}" for st in found if st is not None]
        return (), f"{entry.domain} has no active key: " + ("; ".join(waiting) or "no key file")


class KeyLifecycle:
    """The lifecycle of every signing key one configuration names; see the module docstring."""

    def __init__(self, signing: SigningSettings, resolver: Callable[[], TXTResolver], *,
                 keys: Optional[KeyStore] = None, activity: Optional[ActivityLog] = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.signing = signing
        self.new_resolver = resolver  # called once per pass: a zone file is read again each time
        self.keys = keys if keys is not None else KeyStore()
        self.activity = activity if activity is not None else ActivityLog(None)
        self.clock = clock
        self.state = StateFile(signing.keys_dir)
        self._entries: Dict[str, dict] = {}  # the state file as last read
        self._unwritten: Dict[str, dict] = {}  # what could not be written (read-only keys folder), kept in memory
        self._stamp: Optional[tuple] = None
        self._checks: Dict[str, RecordCheck] = {}  # this process's last check of each key
        self._checked_at: Dict[str, float] = {}
        self._recorded: Dict[str, str] = {}  # record_since this process wrote, to know its own entries again
        self._view = _View({}, {})
        self._built = False
        self._pass_lock = threading.RLock()  # one pass or reload at a time; a pass reloads first
        self._stop = threading.Event()
        self._first_pass = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._state_error: Optional[str] = None

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs) -> "KeyLifecycle":
        """The lifecycle of ``settings``' keys, checking records with [DNS] (uncached; ZoneFile read each pass)."""
        return cls(settings.signing, lambda: record_resolver(settings.dns), **kwargs)

    # -- the keys --------------------------------------------------------------------------------

    def _groups(self) -> List[DomainKeys]:
        s = self.signing
        return list(s.domains.values()) + ([s.default] if s.default is not None else [])

    def domains(self) -> List[str]:
        return list(dict.fromkeys(entry.domain for entry in self._groups()))

    def _sender_keys(self) -> List[Tuple[str, str]]:
        """(domain, selector) of each [SenderSelectors] key; an account without a domain, in every domain."""
        found = []
        for who, selector in self.signing.sender_selectors.items():
            domain = who.rpartition("@")[2] if "@" in who else (who if "." in who else "")
            for d in [domain] if domain else self.domains():
                if domain or (self.signing.keys_dir / d / f"{selector}.key").is_file():
                    found.append((d.lower().rstrip("."), selector))
        return found

    def _tracked(self, entries: Mapping[str, dict]) -> Tuple[List[_Key], Dict[Tuple[str, Tuple[str, ...]], List[str]]]:
        """Every key the configuration names, with those rotate made after them; and each group's members."""
        keys_dir = self.signing.keys_dir
        after: Dict[Tuple[str, str], List[str]] = {}
        for key_id, entry in entries.items():
            domain, _, selector = key_id.partition("/")
            if isinstance(entry.get("after"), str):
                after.setdefault((domain, entry["after"]), []).append(selector)
        keys: Dict[str, _Key] = {}
        members: Dict[Tuple[str, Tuple[str, ...]], List[str]] = {}
        for group in self._groups():
            paths = dict(zip(group.selectors, group.key_files))
            chosen = list(group.selectors)
            for selector in chosen:  # grows as rotated keys join: every key made after a member
                for joined in sorted(after.get((group.domain, selector), ())):
                    if joined not in chosen:
                        chosen.append(joined)
            members[(group.domain, group.selectors)] = chosen
            for selector in chosen:
                path = paths.get(selector) or keys_dir / group.domain / f"{selector}.key"
                keys.setdefault(f"{group.domain}/{selector}", self._placed(group.domain, selector, path, named=True))
        for domain, selector in self._sender_keys():
            path = keys_dir / domain / f"{selector}.key"
            keys.setdefault(f"{domain}/{selector}", self._placed(domain, selector, path, named=True, sender=True))
        return list(keys.values()), members

    def _placed(self, domain: str, selector: str, path: Path, **kinds) -> _Key:
        """The key where it is: its own place, else KEYSDIR/retired/ once moved there."""
        moved = self.retired_folder(domain) / f"{selector}.key"
        if not path.exists() and moved.exists():
            return _Key(domain, selector, moved, moved=True, **kinds)
        return _Key(domain, selector, path, **kinds)

    def retired_folder(self, domain: str) -> Path:
        return self.signing.keys_dir / RETIRED_FOLDER / domain

    def _others(self, known: Sequence[_Key]) -> List[_Key]:
        """Key files in the domains' folders (and retired/) that no configuration names: listed, never used."""
        ids = {k.id for k in known}
        found = []
        for domain in self.domains():
            for folder, moved in ((self.signing.keys_dir / domain, False), (self.retired_folder(domain), True)):
                try:
                    names = sorted(p for p in folder.iterdir() if p.suffix == ".key")
                except OSError:
                    continue
                for path in names:
                    if f"{domain}/{path.stem}" not in ids:
                        ids.add(f"{domain}/{path.stem}")
                        found.append(_Key(domain, path.stem, path, named=False, moved=moved))
        return found

    # -- reading the state -----------------------------------------------------------------------

    def _merged(self) -> Dict[str, dict]:
        entries = {k: dict(v) for k, v in self._entries.items()}
        _merge(entries, self._unwritten)
        return entries

    def reload(self) -> bool:
        """Read the state file again if another process (or ``activate``) changed it; True when it did."""
        with self._pass_lock:
            return self._reload()

    def _reload(self) -> bool:
        stamp = self.state.stamp()
        if self._built and stamp == self._stamp:
            return False
        try:
            self._entries = self.state.read()
            self._state_error = None
        except StateFileError as exc:
            if str(exc) != self._state_error:
                log.error("key lifecycle: %s", exc)
            self._state_error = str(exc)
        self._stamp = stamp
        self._rebuild(int(self.clock()))
        return True

    def statuses(self, *, include_unused: bool = False, describe: bool = False) -> List[KeyStatus]:
        """Every key's status as last known (no DNS); ``describe`` reads key files for algorithm and size."""
        with self._pass_lock:
            self._reload()
            if not describe and not include_unused:
                return list(self._view.statuses.values())
            return list(self._build(self._merged(), int(self.clock()), include_unused, describe)[0].values())

    def key_states(self) -> List[Tuple[str, str, str]]:
        """(domain, selector, state) of each key, "active, RECORD MISSING" when so: for metrics and the monitor."""
        return [(st.domain, st.selector, st.label) for st in self._view.statuses.values()]

    def signing_keys(self, entry: DomainKeys) -> Tuple[Tuple[Tuple[str, Path], ...], str]:
        """The (selector, key file) of each active key of ``entry``'s group, or () and why there is none."""
        return self._view.signing(entry)

    def unusable(self) -> List[str]:
        """One line per active or pending key whose file cannot be used now (start-up refuses them)."""
        problems = []
        for st in self._view.statuses.values():
            if st.state in ("active", "pending") and not st.moved:
                try:
                    self.keys.get(st.path)
                except KeyFileError as exc:
                    problems.append(f"{st.domain}: {exc}")
        return problems

    # -- deriving states -------------------------------------------------------------------------

    def _rebuild(self, now: int) -> None:
        before = self._view.statuses if self._built else None
        statuses, members = self._build(self._merged(), now)
        self._view = _View(statuses, members)
        self._built = True
        if before is not None:
            self._report_changes(before, statuses)

    def _build(self, entries: Mapping[str, dict], now: int, include_unused: bool = False,
               describe: bool = False) -> Tuple[Dict[str, KeyStatus], Dict]:
        tracked, members = self._tracked(entries)
        signing_ids = {f"{g.domain}/{s}" for g in self._groups() if g.enabled
                       for s in members[(g.domain, g.selectors)]}
        signing_ids |= {f"{d}/{s}" for d, s in self._sender_keys()}
        statuses: Dict[str, KeyStatus] = {}
        by_algorithm: Dict[Tuple[str, str], List[Tuple[int, int, str]]] = {}
        for key in tracked:
            entry = entries.get(key.id, {})
            verified = _epoch(entry.get("verified"))
            algorithm = entry.get("algorithm") if entry.get("algorithm") in ("rsa", "ed25519") else None
            if verified is not None and not key.moved and key.path.exists() and not key.sender:
                if algorithm is None:
                    algorithm = self._algorithm(key.path)
                made = _mtime(key.path)
                by_algorithm.setdefault((key.domain, algorithm or "?"), []).append((verified, made, key.selector))
        superseded: Dict[str, Tuple[str, int]] = {}
        for (domain, _), order in by_algorithm.items():
            order.sort()
            for (_, _, old), (newer_verified, _, newer) in zip(order, order[1:]):
                superseded[f"{domain}/{old}"] = (newer, newer_verified)
        keys = tracked + (self._others(tracked) if include_unused else [])
        for key in keys:
            statuses[key.id] = self._status(key, entries.get(key.id, {}), now, superseded.get(key.id),
                                            key.id in signing_ids, describe)
        return statuses, members

    def _algorithm(self, path: Path) -> Optional[str]:
        try:
            return self.keys.get(path).algorithm
        except KeyFileError:
            return None

    def _status(self, key: _Key, entry: Mapping, now: int, superseded: Optional[Tuple[str, int]],
                named_signing: bool, describe: bool) -> KeyStatus:
        s = self.signing
        seen, verified, moved_at = (_epoch(entry.get(f)) for f in ("seen", "verified", "retired"))
        seen = seen if seen is not None else now
        algorithm = entry.get("algorithm") if entry.get("algorithm") in ("rsa", "ed25519") else None
        bits, problem = None, ""
        if describe or algorithm is None:
            try:
                private = self.keys.get(key.path)
                algorithm, bits = private.algorithm, private.bits
            except KeyFileError as exc:
                problem = str(exc)
        check, file_since = self._checks.get(key.id), _epoch(entry.get("record_since"))
        if check is not None and (file_since is None or entry.get("record") not in DEFINITE_RECORDS
                                  or self._recorded.get(key.id) == entry.get("record_since")
                                  or self._checked_at[key.id] >= file_since):
            record, detail = check.status, check.message  # this process's look is the latest (a DNS failure too)
        elif entry.get("record") in DEFINITE_RECORDS:  # another process's check
            record, detail = entry["record"], f"record {entry['record']} at the last check ({entry.get('record_since')})"
        else:
            record, detail = "unchecked", ""
        detail = problem or detail
        name = key_name(key.selector, key.domain)
        dns_record = f"salmon-dkim dns-record {key.domain} {key.selector}"
        by, since, signing = None, seen, False
        if key.moved or moved_at is not None and not key.path.exists():
            state, since = "retired", moved_at or _mtime_s(key.path)
            why = str(entry.get("reason") or "moved to retired/")
            detail = detail if record == "ok" else why
            step = f"remove the TXT record at {name}" if record == "ok" else f"none ({why})"
        elif not key.named:
            state, since = "unused", None
            step = f"none: no [Domains] Selectors names {key.selector}"
        elif not key.path.exists():
            state, since = "retired", None
            detail, step = f"the key file {key.path} is gone", "none"
        elif verified is None:
            state = "pending"
            if problem:
                step = f"fix the key file ({problem})"
            elif record == "ok":
                step = (f"activate it: salmon-dkim activate {key.domain} {key.selector} (a running server "
                        f"does within {s.pending_check_seconds:g} s)")
            else:
                until = seen + int(s.pending_key_days * DAY)
                step = f"publish this record: TXT at {name} ({dns_record}); moved to retired/ on {_fmt(until)}"
        elif superseded is not None:
            by, since = superseded
            end = since + int(s.retire_after_days * DAY)
            if now < end:
                state = "retiring"
                step = f"keep the record published; remove this record after {_fmt(end)}" if record != "missing" \
                    else f"publish the record again until {_fmt(end)}: mail signed with it may still be in flight"
            else:
                state, since = "retired", end
                step = f"remove this record (TXT at {name})" if record != "missing" else \
                    "none: the record is gone; the key files may be deleted"
        else:
            state, since, signing = "active", verified, named_signing
            if record in DEFINITE_RECORDS and record != "ok":
                step = f"RECORD {record.upper()}: publish the record again ({dns_record}); the key still signs"
            else:
                step = "none" + (" (signing)" if signing else " (its domain is disabled)")
        return KeyStatus(key.domain, key.selector, key.path, state, since, record, detail, step, algorithm, bits,
                         signing, by, entry.get("after") if isinstance(entry.get("after"), str) else None,
                         key.sender, key.moved, bool(problem))

    def _report_changes(self, before: Mapping[str, KeyStatus], after: Mapping[str, KeyStatus]) -> None:
        for key_id, st in after.items():
            old = before.get(key_id)
            if old is not None and old.label == st.label:
                continue
            if old is None and st.state != "pending":
                continue  # keys the configuration named from the start are summed up at start
            reason = {"pending": f"new key: {st.next_step}",
                      "active": "record published and matches; signs now" if not st.record_trouble
                      else f"{st.detail}; the key still signs",
                      "retiring": f"superseded by {st.superseded_by}; {st.next_step}",
                      "retired": f"moved to {st.path.parent}: {st.detail}" if st.moved
                      else st.next_step}.get(st.state, st.next_step)
            self._key_event(st, reason, logging.WARNING if st.record_trouble else logging.INFO)

    def _key_event(self, st: KeyStatus, reason: str, level: int) -> None:
        log.log(level, "DKIM key %s of %s is %s: %s", st.selector, st.domain, st.label, reason)
        self.activity.record("key", d=st.domain, s=st.selector, state=st.label, reason=reason)

    # -- checking DNS ----------------------------------------------------------------------------

    def refresh(self, *, domain: Optional[str] = None, selector: Optional[str] = None, everything: bool = False,
                pending: bool = True, active: bool = True, write: bool = True,
                strict: bool = False) -> List[KeyStatus]:
        """Check records and record what was found; the statuses of the keys looked at.

        Pending keys are checked (with ``pending``), active and retiring ones
        (with ``active``) once ActiveKeyCheckSeconds have passed since their last
        check; ``everything``: every key, now, the unused ones too.
        A pending key whose record matches becomes active; one pending past
        PendingKeyDays is moved to KEYSDIR/retired/.  ``write`` False only looks;
        ``strict``: a state that cannot be recorded is a LifecycleError (else it holds in memory).
        """
        with self._pass_lock:
            self.reload()
            now = int(self.clock())
            entries = self._merged()
            tracked, _ = self._tracked(entries)
            keys = tracked + (self._others(tracked) if everything else [])
            wanted = [k for k in keys if (domain is None or k.domain == domain)
                      and (selector is None or k.selector == selector)]
            resolver, checked = None, []
            for key in wanted:
                waiting = entries.get(key.id, {}).get("verified") is None and not key.moved
                due = everything or (pending if waiting else active and self.clock() - self._checked_at.get(
                    key.id, -math.inf) >= self.signing.active_check_seconds)
                if not due or not key.path.exists() or (key.moved and not everything):
                    continue
                if resolver is None:
                    resolver = self.new_resolver()
                self._checks[key.id] = self._check(resolver, key)
                self._checked_at[key.id] = self.clock()
                checked.append(key.id)
            changes = self._changes(tracked, entries, now) if write else {}
            if write:
                self._store(changes, now, strict)
            self._rebuild(now)
            self._warn_record_trouble(checked)
            statuses = self._build(self._merged(), now, everything, describe=everything)[0] \
                if everything else self._view.statuses
            return [statuses[k.id] for k in wanted if k.id in statuses]

    def _check(self, resolver: TXTResolver, key: _Key) -> RecordCheck:
        try:
            private = self.keys.get(key.path)
        except KeyFileError as exc:
            return RecordCheck("temperror", f"not checked: {exc}")
        try:
            return check_key_record(resolver, key.domain, key.selector, private)
        except Exception as exc:  # noqa: BLE001 (a resolver bug must not stop the other keys' checks)
            log.exception("key lifecycle: checking %s failed", key.id)
            return RecordCheck("temperror", f"could not fetch: {type(exc).__name__}: {exc}")

    def _changes(self, tracked: Sequence[_Key], entries: Mapping[str, dict], now: int) -> Dict[str, dict]:
        """What this pass learnt, as entries to merge: first sightings, first matches, record words."""
        changes: Dict[str, dict] = {}
        for key in tracked:
            if key.moved or not key.path.exists():
                continue
            entry = entries.get(key.id, {})
            change = {}
            if entry.get("seen") is None:
                change["seen"] = iso(now)
            check = self._checks.get(key.id)
            if check is not None and check.status in DEFINITE_RECORDS:
                if entry.get("record") != check.status:
                    change.update(record=check.status, record_since=iso(now))
                if check.good and entry.get("verified") is None:
                    change.update(verified=iso(now), algorithm=check.record.key_type)
            if change:
                changes[key.id] = change
        return changes

    def _store(self, changes: Dict[str, dict], now: int, strict: bool = False) -> None:
        expired: List[str] = []
        tracked_now = {k.id: k for k in self._tracked(self._merged())[0]}

        def change(current: Dict[str, dict]) -> bool:
            changed = _merge(current, changes)
            for key_id, key in tracked_now.items():
                entry = current.get(key_id, {})
                seen = _epoch(entry.get("seen"))
                if (entry.get("verified") is None and seen is not None and not key.moved and key.path.exists()
                        and now >= seen + self.signing.pending_key_days * DAY):
                    try:
                        self._move_out(key)
                    except OSError as exc:
                        log.error("key lifecycle: cannot move %s to %s (%s); it stays pending", key.path,
                                  self.retired_folder(key.domain), exc)
                        continue
                    entry.update(retired=iso(now), reason=f"never published in {self.signing.pending_key_days:g} "
                                                          f"days (pending since {iso(seen)})")
                    current[key_id] = entry
                    expired.append(key_id)
                    changed = True
            return changed

        try:
            if not self.signing.keys_dir.is_dir():
                raise FileNotFoundError(f"no keys folder {self.signing.keys_dir}")
            self._entries = self.state.update(change)
            self._stamp = self.state.stamp()
            self._unwritten.clear()
            self._recorded.update({k: c["record_since"] for k, c in changes.items() if "record_since" in c})
        except (OSError, StateFileError) as exc:
            if strict and changes:
                raise LifecycleError(f"cannot record key states in {self.state.path} ({exc})") from None
            # the states hold in this process; another server (or a writable folder) records them
            if changes:
                log.error("key lifecycle: cannot record key states in %s (%s); they hold in this process only",
                          self.state.path, exc)
                _merge(self._unwritten, changes)
        for key_id in expired:
            log.warning("DKIM key %s was pending for %g days and its record never matched: moved to %s",
                        key_id, self.signing.pending_key_days, self.retired_folder(key_id.partition("/")[0]))

    def _move_out(self, key: _Key) -> None:
        """KEYSDIR/retired/DOMAIN/SELECTOR.key and .dns (under the state lock: one server moves it)."""
        folder = self.retired_folder(key.domain)
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        for source in (key.path, key.path.with_suffix(".dns")):
            if not source.exists():
                continue
            target = folder / source.name
            if target.exists():  # an older key of that name was moved out before: keep both
                target = folder / f"{source.stem}.{int(self.clock())}{source.suffix}"
            shutil.move(str(source), str(target))

    def _warn_record_trouble(self, checked: Sequence[str]) -> None:
        """Every check that finds an active key's record missing says so, loudly (once per check)."""
        for key_id in checked:
            st = self._view.statuses.get(key_id)
            if st is not None and st.record_trouble:
                log.warning("DKIM key %s of %s is active but its record is %s: %s; it keeps signing, "
                            "receivers cannot verify it", st.selector, st.domain, st.record, st.detail)

    # -- rotation --------------------------------------------------------------------------------

    def rotate(self, domain: str, *, algorithm: Optional[str] = None, bits: Optional[int] = None,
               selector: Optional[str] = None) -> List[Rotation]:
        """The next key of ``domain`` for each algorithm it signs with (or ``algorithm``), made pending.

        An algorithm that already has a pending key gets no second one: its
        Rotation names the key waiting for its record.  Raises LifecycleError.
        """
        groups = [g for g in self._groups() if g.domain == domain]
        if not groups:
            raise LifecycleError(f"{domain} is not in [Domains] and is not the DefaultDomain; add it first")
        statuses = {st.selector: st for st in self.statuses(describe=True) if st.domain == domain and not st.sender}
        current = [st for st in statuses.values() if st.state in ("active", "pending") and st.algorithm]
        algorithms = [algorithm] if algorithm else list(dict.fromkeys(
            st.algorithm for st in sorted(current, key=lambda st: st.state != "active")))
        if not algorithms:
            raise LifecycleError(f"{domain} has no key to rotate from (none active or pending); make one with "
                                 f"salmon-dkim keygen and name it in [Domains] Selectors")
        if selector and len(algorithms) > 1:
            raise LifecycleError(f"{domain} signs with {' and '.join(algorithms)}: one --selector cannot name "
                                 f"both new keys; give --algorithm too, or no --selector")
        anchor = groups[0].selectors[0]
        done = []
        for alg in algorithms:
            waiting = next((st for st in statuses.values() if st.state == "pending" and st.algorithm == alg), None)
            replaces = next((st for st in statuses.values() if st.state == "active" and st.algorithm == alg), None)
            if waiting is not None:
                done.append(Rotation(alg, None, waiting, replaces))
                continue
            size = bits if alg == "rsa" and bits else (replaces.bits if replaces and alg == "rsa" else None)
            folders = [self.signing.keys_dir / domain, self.retired_folder(domain)]
            name = selector or dated_selector(folders, "ed" if alg == "ed25519" else "s",
                                              datetime.datetime.fromtimestamp(self.clock(), datetime.timezone.utc))
            made = generate_key(self.signing.keys_dir, domain, name, algorithm=alg, bits=size)
            now = int(self.clock())
            link = {"seen": iso(now), "after": replaces.selector if replaces else anchor}
            try:
                self._entries = self.state.update(lambda current: _merge(current, {f"{domain}/{name}": link}))
            except (OSError, StateFileError) as exc:
                raise LifecycleError(f"made {made.key_path}, but cannot record it in {self.state.path} ({exc}); "
                                     f"until it is recorded no server will use it: fix that, then rotate again "
                                     f"or name {name} in Selectors") from None
            done.append(Rotation(alg, made, None, replaces))
        self._rebuild(int(self.clock()))
        return done

    # -- the background thread -------------------------------------------------------------------

    def start(self, wait: float = 10.0) -> "KeyLifecycle":
        """Check pending keys now (up to ``wait`` seconds, the rest in the background), then keep checking."""
        self.reload()
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="salmon-dkim key lifecycle", daemon=True)
            self._thread.start()
        if not self._first_pass.wait(wait):
            log.warning("key lifecycle: the first DNS check of pending keys takes longer than %g s; "
                        "it goes on in the background", wait)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """End the background thread (it finishes the check it is in)."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _run(self) -> None:
        s, first = self.signing, True
        # pending keys at once; active ones (their records known from the state file) after a while
        next_pending, next_active = 0.0, time.monotonic() + s.active_check_seconds
        while not self._stop.is_set():
            now = time.monotonic()
            pending, active = now >= next_pending, now >= next_active
            try:
                if pending or active:
                    self.refresh(pending=pending, active=active)
                    if first:
                        self._summarise()
                else:
                    self.reload()  # another server, or salmon-dkim activate, may have recorded a change
            except Exception:  # noqa: BLE001 (the thread must outlive a bad pass)
                log.exception("key lifecycle: a check of the keys failed; trying again later")
            finally:
                if pending:
                    next_pending = time.monotonic() + s.pending_check_seconds
                if active:
                    next_active = time.monotonic() + s.active_check_seconds
                if first:
                    first = False
                    self._first_pass.set()
            self._stop.wait(1.0)

    def _summarise(self) -> None:
        counts: Dict[str, int] = {}
        for st in self._view.statuses.values():
            counts[st.label] = counts.get(st.label, 0) + 1
            if st.record_trouble:
                log.warning("DKIM key %s of %s is active but its record is %s: %s", st.selector, st.domain,
                            st.record, st.detail)
            elif st.state == "pending":
                log.info("DKIM key %s of %s is pending: %s", st.selector, st.domain, st.next_step)
        if counts:
            log.info("DKIM keys: %s", ", ".join(f"{n} {label}" for label, n in sorted(counts.items())))


def _merge(into: Dict[str, dict], changes: Mapping[str, Mapping]) -> bool:
    """Add ``changes`` to the entries: first times are kept (seen, verified), the rest replaced; True if changed."""
    changed = False
    for key_id, change in changes.items():
        entry = into.setdefault(key_id, {})
        for name, value in change.items():
            if name in ("seen", "verified", "algorithm") and entry.get(name) is not None:
                continue  # another server saw it first: its time stands
            if entry.get(name) != value:
                entry[name] = value
                changed = True
    return changed


def _mtime(path: Path) -> int:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return 0


def _mtime_s(path: Path) -> Optional[int]:
    try:
        return int(os.stat(path).st_mtime)
    except OSError:
        return None
