"""Verify DomainKey-Signature headers (RFC 4870, historic), as MDaemon still does.

DomainKeys is DKIM's predecessor: one RSA-SHA1 signature over the header
fields *below* the signature and the body together, canonicalized ``simple``
or ``nofws``, with the key at ``SELECTOR._domainkey.DOMAIN`` in the DKIM record
format.  dkimpy has no DomainKeys at all.  ``verify_domainkeys`` gives one
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
from typing import Callable, List, Optional, Sequence, Tuple

from salmon_dkim.core import crypto
from salmon_dkim.core.canon import canonical_body
from salmon_dkim.core.keyfetch import DOMAIN, SignatureProblem, fetch_key
from salmon_dkim.core.keys import KeyRecord, key_name, parse_key_record
from salmon_dkim.core.message import AddressError, Header, Message, field_name, parse_mailboxes
from salmon_dkim.core.tags import parse_tags
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
    signed_headers: Optional[frozenset]  # h= names, lower case; None: every header below the signature
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
        signed = frozenset(h.strip(_FWS).lower() for h in tags[b"h"].split(b":")) - {b""}
        if not signed:
            raise ValueError("h= names no header field")
    try:
        signature = base64.b64decode(tags[b"b"].translate(None, _FWS), validate=True)
    except (binascii.Error, ValueError):
        signature = b""
    if not signature:
        raise ValueError("b= is not valid base64")
    return DomainKeySignature(domain, selector, canon, signed, signature)


def sending_address(headers: Sequence[Header]) -> Tuple[str, str]:
    """(address, "sender" | "from"): the Sender field's address if there is one, else From's.

    ``headers`` are the fields the signature covers (those below it).  ValueError when the
    field is repeated or does not hold exactly one address.
    """
    for field in ("sender", "from"):
        values = [v for n, v in headers if field_name(n) == field.encode()]
        if not values:
            continue
        if len(values) > 1:
            raise ValueError(f"the message has {len(values)} {field.capitalize()} fields")
        try:
            found = parse_mailboxes(values[0])
        except AddressError as exc:
            raise ValueError(f"the {field.capitalize()} field cannot be parsed: {exc}") from None
        if len(found) != 1:
            raise ValueError(f"the {field.capitalize()} field does not hold exactly one address")
        return found[0].address, field
    raise ValueError("the message has neither a Sender nor a From field")


def _in_domain(address: str, domain: str) -> bool:
    own = address.rpartition("@")[2].strip().lower().rstrip(".")
    return own == domain or own.endswith("." + domain)


def canon_headers(headers: Sequence[Header], signed: Optional[frozenset], method: str) -> bytes:
    """The header fields given (those below the signature), chosen by h= in message order, canonicalized."""
    if signed is not None:
        headers = [(n, v) for n, v in headers if field_name(n) in signed]
    if method == "simple":
        return b"".join(n + b":" + v for n, v in headers)
    return b"".join((n + b":" + v).translate(None, _FWS) + b"\r\n" for n, v in headers)


def signed_digest(sig: DomainKeySignature, message: Message, position: int) -> bytes:
    """SHA-1 of what the signer hashed: the canonical fields below the signature, then a blank line and
    the canonical body unless it is empty (RFC 4870 section 3.4.2), hashed as the body streams by."""
    hasher = hashlib.sha1(canon_headers(message.fields[position + 1:], sig.signed_headers, sig.canon))
    first = True
    for piece in canonical_body(message.data, _BODY_METHOD[sig.canon], message.body_offset):
        if first:
            hasher.update(b"\r\n")
            first = False
        hasher.update(piece)
    return hasher.digest()


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

    Only the fields below the signature count, for the sending address as for the signed data.
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
            sender, sender_header = sending_address(message.fields[position + 1:])
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
