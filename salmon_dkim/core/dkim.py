"""DKIM signatures (RFC 6376, RFC 8463): make one, read one, check one.

``dkim_sign`` makes one DKIM-Signature for one key; :class:`salmon_dkim.core.signer.Signer`
chooses the keys.  ``parse_signature`` checks a DKIM-Signature's syntax;
``check_signature`` checks one against its key record and local policy;
:class:`salmon_dkim.core.verifier.Verifier` runs them over every signature of
a message.

Where RFC 6376 leaves the choice to the verifier:
- crypto first, policy second: ``policy`` means the signature verified but is
  refused (rsa-sha1, weak key, ``l=``, key ``h=``/``s=``/``t=s``, ``t=`` in the
  future, an added instance of a field a reader trusts); a refused signature
  that also fails to verify is ``fail``;
- a ``b=`` whose length is not the key's size is ``fail``;
- an expired ``x=`` is ``permerror``; ``x=`` not after ``t=`` is ``neutral``.
"""
from __future__ import annotations

import base64
import binascii
import functools
import hmac
import re
import time
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

from salmon_dkim.config.settings import SigningSettings
from salmon_dkim.core import crypto
from salmon_dkim.core.canon import body_hash, canon_header
from salmon_dkim.core.keyfetch import DOMAIN, SignatureProblem
from salmon_dkim.core.keys import KeyRecord, PrivateKey
from salmon_dkim.core.message import Header, Message, field_name
from salmon_dkim.core.tags import (decode_qp, header_bytes, parse_tags, signature_lines, spill,
                                   strip_b_value)

REQUIRED_TAGS = (b"v", b"a", b"b", b"bh", b"d", b"h", b"s")
SINGLETONS = (b"from", b"sender", b"reply-to", b"to", b"cc", b"subject", b"date", b"message-id",
              b"in-reply-to", b"references", b"mime-version", b"content-type")
"""Fields a reader trusts and RFC 5322 (or RFC 2045) allows once: an unsigned extra instance above a
signature would be what a mail program shows (RFC 6376 section 8.15)."""
_FWS = b" \t\r\n"
_DIGITS = re.compile(rb"[0-9]{1,76}")


# --- making a signature ------------------------------------------------------------------------

def signed_names(headers: Sequence[Header], names: Iterable[str],
                 oversign: Iterable[str] = ("from",)) -> Tuple[str, ...]:
    """The h= list: each name once per instance present; oversigned names once more, present or not."""
    present = tuple(field_name(name) for name, _ in headers)
    # The memo keeps each key: 512 layouts of 100k header fields would hold gigabytes.
    h_list = _h_list if len(present) <= _MEMO_MAX_FIELDS else _h_list.__wrapped__
    return h_list(present, tuple(names), tuple(oversign))


_MEMO_MAX_FIELDS = 200


@functools.lru_cache(maxsize=512)  # mail from one application has a handful of header layouts
def _h_list(present: Tuple[bytes, ...], names: Tuple[str, ...], oversign: Tuple[str, ...]) -> Tuple[str, ...]:
    counts: Dict[str, int] = {}
    for name in present:
        key = name.decode("ascii", "replace")
        counts[key] = counts.get(key, 0) + 1
    oversigned = [n.lower() for n in oversign]
    wanted = list(dict.fromkeys(n.lower() for n in names))
    if "from" not in wanted:
        wanted.insert(0, "from")  # RFC 6376 section 5.4: From is always signed
    chosen: List[str] = []
    for name in wanted + [n for n in dict.fromkeys(oversigned) if n not in wanted]:
        chosen += [name] * (counts.get(name, 0) + (name in oversigned))
    return tuple(chosen)


def select_headers(headers: Union[Sequence[Header], Message], names: Iterable[bytes]) -> List[Header]:
    """The header instances an h= list names, each name from the bottom up (RFC 6376 section 5.4.2).

    A name with no instance left selects nothing (the oversigning case).
    """
    by_name: Dict[bytes, List[Header]] = {}
    if isinstance(headers, Message):
        for lname, field in zip(headers.names, headers.fields):
            by_name.setdefault(lname, []).append(field)
    else:
        for name, value in headers:
            by_name.setdefault(field_name(name), []).append((name, value))
    chosen = []
    for name in names:
        instances = by_name.get(name.strip(_FWS).lower())
        if instances:
            chosen.append(instances.pop())
    return chosen


def header_data(headers: Union[Sequence[Header], Message], names: Iterable[bytes], method: str) -> bytes:
    """The signed header fields, canonicalized, in h= order."""
    return b"".join([canon_header(n, v, method) for n, v in select_headers(headers, names)])


def own_field(name: bytes, value: bytes, method: str) -> bytes:
    """A signature's own field as it signs itself: b= empty, canonicalized, no final CRLF."""
    field = canon_header(name, strip_b_value(value), method)
    return field[:-2] if field.endswith(b"\r\n") else field


def signature_field(field_name_: str, tags: Sequence[Tuple[str, str]], names: Sequence[str], data: bytes,
                    key: PrivateKey, algorithm: str, method: str) -> bytes:
    """A signature field (DKIM-Signature, ARC-Message-Signature) signing ``data`` and itself, folded."""
    lines = signature_lines(field_name_, tags, names if names else None)
    name, _, value = "\r\n".join(lines).encode("ascii").partition(b":")
    signature = crypto.sign(key.key, algorithm, data + own_field(name, value, method))
    return header_bytes(spill(lines, base64.b64encode(signature).decode("ascii")))


def make_signature(data: bytes, names: Sequence[str], bh: bytes, length: Optional[int], domain: str,
                   selector: str, key: PrivateKey, canon: Tuple[str, str], now: int,
                   expire: Optional[int]) -> bytes:
    """One DKIM-Signature header over canonical header ``data`` (h= ``names``) and body hash ``bh``."""
    algorithm = crypto.SIGNING_ALGORITHM[key.algorithm]
    tags = [("v", "1"), ("a", algorithm), ("c", "/".join(canon)), ("d", domain), ("s", selector),
            ("t", str(now))]
    if expire:
        tags.append(("x", str(now + expire)))
    if length is not None:
        tags.append(("l", str(length)))
    tags.append(("bh", base64.b64encode(bh).decode("ascii")))
    return signature_field("DKIM-Signature", tags, names, data, key, algorithm, canon[0])


DEFAULT_HEADERS = SigningSettings.headers
"""[Signing] Headers' default (one list, in config/settings.py, kept equal to the spec's by a test)."""


def dkim_sign(message: bytes, domain: str, selector: str, key: PrivateKey, *,
              headers: Iterable[str] = DEFAULT_HEADERS, oversign: Iterable[str] = ("from",),
              canon: Tuple[str, str] = ("relaxed", "relaxed"), expire: Optional[int] = None,
              body_length: bool = False, now: Optional[float] = None) -> bytes:
    """The DKIM-Signature header for ``message`` (CRLF-terminated, folded, ready to prepend).

    ``message`` is taken with CRLF line endings (bare LF becomes CRLF first).
    ``expire``: seconds until x=; ``now``: t= (default: the current time).
    Raises MessageFormatError for a message that is not header fields and a body.
    """
    msg = Message.parse(message)
    names = signed_names(msg.fields, headers, oversign)
    bh, length = body_hash(msg.data, canon[1], start=msg.body_offset)
    data = header_data(msg.fields, [n.encode("ascii") for n in names], canon[0])
    return make_signature(data, names, bh, length if body_length else None, domain, selector, key,
                          tuple(canon), int(time.time() if now is None else now), expire)


# --- reading a signature -----------------------------------------------------------------------

@dataclass(frozen=True)
class Signature:
    """A DKIM-Signature header field, parsed and checked for syntax."""

    name: bytes
    value: bytes
    domain: str
    selector: str
    algorithm: str
    key_type: str
    hash_name: str
    header_canon: str
    body_canon: str
    signed_headers: Tuple[bytes, ...]
    body_hash: bytes
    signature: bytes
    identity: Optional[str]
    length: Optional[int]
    timestamp: Optional[int]
    expiry: Optional[int]


def _text(value: bytes, limit: int = 253) -> str:
    return value[:limit].decode("ascii", "replace")


def _number(tags: dict, tag: bytes) -> Optional[int]:
    if tag not in tags:
        return None
    if not _DIGITS.fullmatch(tags[tag]):
        raise SignatureProblem("neutral", f"{tag.decode()}= is not a number")
    return int(tags[tag])


def _base64(tags: dict, tag: bytes) -> bytes:
    try:
        decoded = base64.b64decode(tags[tag].translate(None, _FWS), validate=True)
    except (binascii.Error, ValueError):
        decoded = b""
    if not decoded:
        raise SignatureProblem("neutral", f"{tag.decode()}= is not valid base64")
    return decoded


def parse_signature(name: bytes, value: bytes, tags: Optional[dict] = None) -> Signature:
    """Check a DKIM-Signature's tags for syntax (RFC 6376 section 3.5); SignatureProblem if broken."""
    if tags is None:
        try:
            tags = parse_tags(value)
        except ValueError as exc:
            raise SignatureProblem("neutral", f"malformed tag list: {exc}") from None
    missing = [t.decode() + "=" for t in REQUIRED_TAGS if t not in tags]
    if missing:
        raise SignatureProblem("neutral", "required tag missing: " + ", ".join(missing))
    if tags[b"v"] != b"1":
        raise SignatureProblem("neutral", "v= is not the DKIM version (v=1)")
    algorithm = _text(tags[b"a"], 40).lower()
    if algorithm not in crypto.ALGORITHMS:
        raise SignatureProblem("neutral", "a= is not a known algorithm")
    key_type, hash_name = crypto.ALGORITHMS[algorithm]
    domain = tags[b"d"].decode("ascii", "replace").lower().rstrip(".")
    selector = tags[b"s"].decode("ascii", "replace").lower()
    if not DOMAIN.fullmatch(domain) or "." not in domain:
        raise SignatureProblem("neutral", "d= is not a domain name")
    if not DOMAIN.fullmatch(selector):
        raise SignatureProblem("neutral", "s= is not a selector")
    canon = _text(tags.get(b"c", b"simple/simple"), 40).lower()
    header_canon, _, body_canon = canon.partition("/")
    body_canon = body_canon or "simple"
    if header_canon not in ("simple", "relaxed") or body_canon not in ("simple", "relaxed"):
        raise SignatureProblem("neutral", "c= is not a canonicalization")
    if b"q" in tags and b"dns/txt" not in [q.strip(_FWS).lower() for q in tags[b"q"].split(b":")]:
        raise SignatureProblem("neutral", "q= does not offer dns/txt")
    signed = tuple(h.strip(_FWS) for h in tags[b"h"].split(b":"))
    if b"from" not in [h.lower() for h in signed]:
        raise SignatureProblem("neutral", "h= does not include From (RFC 6376 section 5.4)")
    identity = None
    if b"i" in tags:
        identity = decode_qp(tags[b"i"]).decode("utf-8", "replace")
        local, at, idomain = identity.rpartition("@")
        idomain = idomain.lower().rstrip(".")
        if not at or not (idomain == domain or idomain.endswith("." + domain)):
            raise SignatureProblem("neutral", f"the i= domain is not d={domain} or a subdomain of it")
    timestamp, expiry = _number(tags, b"t"), _number(tags, b"x")
    if timestamp is not None and expiry is not None and expiry <= timestamp:
        raise SignatureProblem("neutral", "x= (expiry) is not later than t= (signing time)")
    return Signature(name, value, domain, selector, algorithm, key_type, hash_name, header_canon,
                     body_canon, signed, _base64(tags, b"bh"), _base64(tags, b"b"), identity,
                     _number(tags, b"l"), timestamp, expiry)


# --- checking a signature ----------------------------------------------------------------------

@dataclass(frozen=True)
class CheckOptions:
    """The local policy a passing signature must also meet (from [Verification])."""

    min_key_bits: int = 1024
    allow_sha1: bool = False
    honor_body_length: bool = False
    clock_drift: int = 300


def check_body(sig: Signature, digest: bytes, length: int) -> None:
    """SignatureProblem ``fail`` unless ``digest`` (of the canonical body, cut at l=) is bh=."""
    if sig.length is not None and sig.length > length:
        raise SignatureProblem("fail", f"l={sig.length} is longer than the body ({length} bytes): "
                               "the body was cut")
    if not hmac.compare_digest(digest, sig.body_hash):
        raise SignatureProblem("fail", "body hash mismatch: the body was changed after signing")


def check_crypto(sig: Signature, message: Message, record: KeyRecord) -> None:
    """SignatureProblem ``fail`` unless b= verifies over the signed header fields."""
    method = sig.header_canon
    data = header_data(message, sig.signed_headers, method) + own_field(sig.name, sig.value, method)
    try:
        crypto.verify(record.public_key(), sig.algorithm, sig.signature, data)
    except crypto.BadSignature as exc:
        text = str(exc)
        if text == "signature mismatch":
            text = "signature mismatch: a signed header was changed, or the key does not match"
        raise SignatureProblem("fail", text) from None


def objections(sig: Signature, record: KeyRecord, message: Message, options: CheckOptions, *,
               body_length: int, now: int) -> List[str]:
    """Why local policy refuses a signature that verified (RFC 8301, key tags, l=, t=, added fields)."""
    found = []
    if sig.hash_name == "sha1" and not options.allow_sha1:
        found.append("rsa-sha1 is not accepted (RFC 8301)")
    if sig.key_type == "rsa" and record.bits() < options.min_key_bits:
        found.append(f"{record.bits()}-bit RSA key is under the {options.min_key_bits}-bit minimum (RFC 8301)")
    if sig.length is not None and sig.length < body_length and not options.honor_body_length:
        found.append(f"l={sig.length} leaves {body_length - sig.length} body bytes unsigned")
    if record.hashes is not None and sig.hash_name not in record.hashes:
        found.append(f"key h={':'.join(record.hashes)} does not allow {sig.hash_name}")
    if not {"email", "*"} & set(record.services):
        found.append(f"key s={':'.join(record.services)} is not for email")
    if record.strict:
        idomain = (sig.identity or "@" + sig.domain).rpartition("@")[2].lower().rstrip(".")
        if idomain != sig.domain:
            found.append(f"key t=s requires the i= domain to equal d={sig.domain}")
    if sig.timestamp is not None and sig.timestamp > now + options.clock_drift:
        found.append(f"t= is {sig.timestamp - now} s in the future")
    found += unsigned_instances(sig, message)
    return found


def unsigned_instances(sig: Signature, message: Message) -> List[str]:
    """Fields a reader trusts that appear more often than the signature signs them (RFC 6376 8.15).

    An extra From, Subject or Date above a signed message is what a mail program (and a
    Salmon handler) reads; the signature says nothing about it.
    """
    repeated = [name for name in message.repeated() if name in SINGLETONS]
    if not repeated:
        return []
    signed: Dict[bytes, int] = {}
    for name in sig.signed_headers:
        key = name.lower()
        signed[key] = signed.get(key, 0) + 1
    found = []
    for name in SINGLETONS:
        if name not in repeated:
            continue
        present = message.count(name)
        if name == b"from" and present > 1:  # the author is ambiguous however much is signed
            found.append(f"the message has {present} From fields (RFC 5322 allows one)")
        elif present > 1 and signed.get(name, 0) < present:
            label = name.decode().title().replace("Id", "ID").replace("Mime", "MIME")
            found.append(f"the message has {present} {label} fields and the signature covers "
                         f"{signed.get(name, 0)} (an unsigned one was added)")
    return found
