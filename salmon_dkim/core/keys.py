"""DKIM keys: private keys read from files (checked before use), made, and key records from DNS.

``generate_key`` makes a key pair as ``salmon-dkim keygen`` and ``rotate`` do.
``load_private_key`` refuses a key file a careless deployment would leak or
a verifier would refuse (group/world-readable, encrypted, unreadable, of the
wrong type, too short); ``KeyStore`` reads each file once.  ``parse_key_record``
reads the TXT record published at ``SELECTOR._domainkey.DOMAIN`` (RFC 6376
section 3.6.1, RFC 8463 for Ed25519).  Key material never appears in a
message or a repr.
"""
from __future__ import annotations

import base64
import binascii
import datetime
import os
import time
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Optional, Sequence, Tuple, Union

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from salmon_dkim.core.tags import compact, parse_tags

MIN_RSA_BITS = 1024  # RFC 8301: verifiers refuse shorter RSA keys
RSA_SIZES = (1024, 2048, 3072, 4096)
DEFAULT_RSA_BITS = 2048
PublicKey = Union[rsa.RSAPublicKey, ed25519.Ed25519PublicKey]
KEYGEN_HINT = "generate a new one with salmon-dkim keygen"


class KeyFileError(Exception):
    """A private key file that cannot be used; the message names the file, the rule and the fix."""


@dataclass(frozen=True)
class PrivateKey:
    """A private key loaded from ``path``, ready to sign with."""

    algorithm: str  # "rsa" | "ed25519"
    key: object = field(compare=False, repr=False)
    bits: int
    path: Path

    def public_bytes(self) -> bytes:
        """The public key as DKIM publishes it: RSA SubjectPublicKeyInfo DER, Ed25519 raw 32 bytes."""
        public = self.key.public_key()
        if self.algorithm == "ed25519":
            return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)

    def public_b64(self) -> str:
        """The p= value of this key's DNS record."""
        return base64.b64encode(self.public_bytes()).decode("ascii")

    def dns_txt(self, testing: bool = False) -> str:
        """The TXT record to publish for this key: "v=DKIM1; k=rsa; p=..."."""
        flags = "t=y; " if testing else ""
        return f"v=DKIM1; k={self.algorithm}; {flags}p={self.public_b64()}"

    def __repr__(self) -> str:
        return f"PrivateKey(algorithm={self.algorithm!r}, bits={self.bits}, path={str(self.path)!r})"


def _check_mode(path: Path, mode: int) -> None:
    if mode & 0o077:
        how = "readable" if mode & 0o044 else "accessible"
        raise KeyFileError(f"{path} is {how} by group or others (mode {stat.S_IMODE(mode):04o}); "
                           f"run chmod 600 on it")


def _key_folders(path: Path) -> Tuple[Path, ...]:
    """The folder a key lies in and the one above it: DOMAIN and KeysDir as keygen lays them out
    (for a symlinked key, those of its target too)."""
    folders = []
    for where in (Path(os.path.abspath(path)), Path(path).resolve()):
        folders += [f for f in (where.parent, where.parent.parent) if f not in folders]
    return tuple(folders)


def _check_owner(path: Path, st: os.stat_result, what: str) -> None:
    if st.st_uid not in (0, os.geteuid()):
        raise KeyFileError(f"{path} belongs to uid {st.st_uid}, not to this user (uid {os.geteuid()}) or root, "
                           f"so its owner can replace {what}; run chown {os.geteuid()} {path}")


def _check_folder(folder: Path, st: os.stat_result) -> None:
    """As OpenDKIM: whoever can write a keys folder can swap the key in it, so only we or root may.

    A sticky folder (/tmp) is the exception: others can add names there, not replace ours.
    """
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o022 and not mode & stat.S_ISVTX:
        raise KeyFileError(f"{folder} is writable by group or others (mode {mode:04o}), so the key in it can be "
                           f"replaced; run chmod go-w {folder}")
    _check_owner(folder, st, "the key in it")


def _unenterable(path: Path) -> Optional[Path]:
    """The first folder on the way to path that this user cannot enter (search permission), or None."""
    for folder in reversed(Path(os.path.abspath(path)).parents):
        if not os.access(folder, os.X_OK):
            return folder
    return None


def _parse_key_file(path: Path, data: bytes) -> object:
    try:
        if b"-----BEGIN" in data:
            return serialization.load_pem_private_key(data, password=None)
        return serialization.load_der_private_key(data, password=None)
    except TypeError:  # cryptography's way of saying "encrypted, and no password given"
        raise KeyFileError(f"{path} is an encrypted private key; DKIM keys are read without a passphrase: "
                           f"decrypt it (openssl pkey -in FILE -out NEW) or {KEYGEN_HINT}") from None
    except UnsupportedAlgorithm:
        raise KeyFileError(f"{path} holds a key of an unsupported type; DKIM keys are RSA or Ed25519: "
                           f"{KEYGEN_HINT}") from None
    except ValueError:
        if b"ENCRYPTED" in data:
            raise KeyFileError(f"{path} is an encrypted private key in a form that cannot be read; "
                               f"{KEYGEN_HINT}") from None
        raise KeyFileError(f"{path} is not a readable private key (corrupt, truncated or not PEM); "
                           f"restore it from a backup or {KEYGEN_HINT}") from None


def load_private_key(path: "str | os.PathLike", *, min_bits: int = MIN_RSA_BITS) -> PrivateKey:
    """The key in a PEM (PKCS#8 or PKCS#1) file, after checking it is private, usable and long enough.

    The file, its folder and the one above (DOMAIN and KeysDir) must belong to this user or root,
    and the folders must not be writable by group or others; a folder this user cannot enter is named.
    """
    path = Path(path)
    try:
        for folder in _key_folders(path):
            _check_folder(folder, os.stat(folder))
        st = os.stat(path)
        _check_mode(path, st.st_mode)
        _check_owner(path, st, "it")
        data = path.read_bytes()
    except KeyFileError:
        raise
    except OSError as exc:
        closed = _unenterable(path) if isinstance(exc, PermissionError) else None
        if closed is not None:
            raise KeyFileError(f"{closed} cannot be entered by this user (uid {os.geteuid()}), so {path} cannot "
                               f"be read; give it access, e.g. chown {os.geteuid()} {closed}") from None
        raise KeyFileError(f"{path} cannot be read ({exc.strerror}); check KeysDir/KeyFiles "
                           f"or {KEYGEN_HINT}") from None
    key = _parse_key_file(path, data)
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return PrivateKey("ed25519", key, 256, path)
    if not isinstance(key, rsa.RSAPrivateKey):
        kind = type(key).__name__.replace("PrivateKey", "").lstrip("_") or "unknown"
        raise KeyFileError(f"{path} holds a key of type {kind}; DKIM keys are RSA or Ed25519: {KEYGEN_HINT}")
    if key.key_size < min_bits:
        raise KeyFileError(f"{path} holds a {key.key_size}-bit RSA key, under the {min_bits}-bit minimum "
                           f"(RFC 8301); {KEYGEN_HINT} (2048 bits)")
    return PrivateKey("rsa", key, key.key_size, path)


class KeyStore:
    """Private keys by file, each read once; a file replaced on disk is read again.

    ``recheck_seconds``: how long a key is served without looking at its file again
    (resolving and stat-ing it costs about 50 us, a twentieth of an RSA signature);
    0 looks every time.
    """

    def __init__(self, *, min_bits: int = MIN_RSA_BITS, recheck_seconds: float = 0.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.min_bits = min_bits
        self.recheck_seconds = recheck_seconds
        self.clock = clock
        self._keys: Dict[Path, Tuple[tuple, PrivateKey]] = {}
        self._checked: Dict[object, Tuple[float, PrivateKey]] = {}

    def get(self, path: "str | os.PathLike") -> PrivateKey:
        now = self.clock()
        checked = self._checked.get(path)
        if checked is not None and now - checked[0] < self.recheck_seconds:
            return checked[1]
        key = self._current(path)
        self._checked[path] = (now, key)
        return key

    def _current(self, path: "str | os.PathLike") -> PrivateKey:
        resolved = Path(path).resolve()
        try:
            st = os.stat(resolved)
            folders = [os.stat(folder) for folder in _key_folders(Path(path))]
        except OSError:
            return load_private_key(path, min_bits=self.min_bits)  # raises KeyFileError naming the file
        # A rotated, rewritten or chmod-ed file, or a folder given away or opened to others, changes one of these.
        version = (st.st_ino, st.st_mtime_ns, st.st_size, st.st_mode, st.st_uid,
                   tuple((f.st_mode, f.st_uid) for f in folders))
        cached = self._keys.get(resolved)
        if cached and cached[0] == version:
            return cached[1]
        key = load_private_key(path, min_bits=self.min_bits)
        self._keys[resolved] = (version, key)
        return key


class KeyRecordError(ValueError):
    """A malformed DKIM key record; ``tag`` names the offending tag (None when the list itself is bad)."""

    def __init__(self, message: str, tag: Optional[str] = None) -> None:
        super().__init__(message)
        self.tag = tag


@dataclass(frozen=True)
class KeyRecord:
    """A DKIM key record (RFC 6376 section 3.6.1) as published in DNS."""

    version: Optional[str] = None
    key_type: str = "rsa"
    hashes: Optional[Tuple[str, ...]] = None
    services: Tuple[str, ...] = ("*",)
    flags: Tuple[str, ...] = ()
    public_b64: str = ""
    notes: Optional[str] = None
    key: Optional[PublicKey] = field(default=None, compare=False, repr=False)

    @property
    def revoked(self) -> bool:
        return self.public_b64 == ""

    @property
    def testing(self) -> bool:
        return "y" in self.flags

    @property
    def strict(self) -> bool:
        return "s" in self.flags

    def public_key(self) -> PublicKey:
        """The published key; KeyRecordError (tag "p") when the key is revoked."""
        if self.key is None:
            raise KeyRecordError("p= is empty: the key has been revoked", "p")
        return self.key

    def bits(self) -> int:
        """RSA modulus size, 256 for Ed25519, 0 for a revoked key."""
        if self.key is None:
            return 0
        return self.key.key_size if isinstance(self.key, rsa.RSAPublicKey) else 256

    def matches(self, private: PrivateKey) -> bool:
        """Whether this record publishes the public half of ``private``."""
        if self.key is None or self.key_type != private.algorithm:
            return False
        public = private.key.public_key()
        if isinstance(self.key, rsa.RSAPublicKey):
            return self.key.public_numbers() == public.public_numbers()
        return self.key.public_bytes_raw() == public.public_bytes_raw()


_WORD = re.compile(r"[A-Za-z](?:[A-Za-z0-9-]*[A-Za-z0-9])?")  # RFC 6376 hyphenated-word


def _word_list(tag: str, value: str, extra: Tuple[str, ...] = ()) -> Tuple[str, ...]:
    items = tuple(item.strip(" \t\r\n") for item in value.split(":"))
    for item in items:
        if item not in extra and not _WORD.fullmatch(item):
            raise KeyRecordError(f"{tag}= is not a colon-separated list of names: {value[:40]!r}", tag)
    return items


def _decode_public_key(key_type: str, p: str) -> PublicKey:
    try:
        der = base64.b64decode(p, validate=True)
    except (binascii.Error, ValueError):
        raise KeyRecordError("p= is not valid base64", "p") from None
    if key_type == "ed25519":
        if len(der) != 32:
            raise KeyRecordError(f"p= for k=ed25519 must be the raw 32-byte key (RFC 8463), "
                                 f"not {len(der)} bytes", "p")
        return ed25519.Ed25519PublicKey.from_public_bytes(der)
    try:
        key = serialization.load_der_public_key(der)  # SubjectPublicKeyInfo, or bare PKCS#1 RSAPublicKey
    except (ValueError, UnsupportedAlgorithm):
        raise KeyRecordError("p= does not decode to an RSA public key", "p") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise KeyRecordError("p= holds a key that is not RSA, but k= says rsa", "p")
    return key


def parse_key_record(txt: bytes) -> KeyRecord:
    """The key record in a TXT record's joined strings; KeyRecordError naming the bad tag."""
    try:
        raw = parse_tags(txt)
    except ValueError as exc:
        raise KeyRecordError(f"key record is not a valid tag list: {exc}") from None
    tags: Dict[str, str] = {}
    for name, value in raw.items():
        try:
            tags[name.decode("ascii")] = value.decode("ascii")
        except UnicodeDecodeError:
            raise KeyRecordError(f"{name.decode('ascii', 'replace')}= holds non-ASCII bytes",
                                 name.decode("ascii", "replace")) from None
    version = tags.get("v")
    if version is not None and (version != "DKIM1" or next(iter(tags)) != "v"):
        raise KeyRecordError(f"v= must be DKIM1 and the first tag, found v={version[:20]}", "v")
    key_type = tags.get("k", "rsa").lower()
    if key_type not in ("rsa", "ed25519"):
        raise KeyRecordError(f"k={key_type[:20]} is not a known key type (rsa or ed25519)", "k")
    if "p" not in tags:
        raise KeyRecordError("p= is missing: a key record must publish a key (or p= empty if revoked)", "p")
    public_b64 = compact(raw[b"p"]).decode("ascii")
    hashes = _word_list("h", tags["h"]) if "h" in tags else None
    services = _word_list("s", tags["s"], extra=("*",)) if "s" in tags else ("*",)
    flags = _word_list("t", tags["t"]) if "t" in tags else ()
    key = _decode_public_key(key_type, public_b64) if public_b64 else None
    return KeyRecord(version, key_type, tuple(h.lower() for h in hashes) if hashes else None,
                     tuple(s.lower() for s in services), tuple(f.lower() for f in flags),
                     public_b64, tags.get("n"), key)


def key_name(selector: str, domain: str) -> str:
    """The DNS name a key is published at: "s1._domainkey.example.com"."""
    return f"{selector}._domainkey.{domain.rstrip('.')}"


def zone_line(selector: str, domain: str, txt: str) -> str:
    """The record as a zone-file line, its text split into strings of at most 255 characters."""
    chunks = [txt[i:i + 255] for i in range(0, len(txt), 255)] or [""]
    quoted = " ".join('"' + c.replace("\\", "\\\\").replace('"', '\\"') + '"' for c in chunks)
    return f"{key_name(selector, domain)}. IN TXT ( {quoted} )"


# --- making keys ---------------------------------------------------------------------------------

class KeyGenerationError(ValueError):
    """A key that cannot be made as asked (size, name taken, folder not writable); says what to do."""


@dataclass(frozen=True)
class GeneratedKey:
    """A key pair just written: ``key_path`` (mode 0600) and ``dns_path`` (the record as a zone-file line)."""

    domain: str
    selector: str
    private: PrivateKey
    key_path: Path
    dns_path: Path
    txt: str  # the TXT record's value: "v=DKIM1; k=rsa; p=..."

    @property
    def zone_line(self) -> str:
        return zone_line(self.selector, self.domain, self.txt)


def key_size(algorithm: str, bits: Optional[int]) -> int:
    """The RSA size asked for (2048 when None), or 256 for Ed25519; KeyGenerationError when refused."""
    if algorithm == "ed25519":
        if bits is not None:
            raise KeyGenerationError("a key size applies to RSA keys only; Ed25519 keys have a fixed size")
        return 256
    if algorithm != "rsa":
        raise KeyGenerationError(f"{algorithm!r} is not a DKIM key algorithm; use rsa or ed25519")
    bits = DEFAULT_RSA_BITS if bits is None else bits
    if bits not in RSA_SIZES:
        why = f"under {MIN_RSA_BITS} bits verifiers refuse the key (RFC 8301)" if bits < MIN_RSA_BITS \
            else "choose one of " + ", ".join(map(str, RSA_SIZES))
        raise KeyGenerationError(f"{bits} is not an accepted RSA key size: {why}; 2048 is a good choice")
    return bits


def dated_selector(folders: "Sequence[os.PathLike]", prefix: str = "s",
                   now: Optional[datetime.datetime] = None) -> str:
    """PREFIX + today's date (UTC), e.g. s20261123, or s20261123-2 (-3, ...) when a folder has it already."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    base = f"{prefix}{now:%Y%m%d}"
    selector, n = base, 1
    while any((Path(f) / f"{selector}{ext}").exists() for f in folders for ext in (".key", ".dns")):
        n += 1
        selector = f"{base}-{n}"
    return selector


def _create(path: Path, mode: int) -> int:
    # Exclusive and never through a symlink: a planted link cannot redirect a key or its record.
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), mode)


def generate_key(keys_dir: "str | os.PathLike", domain: str, selector: str, *, algorithm: str = "rsa",
                 bits: Optional[int] = None, testing: bool = False) -> GeneratedKey:
    """A new key pair at KEYS_DIR/DOMAIN/SELECTOR.key (mode 0600) and SELECTOR.dns (its TXT record).

    ``domain`` and ``selector`` must already be checked DNS names.  Neither file is
    ever overwritten or written through a symlink; if either cannot be made, neither is left.
    Raises KeyGenerationError naming the file and what to do.
    """
    bits = key_size(algorithm, bits)
    folder = Path(keys_dir) / domain
    key_path, dns_path = folder / f"{selector}.key", folder / f"{selector}.dns"
    key = ed25519.Ed25519PrivateKey.generate() if algorithm == "ed25519" else rsa.generate_private_key(65537, bits)
    private = PrivateKey(algorithm, key, bits, key_path)
    txt = private.dns_txt(testing)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    record = f"; DKIM key {selector} for {domain}: publish this TXT record\n{zone_line(selector, domain, txt)}\n"
    made = []
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        for path, mode, data in ((key_path, 0o600, pem), (dns_path, 0o644, record.encode("ascii"))):
            fd = _create(path, mode)
            made.append(path)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
    except FileExistsError as exc:
        _remove(made)
        raise KeyGenerationError(f"{exc.filename} already exists and is never overwritten; "
                                 f"pick another selector") from None
    except OSError as exc:
        _remove(made)
        raise KeyGenerationError(f"cannot write {exc.filename or folder}: {exc.strerror}; "
                                 f"check that {folder} is a writable folder (not a symlink)") from None
    return GeneratedKey(domain, selector, private, key_path, dns_path, txt)


def _remove(paths) -> None:
    for path in paths:
        try:
            os.unlink(path)
        except OSError:
            pass
