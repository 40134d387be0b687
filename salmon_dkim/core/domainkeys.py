"""DomainKey-Signature headers (RFC 4870, historic): sign as Mailtraq does, verify as MDaemon does.

DomainKeys is DKIM's predecessor: one RSA-SHA1 signature over the header
fields *below* the signature and the body together, canonicalized ``simple``
or ``nofws``, with the key at ``SELECTOR._domainkey.DOMAIN`` in the DKIM record
format.  dkimpy has no DomainKeys at all; Mail::DKIM, the peer our tests use,
does, and where RFC 4870 leaves room we read a signature as it does:

- the fields signed are those below the signature; with ``h=`` they are taken
  in h= order, a name listed once taking every instance of it and a name
  listed n times the last n instances (RFC 4870 3.3 asks signers to list h= in
  message order, where both readings agree);
- the sending address comes from the *signed* fields only: the last Sender
  signed, unless it is empty, else the last From signed; the first address of
  that field counts.

``sign_domainkeys`` makes one signature; ``verify_domainkeys`` gives one
signature an RFC 8601 result word and a reason, never raising on message
content:

- ``neutral``: the signature is broken, or its d= is neither the domain of
  the sending address (Sender, else From: RFC 4870 section 3.3) nor a parent
  of it, checked before any DNS lookup;
- ``permerror``: no key, a revoked, malformed or non-RSA key;
- ``temperror``: the key lookup failed for now;
- ``fail``: the signature does not verify with the key;
- ``policy``: it verified, but the key is under MinKeyBits or its own tags
  refuse this use (``g=``, ``h=`` without sha1, ``s=`` without email);
- ``pass``.

rsa-sha1 is the only DomainKeys algorithm, so RFC 8301's refusal of sha1 for
DKIM does not apply here; a DomainKeys pass is no DKIM pass (ADSP ignores it).
"""
from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from salmon_dkim.core import crypto
from salmon_dkim.core.canon import canonical_body
from salmon_dkim.core.keyfetch import DOMAIN, SignatureProblem, fetch_key
from salmon_dkim.core.keys import KeyRecord, PrivateKey, key_name, parse_key_record
from salmon_dkim.core.message import AddressError, Header, Message, field_name, parse_mailboxes
from salmon_dkim.core.tags import header_bytes, parse_tags, signature_lines, spill
from salmon_dkim.dns.resolver import TXTResolver

ALGORITHM = "rsa-sha1"
CANONICALIZATIONS = ("simple", "nofws")
_BODY_METHOD = {"simple": "dk-simple", "nofws": "nofws"}
_FWS = b" \t\r\n"


@dataclass(frozen=True)
class DomainKeySignature:
    """A DomainKey-Signature header field, parsed and checked for syntax (RFC 4870 section 3.3)."""

    domain: str
    selector: str
    canon: str  # "simple" | "nofws"
    signed_headers: Optional[Tuple[bytes, ...]]  # h= names in order, lower case; None: every field below
    signature: bytes


@dataclass(frozen=True)
class DomainKeysResult:
    """What became of one DomainKey-Signature."""

    result: str  # an RFC 8601 result word
    reason: str
    sender: Optional[str] = None  # the sending address the d= domain was checked against
    sender_header: Optional[str] = None  # "sender" | "from": where ``sender`` came from
    testing: bool = False
    key_bits: Optional[int] = None


def _text(value: bytes, limit: int = 60) -> str:
    return value[:limit].decode("ascii", "replace")


def parse_domainkey_signature(value: bytes) -> DomainKeySignature:
    """The tags of a DomainKey-Signature value; ValueError naming what is broken."""
    try:
        tags = parse_tags(value)
    except ValueError as exc:
        raise ValueError(f"malformed tag list: {exc}") from None
    missing = [t + "=" for t in ("b", "d", "s") if t.encode() not in tags]
    if missing:
        raise ValueError("required tag missing: " + ", ".join(missing))
    algorithm = _text(tags.get(b"a", ALGORITHM.encode())).lower()
    if algorithm != ALGORITHM:  # RFC 4870 3.3: rsa-sha1 is the only algorithm, and the default
        raise ValueError(f"a={algorithm} is not a DomainKeys algorithm (rsa-sha1)")
    canon = _text(tags.get(b"c", b"simple")).lower()
    if canon not in CANONICALIZATIONS:
        raise ValueError(f"c={canon} is not a DomainKeys canonicalization (simple or nofws)")
    if tags.get(b"q", b"dns").lower() != b"dns":
        raise ValueError(f"q={_text(tags[b'q'])} is not a DomainKeys query method (dns)")
    domain = tags[b"d"].decode("ascii", "replace").lower().rstrip(".")
    selector = tags[b"s"].decode("ascii", "replace").lower()
    if not DOMAIN.fullmatch(domain) or "." not in domain:
        raise ValueError(f"d={domain[:60]} is not a domain name")
    if not DOMAIN.fullmatch(selector):
        raise ValueError(f"s={selector[:60]} is not a selector")
    signed = None
    if b"h" in tags:
        signed = tuple(name for name in (h.strip(_FWS).lower() for h in tags[b"h"].split(b":")) if name)
        if not signed:
            raise ValueError("h= names no header field")
    try:
        signature = base64.b64decode(tags[b"b"].translate(None, _FWS), validate=True)
    except (binascii.Error, ValueError):
        signature = b""
    if not signature:
        raise ValueError("b= is not valid base64")
    return DomainKeySignature(domain, selector, canon, signed, signature)


def signed_fields(headers: Sequence[Header], signed: Optional[Sequence[bytes]]) -> List[Header]:
    """The fields a DomainKey-Signature hashes, in the order it hashes them.

    ``headers``: the fields below the signature; ``signed``: its h= names (lower case), None for
    none.  Walking h= from its end, a name listed again further up takes its last instance left,
    its first (or only) listing every instance left, as Mail::DKIM does.  Linear in the input.
    """
    if signed is None:
        return list(headers)
    instances: Dict[bytes, List[Header]] = {}
    for name, value in headers:
        instances.setdefault(field_name(name), []).append((name, value))
    left: Dict[bytes, int] = {}
    for name in signed:
        left[name] = left.get(name, 0) + 1
    chosen: List[Header] = []
    for name in reversed(signed):
        left[name] -= 1
        found = instances.get(name)
        if not found:
            continue
        if left[name]:
            chosen.append(found.pop())
        else:
            chosen.extend(reversed(found))
            instances[name] = []
    chosen.reverse()
    return chosen


def sending_address(fields: Sequence[Header]) -> Tuple[str, str]:
    """(address, "sender" | "from"): who signed, as the signed fields say (RFC 4870 section 3.3).

    ``fields``: the fields the signature signs (:func:`signed_fields`).  The last Sender among
    them unless it is empty, else the last From; the first address of that field (as Mail::DKIM
    reads a Sender or From holding several).  ValueError when there is no such field, it holds no
    address, or it cannot be parsed.
    """
    last: Dict[bytes, bytes] = {}
    for name, value in fields:
        key = field_name(name)
        if key in (b"sender", b"from"):
            last[key] = value
    for field in ("sender", "from"):
        value = last.get(field.encode())
        if value is None or (field == "sender" and not value.strip(_FWS)):  # an empty Sender: From decides
            continue
        label = field.capitalize()
        try:
            found = parse_mailboxes(value)
        except AddressError as exc:
            raise ValueError(f"the {label} field cannot be parsed: {exc}") from None
        if not found:
            raise ValueError(f"the {label} field holds no address")
        return found[0].address, field
    raise ValueError("the signature signs neither a Sender nor a From field")


def _in_domain(address: str, domain: str) -> bool:
    own = address.rpartition("@")[2].strip().lower().rstrip(".")
    return own == domain or own.endswith("." + domain)


def canon_headers(fields: Sequence[Header], method: str) -> bytes:
    """The signed fields (:func:`signed_fields`), canonicalized (RFC 4870 section 3.4)."""
    if method == "simple":
        return b"".join(n + b":" + v for n, v in fields)
    return b"".join((n + b":" + v).translate(None, _FWS) + b"\r\n" for n, v in fields)


def _digest(fields: Sequence[Header], canon: str, message: Message) -> bytes:
    """SHA-1 of what a signature signs: the canonical ``fields``, then a blank line and the canonical
    body unless it is empty (RFC 4870 section 3.4.2), hashed as the body streams by."""
    hasher = hashlib.sha1(canon_headers(fields, canon))
    first = True
    for piece in canonical_body(message.data, _BODY_METHOD[canon], message.body_offset):
        if first:
            hasher.update(b"\r\n")
            first = False
        hasher.update(piece)
    return hasher.digest()


def signed_digest(sig: DomainKeySignature, message: Message, position: int) -> bytes:
    """SHA-1 of what the signature at ``message.fields[position]`` signed."""
    return _digest(signed_fields(message.fields[position + 1:], sig.signed_headers), sig.canon, message)


def sign_domainkeys(message: Message, domain: str, selector: str, key: PrivateKey, canon: str = "nofws",
                    headers: Optional[Iterable[str]] = None) -> bytes:
    """A DomainKey-Signature for ``message`` (folded, CRLF-terminated), to go directly above it.

    rsa-sha1 with ``key`` (RSA only), ``canon`` "nofws" or "simple".  ``headers``: the names h=
    lists, each once per instance in message order (Sender and From always); None: no h=, so
    every field below the signature is signed, and one added below it in transit breaks it.
    ValueError for an Ed25519 key, an unknown canonicalization, or a sending address (Sender,
    else From) outside ``domain``: receivers would find that signature neutral ("bad identity").
    """
    if key.algorithm != "rsa":
        raise ValueError(f"DomainKeys signs with RSA only; the key {key.path} is {key.algorithm}")
    if canon not in CANONICALIZATIONS:
        raise ValueError(f"{canon!r} is not a DomainKeys canonicalization (nofws or simple)")
    names = None
    if headers is not None:
        wanted = {h.strip().lower() for h in headers} | {"sender", "from"}
        names = tuple(field_name(n) for n, _ in message.fields if field_name(n).decode("ascii", "replace") in wanted)
    fields = signed_fields(message.fields, names)
    sender, source = sending_address(fields)
    if not _in_domain(sender, domain):
        raise ValueError(f"the sending address {sender} ({source.capitalize()}) is not in {domain}; "
                         "a DomainKeys receiver would find d= not the sender's domain")
    signature = crypto.sign(key.key, ALGORITHM, _digest(fields, canon, message), prehashed=True)
    tags = [("a", ALGORITHM), ("c", canon), ("d", domain), ("s", selector), ("q", "dns")]
    signed = [n.decode("ascii") for n in names] if names else None
    lines = signature_lines("DomainKey-Signature", tags, signed)
    return header_bytes(spill(lines, base64.b64encode(signature).decode("ascii")))


def _key(sig: DomainKeySignature, resolver: TXTResolver,
         parse_key: Callable[[str, str, bytes], KeyRecord]) -> Tuple[KeyRecord, bytes]:
    """The usable key record for ``sig`` and its TXT text; SignatureProblem when there is none."""
    record, txt = fetch_key(sig.selector, sig.domain, resolver, parse_key)
    if record.key_type != "rsa":
        raise SignatureProblem("permerror", f"key {key_name(sig.selector, sig.domain)} is "
                               f"k={record.key_type}; DomainKeys signatures are RSA")
    return record, txt


def _granularity(txt: bytes) -> Optional[str]:
    """The key's g= (RFC 4870 3.2.3), None when absent or empty (any local part)."""
    try:
        value = parse_tags(txt).get(b"g", b"")
    except ValueError:
        return None
    return value.decode("utf-8", "replace") or None


def _objections(record: KeyRecord, granularity: Optional[str], local_part: str, min_key_bits: int) -> List[str]:
    found = []
    if record.bits() < min_key_bits:
        found.append(f"{record.bits()}-bit RSA key is under the {min_key_bits}-bit minimum (MinKeyBits)")
    if granularity is not None and granularity != "*" and granularity != local_part:
        found.append(f"key g={granularity[:40]} does not cover the sender {local_part[:40]}@")
    if record.hashes is not None and "sha1" not in record.hashes:
        found.append(f"key h={':'.join(record.hashes)} does not allow sha1")
    if not {"email", "*"} & set(record.services):
        found.append(f"key s={':'.join(record.services)} is not for email")
    return found


def verify_domainkeys(message: Message, position: int, resolver: TXTResolver, *, min_key_bits: int = 1024,
                      parse_key: Optional[Callable[[str, str, bytes], KeyRecord]] = None) -> DomainKeysResult:
    """The result of the DomainKey-Signature at ``message.fields[position]``.

    Only the fields the signature signs (below it, chosen by h=) count, for the sending address as
    for the signed data.
    ``resolver``: the message's (budgeted) resolver; ``parse_key(selector, domain, txt)``: a key
    record parser, for a cache.
    """
    parse_key = parse_key or (lambda selector, domain, txt: parse_key_record(txt))
    sender = sender_header = None
    record = None
    try:
        try:
            sig = parse_domainkey_signature(message.fields[position][1])
        except ValueError as exc:
            raise SignatureProblem("neutral", str(exc)) from None
        try:
            sender, sender_header = sending_address(signed_fields(message.fields[position + 1:],
                                                                  sig.signed_headers))
        except ValueError as exc:
            raise SignatureProblem("neutral", f"no sending address to check d={sig.domain} against: {exc}") from None
        if not _in_domain(sender, sig.domain):
            raise SignatureProblem("neutral", f"d={sig.domain} is not the domain (or a parent) of the sending "
                                   f"address ({sender_header.capitalize()}; RFC 4870 section 3.3)")
        record, txt = _key(sig, resolver, parse_key)
        try:
            crypto.verify(record.public_key(), ALGORITHM, sig.signature, signed_digest(sig, message, position),
                          prehashed=True)
        except crypto.BadSignature as exc:
            text = str(exc)
            if text == "signature mismatch":
                text = "signature mismatch: the message was changed after signing, or the key does not match"
            raise SignatureProblem("fail", text) from None
        objections = _objections(record, _granularity(txt), sender.rpartition("@")[0], min_key_bits)
        if objections:
            raise SignatureProblem("policy", "; ".join(objections))
        word, reason = "pass", f"good DomainKeys rsa-sha1 signature, {record.bits()}-bit key" + (
            " in testing mode (t=y)" if record.testing else "")
    except SignatureProblem as problem:
        word, reason = problem.result, problem.reason
    testing = record.testing if record is not None else False
    bits = record.bits() if record is not None else None
    return DomainKeysResult(word, reason, sender, sender_header, testing, bits)
