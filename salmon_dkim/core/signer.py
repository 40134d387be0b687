"""DKIM signing (RFC 6376, RFC 8463): the right key for each message, at OpenSSL speed.

``dkim_sign`` makes one DKIM-Signature header for one key.  ``Signer`` picks
the keys for a message from the settings (author domain, its parents,
per-sender selectors, the default key), signs with each, records what it did
in the activity log and returns the CRLF message with the signatures on top,
byte for byte unchanged below them.
"""
from __future__ import annotations

import base64
import email.utils
import functools
import hashlib
import re
import logging
import time
from dataclasses import dataclass
from typing import Callable, Iterable, List, Optional, Sequence, Tuple

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, utils

from salmon_dkim.activity import ActivityLog
from salmon_dkim.core.canon import (Header, MessageFormatError, canon_body, canon_header, select_headers,
                               split_message, to_crlf)
from salmon_dkim.config import DomainKeys, Settings
from salmon_dkim.core.keys import KeyFileError, KeyStore, PrivateKey

log = logging.getLogger(__name__)

DEFAULT_HEADERS = ("from", "date", "subject", "reply-to", "sender", "to", "cc", "bcc", "message-id",
                   "in-reply-to", "references", "content-type", "mime-version",
                   "content-transfer-encoding")
ALGORITHMS = {"rsa": "rsa-sha256", "ed25519": "ed25519-sha256"}
WIDTH = 77  # characters per header line before CRLF: under 78 (RFC 5322 section 2.1.1)


class SigningError(Exception):
    """Signing failed inside salmon-dkim: the message must not go out as if signed (answer 451)."""


@dataclass(frozen=True)
class SignatureInfo:
    domain: str
    selector: str
    algorithm: str  # "rsa-sha256" | "ed25519-sha256"
    headers: Tuple[str, ...]  # the h= list, oversigned names included


@dataclass(frozen=True)
class SignResult:
    message: bytes  # CRLF bytes with the DKIM-Signature header(s) on top; the input unchanged if unsigned
    signatures: Tuple[SignatureInfo, ...]
    unsigned_reason: Optional[str] = None


# --- one signature -------------------------------------------------------------------------------

def signed_names(headers: Sequence[Header], names: Iterable[str],
                 oversign: Iterable[str] = ("from",)) -> Tuple[str, ...]:
    """The h= list: each name once per instance present; oversigned names once more, present or not."""
    present = tuple(name.strip(b" \t").lower() for name, _ in headers)
    # The memo keeps each key: 512 layouts of 100k header fields would hold gigabytes.
    h_list = _h_list if len(present) <= _MEMO_MAX_FIELDS else _h_list.__wrapped__
    return h_list(present, tuple(names), tuple(oversign))


_MEMO_MAX_FIELDS = 200


@functools.lru_cache(maxsize=512)  # mail from one application has a handful of header layouts
def _h_list(present: Tuple[bytes, ...], names: Tuple[str, ...], oversign: Tuple[str, ...]) -> Tuple[str, ...]:
    counts: dict = {}
    for name in present:
        key = name.decode("ascii", "replace")
        counts[key] = counts.get(key, 0) + 1
    oversign = [n.lower() for n in oversign]
    wanted = list(dict.fromkeys(n.lower() for n in names))
    if "from" not in wanted:
        wanted.insert(0, "from")  # RFC 6376 section 5.4: From is always signed
    chosen: List[str] = []
    for name in wanted + [n for n in dict.fromkeys(oversign) if n not in wanted]:
        chosen += [name] * (counts.get(name, 0) + (name in oversign))
    return tuple(chosen)


def _fold(pieces: Iterable[str]) -> List[str]:
    """Header lines of at most WIDTH characters: each piece on the current line when it fits.

    A piece that starts a new line gets a leading space (folding whitespace) if it has none.
    """
    lines = ["DKIM-Signature:"]
    line = lines[0]
    for piece in pieces:
        if len(line) + len(piece) > WIDTH:
            lines[-1] = line
            line = piece if piece[0] == " " else " " + piece
            lines.append(line)
        else:
            line += piece
    lines[-1] = line
    return lines


def _header_before_b(tags: Sequence[Tuple[str, str]], names: Sequence[str]) -> List[str]:
    """DKIM-Signature lines with every tag and h=, ending in " b=" (the value comes after signing)."""
    h = [name + ":" for name in names]
    h[0], h[-1] = " h=" + h[0], h[-1][:-1] + ";"
    lines = _fold([f" {tag}={value};" for tag, value in tags] + h)
    if WIDTH - len(lines[-1]) < 20:  # b= starts a line of its own rather than leave a stub of signature
        lines.append("")
    lines[-1] += " b="
    return lines


def _spill(lines: List[str], text: str) -> None:
    """Base64 that may break anywhere: fills the last line, then whole new lines."""
    room = WIDTH - len(lines[-1])
    lines[-1] += text[:room]
    for start in range(room, len(text), WIDTH - 1):
        lines.append(" " + text[start:start + WIDTH - 1])


def _sign_data(key: PrivateKey, data: bytes) -> bytes:
    digest = hashlib.sha256(data).digest()
    if key.algorithm == "ed25519":
        return key.key.sign(digest)  # RFC 8463: Ed25519 over the SHA-256 digest of the header data
    return key.key.sign(digest, padding.PKCS1v15(), utils.Prehashed(hashes.SHA256()))


def _header_data(headers: Sequence[Header], names: Sequence[str], method: str) -> bytes:
    """The signed header fields, canonicalized, in h= order (the same for every key of a message)."""
    chosen = select_headers(headers, [name.encode("ascii") for name in names])
    return b"".join([canon_header(n, v, method) for n, v in chosen])


def _signature(header_data: bytes, names: Sequence[str], body_hash: str, body_length: Optional[int],
               domain: str, selector: str, key: PrivateKey, methods: Tuple[str, str], now: int,
               expire: Optional[int]) -> bytes:
    tags = [("v", "1"), ("a", ALGORITHMS[key.algorithm]), ("c", "/".join(methods)), ("d", domain),
            ("s", selector), ("t", str(now))]
    if expire:
        tags.append(("x", str(now + expire)))
    if body_length is not None:
        tags.append(("l", str(body_length)))
    tags.append(("bh", body_hash))
    lines = _header_before_b(tags, names)
    name, _, value = "\r\n".join(lines).encode("ascii").partition(b":")
    own = canon_header(name, value, methods[0])
    own = own[:-2] if own.endswith(b"\r\n") else own
    _spill(lines, base64.b64encode(_sign_data(key, header_data + own)).decode("ascii"))
    return "\r\n".join(lines).encode("ascii") + b"\r\n"


def _body_hash(body: bytes, method: str, body_length: bool) -> Tuple[str, Optional[int]]:
    canonical = canon_body(body, method)
    return (base64.b64encode(hashlib.sha256(canonical).digest()).decode("ascii"),
            len(canonical) if body_length else None)


def dkim_sign(message: bytes, domain: str, selector: str, key: PrivateKey, *,
              headers: Iterable[str] = DEFAULT_HEADERS, oversign: Iterable[str] = ("from",),
              canon: Tuple[str, str] = ("relaxed", "relaxed"), expire: Optional[int] = None,
              body_length: bool = False, now: Optional[float] = None) -> bytes:
    """The DKIM-Signature header for ``message`` (CRLF-terminated, folded, ready to prepend).

    ``message`` is taken with CRLF line endings (bare LF becomes CRLF first).
    ``expire``: seconds until x=; ``now``: t= (default: the current time).
    Raises MessageFormatError for a message that is not header fields and a body.
    """
    fields, body = split_message(to_crlf(message))
    names = signed_names(fields, headers, oversign)
    bh, length = _body_hash(body, canon[1], body_length)
    return _signature(_header_data(fields, names, canon[0]), names, bh, length, domain, selector, key,
                      tuple(canon), int(time.time() if now is None else now), expire)


# --- choosing keys and signing messages ------------------------------------------------------------

class _Unsigned(Exception):
    """Why a message goes out unsigned (not an error)."""


def _address_domain(address: str) -> str:
    domain = address.rpartition("@")[2].strip().rstrip(".").lower()
    if domain and not domain.isascii():
        try:
            domain = domain.encode("idna").decode("ascii")
        except UnicodeError:
            pass
    return domain


_ADDR = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@[A-Za-z0-9.-]+"
# "addr" or "Name <addr>" with nothing that could hide a second address: the usual From, parsed fast
_ONE_MAILBOX = re.compile(rf"""[ \t]*(?: (?P<bare>{_ADDR})
                                   | (?: "[^"\\]*"[ \t]* | [^<>"(),:;@\\]* ) <(?P<angle>{_ADDR})>
                                   )[ \t]*""", re.VERBOSE)


def author_address(headers: Sequence[Header]) -> str:
    """The one address in the one From header, lowercased; _Unsigned saying why there is none."""
    values = [v for n, v in headers if n.strip(b" \t").lower() == b"from"]
    if not values:
        raise _Unsigned("no From header")
    if len(values) > 1:
        raise _Unsigned(f"{len(values)} From headers (RFC 5322 allows one)")
    text = values[0].replace(b"\r\n", b"").decode("utf-8", "replace")
    simple = _ONE_MAILBOX.fullmatch(text)
    if simple:
        addresses = [simple.group("bare") or simple.group("angle")]
    else:
        try:
            addresses = [a for _, a in email.utils.getaddresses([text]) if a]
        except Exception:  # email.utils recurses per "(" and raises RecursionError on hostile input
            raise _Unsigned(f"From header {text.strip()[:40]!r}... cannot be parsed; "
                            "write it as Name <address>") from None
    if not addresses:
        raise _Unsigned("From header holds no address")
    if len(addresses) > 1:
        raise _Unsigned(f"From header holds {len(addresses)} addresses; "
                        "one is needed to choose the signing domain")
    address = addresses[0].lower()
    if "@" not in address or not _address_domain(address):
        raise _Unsigned(f"From address {address[:60]!r} has no domain")
    return address


def _message_id(headers: Sequence[Header]) -> Optional[str]:
    for name, value in headers:
        if name.strip(b" \t").lower() == b"message-id":
            return " ".join(value.decode("utf-8", "replace").split())
    return None


class Signer:
    """Signs outbound messages as ``settings.signing`` says; keys read once from their files."""

    def __init__(self, settings: Settings, keys: Optional[KeyStore] = None,
                 activity: Optional[ActivityLog] = None, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.signing = settings.signing
        self.keys = keys if keys is not None else KeyStore(recheck_seconds=1.0)
        self.activity = activity if activity is not None else ActivityLog(settings.logging.activity_log)
        self.clock = clock
        self.header_names = self.signing.headers or DEFAULT_HEADERS

    # key choice
    def choose_keys(self, author: Optional[str], sender: Optional[str] = None,
                    domain: Optional[str] = None) -> DomainKeys:
        """The keys to sign with, most specific first.

        A selector configured for the sender's own address (SpamExperts' per-user
        selectors); the forced or author domain in [Domains], then its parents that
        include subdomains; a selector configured for the sender's domain; the default key.
        """
        if not domain:
            chosen = self._sender_keys(sender, author, by_domain=False)
            if chosen is not None:
                return chosen
        wanted = domain.lower().rstrip(".") if domain else _address_domain(author or "")
        table = self.signing.domains
        if wanted in table:
            return table[wanted]
        parts = wanted.split(".")
        for i in range(1, len(parts)):
            entry = table.get(".".join(parts[i:]))
            if entry is not None and entry.include_subdomains:
                return entry
        if not domain:
            chosen = self._sender_keys(sender, author, by_domain=True)
            if chosen is not None:
                return chosen
        if self.signing.default is not None:
            return self.signing.default
        raise _Unsigned(f"no signing key for {wanted or 'the message'}: not in [Domains], "
                        "no sender selector, no default key")

    def _sender_keys(self, sender: Optional[str], author: Optional[str], *,
                     by_domain: bool) -> Optional[DomainKeys]:
        # The sender is who sends (envelope, authenticated user); the author counts when it is unknown.
        for address in filter(None, (sender,) if sender and not by_domain else (sender, author)):
            address = address.lower()
            key_domain = _address_domain(address)
            selector = self.signing.sender_selectors.get(key_domain if by_domain else address)
            if selector:
                return self._sender_entry(key_domain, selector)
        return None

    def _sender_entry(self, key_domain: str, selector: str) -> DomainKeys:
        return DomainKeys(key_domain, (selector,), (self.signing.keys_dir / key_domain / f"{selector}.key",))

    def check_keys(self) -> List[str]:
        """Load every configured key (domains, sender selectors, default) now, at start-up.

        One line per problem.
        """
        entries = list(self.signing.domains.values()) + [self.signing.default] * bool(self.signing.default)
        entries += [self._sender_entry(_address_domain(who) if "@" in who else who, selector)
                    for who, selector in self.signing.sender_selectors.items()]
        problems = []
        for entry in entries:
            for path in entry.key_files:
                try:
                    self.keys.get(path)
                except KeyFileError as exc:
                    problems.append(f"{entry.domain}: {exc}")
        return problems

    def _skipped(self, address: Optional[str]) -> bool:
        if not address:
            return False
        address = address.lower()
        domain = _address_domain(address)
        return any(entry in (address, domain, "@" + domain) for entry in self.signing.skip_senders)

    def _load(self, entry: DomainKeys) -> List[Tuple[str, PrivateKey]]:
        loaded, refused = [], []
        for selector, path in zip(entry.selectors, entry.key_files):
            try:
                loaded.append((selector, self.keys.get(path)))
            except KeyFileError as exc:
                log.error("DKIM key %s for %s not used: %s", selector, entry.domain, exc)
                refused.append(str(exc))
        if not loaded:
            raise _Unsigned("signing key refused: " + "; ".join(refused))
        return loaded

    # signing
    def sign(self, message: bytes, *, sender: Optional[str] = None,
             domain: Optional[str] = None) -> SignResult:
        """The message signed with every key chosen for it, or unchanged with the reason it is not.

        ``sender``: envelope sender or authenticated user (sender selectors, SkipSenders).
        ``domain``: sign as this domain whatever the From header says (list mail).
        Raises SigningError only for a failure inside salmon-dkim.
        """
        message_id = None
        sender = sender.strip().strip("<>").strip() or None if sender else None  # "<>": a bounce
        try:
            wire, headers, body = self._prepare(message)
            message_id = _message_id(headers)
            if self._skipped(sender):
                raise _Unsigned(f"sender {sender} is in SkipSenders")
            author = author_address(headers)
            if sender is None and self._skipped(author):
                raise _Unsigned(f"author {author} is in SkipSenders")
            entry = self.choose_keys(author, sender, domain)
            keys = self._load(entry)
            signatures, infos = self._sign(headers, body, entry.domain, keys)
        except _Unsigned as reason:
            self.activity.record("unsigned", message_id=message_id, reason=str(reason))
            return SignResult(message, (), str(reason))
        except Exception as exc:
            log.exception("DKIM signing failed for %s", message_id)
            raise SigningError(f"signing failed ({type(exc).__name__}: {exc})") from exc
        signed = b"".join(signatures) + wire
        self.activity.record("sign", message_id=message_id, d=entry.domain,
                             s=",".join(i.selector for i in infos),
                             algorithm=",".join(i.algorithm for i in infos),
                             headers=list(infos[0].headers), size=len(signed))
        return SignResult(signed, tuple(infos), None)

    def _prepare(self, message: bytes) -> Tuple[bytes, List[Header], bytes]:
        if not self.signing.enabled:
            raise _Unsigned("signing is disabled ([Signing] Enabled = No)")
        limit = self.signing.max_message_size
        if limit and len(message) > limit:
            raise _Unsigned(f"message of {len(message)} bytes is over MaxMessageSize ({limit})")
        wire = to_crlf(message)
        try:
            headers, body = split_message(wire)
        except MessageFormatError as exc:
            raise _Unsigned(f"malformed message: {exc}") from None
        return wire, headers, body

    def _sign(self, headers, body, domain: str, keys) -> Tuple[List[bytes], List[SignatureInfo]]:
        s = self.signing
        names = signed_names(headers, self.header_names, s.oversign_headers)
        bh, length = _body_hash(body, s.body_canon, s.body_length_tag)
        data = _header_data(headers, names, s.header_canon)
        now = int(self.clock())
        signatures, infos = [], []
        for selector, key in keys:
            signatures.append(_signature(data, names, bh, length, domain, selector, key,
                                         (s.header_canon, s.body_canon), now, s.expire_seconds))
            infos.append(SignatureInfo(domain, selector, ALGORITHMS[key.algorithm], names))
        return signatures, infos
