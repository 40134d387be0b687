"""Verify every DKIM-Signature of a message as received (RFC 6376 section 6).

Our own verifier over ``salmon_dkim.core.canon`` with OpenSSL (through
``cryptography``) for RSA and Ed25519 (RFC 8463), because dkimpy is slow and
lets through what RFC 8301 and the key tags forbid.  Each signature gets an
RFC 8601 result word and a reason a person can act on.  Nothing in a message
makes ``Verifier.verify`` raise: a broken signature is ``neutral``, an
unusable key ``permerror``, a DNS failure ``temperror``.

Where RFC 6376 leaves the choice to the verifier:
- crypto first, policy second: ``policy`` means the signature verified but
  is refused (rsa-sha1, weak key, ``l=``, key ``h=``/``s=``/``t=s``, ``t=`` in
  the future, more than one From field); a refused signature that also fails to verify is ``fail``;
- a ``b=`` whose length is not the key's size is ``fail`` (a good key, a
  signature that cannot verify with it);
- an expired ``x=`` is ``permerror``; ``x=`` not after ``t=`` is ``neutral``;
- DomainKey-Signature (RFC 4870) headers are verified by ``salmon_dkim.core.domainkeys``,
  within MaxSignatures and the message's DNS budget; ADSP counts only DKIM passes.
"""
from __future__ import annotations

import base64
import binascii
import email.utils
import hashlib
import hmac
import logging
import re
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

from salmon_dkim.core import adsp as adsp_check
from salmon_dkim.core.arc import arc_result
from salmon_dkim.core.canon import (Header, MessageFormatError, canon_body, canon_header,
                               parse_tags, select_headers, split_message, strip_b_value, to_crlf)
from salmon_dkim.core.domainkeys import verify_domainkeys
from salmon_dkim.dns.resolver import BudgetedResolver, TXTResolver
from salmon_dkim.core.keyfetch import DOMAIN, SignatureProblem, fetch_key
from salmon_dkim.core.keys import KeyRecord, KeyRecordError, key_name, parse_key_record

log = logging.getLogger(__name__)

RESULT_WORDS = ("pass", "fail", "neutral", "policy", "temperror", "permerror")
ALGORITHMS = {"rsa-sha256": ("rsa", "sha256"), "rsa-sha1": ("rsa", "sha1"),
              "ed25519-sha256": ("ed25519", "sha256")}
REQUIRED_TAGS = (b"v", b"a", b"b", b"bh", b"d", b"h", b"s")
_FWS = b" \t\r\n"
_DIGITS = re.compile(rb"[0-9]{1,76}")
_SIMPLE_FROM = re.compile(rb"[ \t]*(?:[\w .'-]*<[\w.+-]+@([\w.-]+)>|[\w.+-]+@([\w.-]+))[ \t]*\r\n")
_CRYPTO_HASHES = {"sha256": hashes.SHA256, "sha1": hashes.SHA1}
_INTERNAL = "internal error"


@dataclass(frozen=True)
class SignatureResult:
    """What became of one signature."""

    type: str  # "dkim" | "domainkeys"
    domain: str
    selector: str
    algorithm: str
    result: str  # one of RESULT_WORDS
    reason: str
    b: str = ""  # first 8 characters of b=, for header.b= (RFC 6008)
    identity: Optional[str] = None
    testing: bool = False
    key_bits: Optional[int] = None
    identity_source: Optional[str] = None  # DomainKeys: "from" | "sender", the field identity came from

    def as_json(self) -> dict:
        return {"type": self.type, "domain": self.domain, "selector": self.selector,
                "algorithm": self.algorithm, "result": self.result, "reason": self.reason}


@dataclass(frozen=True)
class VerificationReport:
    """Every signature's result, in header order (top first)."""

    results: Tuple[SignatureResult, ...] = ()
    not_checked: int = 0  # signatures beyond MaxSignatures
    author_domain: Optional[str] = None
    adsp: Optional[str] = None  # RFC 5617 result word when ADSP ran
    adsp_reason: Optional[str] = None
    unverified_reason: Optional[str] = None  # why the message as a whole was not verified
    arc: Optional[str] = None  # RFC 8617 chain result (pass / fail) when the message has ARC sets
    arc_reason: Optional[str] = None
    internal_error: Optional[str] = None  # a bug of ours cost a result: InternalErrorAction applies

    @property
    def passed(self) -> bool:
        return any(r.result == "pass" for r in self.results)


@dataclass
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
    signed_headers: List[bytes]
    body_hash: bytes
    signature: bytes
    identity: Optional[str]
    length: Optional[int]
    timestamp: Optional[int]
    expiry: Optional[int]


@dataclass
class _Display:
    """The tags shown in a result, taken as far as the header could be read."""

    domain: str = ""
    selector: str = ""
    algorithm: str = ""
    b: str = ""
    identity: Optional[str] = None
    testing: bool = False
    key_bits: Optional[int] = None
    filled: bool = False

    def read(self, value: bytes, tags: Optional[dict] = None) -> "_Display":
        """Take d=, s=, a=, b=, i= from the parsed tags, or with a regex from a header that did not parse."""
        found = tags if tags is not None else dict(
            re.findall(rb"(?:^|;)[ \t\r\n]*(d|s|a|b|i)[ \t\r\n]*=([^;]*)", value[:65536]))
        get = lambda tag: _text(found.get(tag, b"").strip(b" \t\r\n"))  # noqa: E731
        self.domain, self.selector, self.algorithm = get(b"d").lower(), get(b"s"), get(b"a").lower()
        self.b, self.identity = _text(found.get(b"b", b"")[:64].translate(None, _FWS), 8), get(b"i") or None
        self.filled = True
        return self


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


def parse_signature(name: bytes, value: bytes, tags: dict) -> Signature:
    """Check a DKIM-Signature's tags for syntax (RFC 6376 section 3.5); SignatureProblem if broken."""
    missing = [t.decode() + "=" for t in REQUIRED_TAGS if t not in tags]
    if missing:
        raise SignatureProblem("neutral", "required tag missing: " + ", ".join(missing))
    if tags[b"v"] != b"1":
        raise SignatureProblem("neutral", f"v={_text(tags[b'v'], 20)} is not a DKIM version (v=1)")
    algorithm = _text(tags[b"a"], 40).lower()
    if algorithm not in ALGORITHMS:
        raise SignatureProblem("neutral", f"a={algorithm} is not a known algorithm")
    key_type, hash_name = ALGORITHMS[algorithm]
    domain = tags[b"d"].decode("ascii", "replace").lower().rstrip(".")
    selector = tags[b"s"].decode("ascii", "replace").lower()
    if not DOMAIN.fullmatch(domain) or "." not in domain:
        raise SignatureProblem("neutral", f"d={domain[:60]} is not a domain name")
    if not DOMAIN.fullmatch(selector):
        raise SignatureProblem("neutral", f"s={selector[:60]} is not a selector")
    canon = _text(tags.get(b"c", b"simple/simple"), 40).lower()
    header_canon, _, body_canon = canon.partition("/")
    body_canon = body_canon or "simple"
    if header_canon not in ("simple", "relaxed") or body_canon not in ("simple", "relaxed"):
        raise SignatureProblem("neutral", f"c={canon} is not a canonicalization")
    if b"q" in tags and b"dns/txt" not in [q.strip().lower() for q in tags[b"q"].split(b":")]:
        raise SignatureProblem("neutral", f"q={_text(tags[b'q'], 40)} does not offer dns/txt")
    signed = [h.strip(b" \t\r\n") for h in tags[b"h"].split(b":")]
    if b"from" not in [h.lower() for h in signed]:
        raise SignatureProblem("neutral", "h= does not include From (RFC 6376 section 5.4)")
    identity = None
    if b"i" in tags:
        identity = tags[b"i"].decode("utf-8", "replace")
        local, at, idomain = identity.rpartition("@")
        idomain = idomain.lower().rstrip(".")
        if not at or not (idomain == domain or idomain.endswith("." + domain)):
            raise SignatureProblem("neutral", f"i={identity[:60]} is not in d={domain}")
    timestamp, expiry = _number(tags, b"t"), _number(tags, b"x")
    if timestamp is not None and expiry is not None and expiry <= timestamp:
        raise SignatureProblem("neutral", "x= (expiry) is not later than t= (signing time)")
    return Signature(name, value, domain, selector, algorithm, key_type, hash_name, header_canon,
                     body_canon, signed, _base64(tags, b"bh"), _base64(tags, b"b"), identity,
                     _number(tags, b"l"), timestamp, expiry)


def author_domain(headers: List[Header]) -> Optional[str]:
    """The domain of the one From address; None when there is no From or more than one author."""
    values = [v for n, v in headers if n.strip(b" \t").lower() == b"from"]
    if len(values) != 1 or len(values[0]) > 2000:
        return None
    simple = _SIMPLE_FROM.fullmatch(values[0])
    if simple:  # the usual "Name <a@b>" or "a@b": email.utils is slow, a third of a 3 KB verify
        domain = (simple.group(1) or simple.group(2)).decode("ascii", "replace").lower().rstrip(".")
    else:
        try:
            addresses = [a for _, a in email.utils.getaddresses([values[0].decode("utf-8", "replace")]) if a]
        except Exception:  # email.utils recurses per "(" and raises RecursionError on hostile input
            return None
        if len(addresses) != 1 or "@" not in addresses[0]:
            return None
        domain = addresses[0].rpartition("@")[2].strip().lower().rstrip(".")
    return domain if DOMAIN.fullmatch(domain) else None


class KeyCache:
    """Parsed key records by (selector, domain, record text): one parse per published key."""

    def __init__(self, size: int = 1024) -> None:
        self.size = size
        self._records: Dict[tuple, object] = {}

    def parse(self, selector: str, domain: str, txt: bytes) -> KeyRecord:
        entry = self._records.get((selector, domain, txt))
        if entry is None:
            try:
                entry = parse_key_record(txt)
            except KeyRecordError as exc:
                entry = exc
            if len(self._records) >= self.size:
                self._records.clear()
            self._records[(selector, domain, txt)] = entry
        if isinstance(entry, KeyRecordError):
            raise entry
        return entry


class Verifier:
    """Verifies messages with one Settings, one resolver and a key cache shared between messages."""

    def __init__(self, settings, resolver: TXTResolver, *, activity=None,
                 clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.options = settings.verification
        self.resolver = resolver
        self.activity = activity
        self.clock = clock
        self.keys = KeyCache()

    def verify(self, message: bytes) -> VerificationReport:
        """Check every signature of the received bytes; never raises on message content.

        A bug inside one signature's check makes that signature ``permerror``; anything
        else that escapes is a bug for the caller's InternalErrorAction.
        """
        report = self._verify(message)
        if self.activity is not None:
            self._record(message, report)
        return report

    def _verify(self, message: bytes) -> VerificationReport:
        limit = self.options.max_message_size
        if limit and len(message) > limit:
            reason = f"not verified: the message is {len(message)} bytes, over MaxMessageSize {limit}"
            return self._unverified(_header_block(message), "neutral", reason)
        message = to_crlf(message)
        try:
            headers, body = split_message(message)
        except MessageFormatError as exc:
            return self._unverified(message, "permerror", f"message format: {exc}")
        signatures = [(i, n, v) for i, (n, v) in enumerate(headers) if _kind(n)]
        cap = self.options.max_signatures
        resolver = BudgetedResolver(self.resolver, self.settings.dns.max_lookups_per_message)
        bodies: Dict[str, bytes] = {}
        results = tuple(self._check(n, v, headers, body, bodies, resolver, position=i)
                        for i, n, v in signatures[:cap])
        domain = author_domain(headers)
        adsp = reason = arc = arc_reason = None
        bugs = [r.reason for r in results if r.reason.startswith(_INTERNAL)]
        if self.options.adsp:
            try:
                adsp, reason = adsp_check.evaluate(domain, results, resolver)
            except Exception as exc:  # as for a signature: our bug must not cost the message
                log.exception("ADSP check of %s: internal error", domain)
                adsp, reason = "permerror", f"{_INTERNAL}: {type(exc).__name__}: {exc}"
                bugs.append(reason)
        if self.settings.lists.arc_verify and any(n.lower().strip() == b"arc-seal" for n, _ in headers):
            try:
                arc, arc_reason = arc_result(message, resolver, self.settings)
            except Exception as exc:  # as for ADSP: our bug must not cost the message
                log.exception("ARC check: internal error")
                arc, arc_reason = "fail", f"{_INTERNAL}: {type(exc).__name__}: {exc}"
                bugs.append(arc_reason)
        return VerificationReport(results, max(0, len(signatures) - cap), domain, adsp, reason,
                                  arc=arc, arc_reason=arc_reason, internal_error=bugs[0] if bugs else None)

    def _unverified(self, data: bytes, result: str, reason: str) -> VerificationReport:
        """A report for a message whose signatures cannot be checked: each one found gets ``reason``."""
        found = _lenient_headers(data)
        signatures = [(n, v) for n, v in found if _kind(n)]
        cap = self.options.max_signatures
        results = tuple(_result(_kind(n), _Display().read(v), result, reason) for n, v in signatures[:cap])
        return VerificationReport(results, max(0, len(signatures) - cap), author_domain(found),
                                  unverified_reason=reason)

    def _check(self, name: bytes, value: bytes, headers, body: bytes, bodies: dict,
               resolver, position: int) -> SignatureResult:
        kind = _kind(name)
        shown = _Display()
        try:
            if kind == "domainkeys":
                return self._check_domainkeys(value, headers, position, body, bodies, resolver, shown)
            word, reason = self._verify_signature(name, value, headers, body, bodies, resolver, shown)
        except SignatureProblem as problem:
            word, reason = problem.result, problem.reason
        except Exception as exc:  # a bug must cost one signature, not the message
            log.exception("DKIM signature d=%s s=%s: internal error", shown.domain, shown.selector)
            word, reason = "permerror", f"{_INTERNAL}: {type(exc).__name__}: {exc}"
        return _result(kind, shown if shown.filled else shown.read(value), word, reason)

    def _check_domainkeys(self, value: bytes, headers, position: int, body: bytes, bodies: dict,
                          resolver, shown: _Display) -> SignatureResult:
        try:
            tags = parse_tags(value)
        except ValueError:
            tags = None
        shown.read(value, tags)
        dk = verify_domainkeys(headers, position, body, resolver, min_key_bits=self.options.min_key_bits,
                               parse_key=self.keys.parse, bodies=bodies)
        return SignatureResult("domainkeys", shown.domain, shown.selector, shown.algorithm or "rsa-sha1",
                               dk.result, dk.reason, shown.b, dk.sender, dk.testing, dk.key_bits,
                               dk.sender_header)

    def _verify_signature(self, name, value, headers, body, bodies, resolver,
                          shown: _Display) -> Tuple[str, str]:
        try:
            tags = parse_tags(value)
        except ValueError as exc:
            raise SignatureProblem("neutral", f"malformed tag list: {exc}") from None
        shown.read(value, tags)
        sig = parse_signature(name, value, tags)
        now = int(self.clock())
        drift = self.options.clock_drift
        if sig.expiry is not None and now > sig.expiry + drift:
            raise SignatureProblem("permerror",
                                   f"signature expired {now - sig.expiry} s ago (x={sig.expiry})")
        record = self._key(sig, resolver)
        shown.testing, shown.key_bits = record.testing, record.bits()
        self._check_body(sig, body, bodies)
        self._check_signature(sig, headers, record)
        objections = self._objections(sig, record, body_length=len(bodies[sig.body_canon]), now=now)
        authors = sum(1 for n, _ in headers if n.strip(b" \t").lower() == b"from")
        if authors > 1:  # RFC 6376 8.15: a From added above the signed one would be shown as the author
            objections.append(f"the message has {authors} From fields (RFC 5322 allows one)")
        if objections:
            return "policy", "; ".join(objections)
        return "pass", f"good {sig.algorithm} signature, {record.bits()}-bit key" + (
            " in testing mode (t=y)" if record.testing else "")

    def _key(self, sig: Signature, resolver) -> KeyRecord:
        record, _ = fetch_key(sig.selector, sig.domain, resolver, self.keys.parse,
                              lookup_limit=self.settings.dns.max_lookups_per_message)
        if record.key_type != sig.key_type:
            raise SignatureProblem("permerror", f"key {key_name(sig.selector, sig.domain)} is "
                                   f"k={record.key_type}, which cannot check a={sig.algorithm}")
        return record

    @staticmethod
    def _check_body(sig: Signature, body: bytes, bodies: dict) -> None:
        if sig.body_canon not in bodies:
            bodies[sig.body_canon] = canon_body(body, sig.body_canon)
        canonical = bodies[sig.body_canon]
        if sig.length is not None:
            if sig.length > len(canonical):
                raise SignatureProblem("fail", f"l={sig.length} is longer than the body "
                                       f"({len(canonical)} bytes): the body was cut")
            canonical = canonical[:sig.length]
        if not hmac.compare_digest(hashlib.new(sig.hash_name, canonical).digest(), sig.body_hash):
            raise SignatureProblem("fail", "body hash mismatch: the body was changed after signing")

    @staticmethod
    def _check_signature(sig: Signature, headers, record: KeyRecord) -> None:
        method = sig.header_canon
        data = b"".join(canon_header(n, v, method) for n, v in select_headers(headers, sig.signed_headers))
        own = canon_header(sig.name, strip_b_value(sig.value), method)
        data += own[:-2] if own.endswith(b"\r\n") else own
        key = record.public_key()
        try:
            if isinstance(key, rsa.RSAPublicKey):
                size = (key.key_size + 7) // 8
                if len(sig.signature) != size:
                    raise SignatureProblem("fail", f"b= is {len(sig.signature)} bytes; a signature "
                                           f"by this {key.key_size}-bit key is {size}")
                key.verify(sig.signature, data, padding.PKCS1v15(), _CRYPTO_HASHES[sig.hash_name]())
            elif isinstance(key, ed25519.Ed25519PublicKey):
                if len(sig.signature) != 64:
                    raise SignatureProblem("fail", f"b= is {len(sig.signature)} bytes; an Ed25519 "
                                           "signature is 64")
                # RFC 8463: Ed25519 signs the SHA-256 hash of the data, not the data
                key.verify(sig.signature, hashlib.sha256(data).digest())
            else:
                raise SignatureProblem("permerror", "key is neither RSA nor Ed25519")
        except InvalidSignature:
            raise SignatureProblem("fail", "signature mismatch: a signed header was changed, "
                                   "or the key does not match") from None

    def _objections(self, sig: Signature, record: KeyRecord, *, body_length: int, now: int) -> List[str]:
        """Why local policy refuses a signature that verified (RFC 8301, key tags, l=, t=)."""
        options, found = self.options, []
        if sig.hash_name == "sha1" and not options.allow_sha1:
            found.append("rsa-sha1 is not accepted (RFC 8301)")
        if sig.key_type == "rsa" and record.bits() < options.min_key_bits:
            found.append(f"{record.bits()}-bit RSA key is under the {options.min_key_bits}-bit minimum "
                         "(RFC 8301)")
        if sig.length is not None and sig.length < body_length and not options.honor_body_length:
            found.append(f"l={sig.length} leaves {body_length - sig.length} body bytes unsigned")
        if record.hashes is not None and sig.hash_name not in record.hashes:
            found.append(f"key h={':'.join(record.hashes)} does not allow {sig.hash_name}")
        if not {"email", "*"} & set(record.services):
            found.append(f"key s={':'.join(record.services)} is not for email")
        if record.strict:
            idomain = (sig.identity or "@" + sig.domain).rpartition("@")[2].lower().rstrip(".")
            if idomain != sig.domain:
                found.append(f"key t=s requires the i= domain ({idomain}) to equal d={sig.domain}")
        if sig.timestamp is not None and sig.timestamp > now + options.clock_drift:
            found.append(f"t= is {sig.timestamp - now} s in the future")
        return found

    def _record(self, message: bytes, report: VerificationReport) -> None:
        found = re.search(rb"(?im)^message-id:[ \t]*(<[^>\r\n]{1,250}>)", message[:65536])
        self.activity.record(
            "verify", message_id=found.group(1).decode("ascii", "replace") if found else None,
            results=[{"d": r.domain, "s": r.selector, "a": r.algorithm, "result": r.result,
                      "reason": r.reason} for r in report.results],
            author_domain=report.author_domain, adsp=report.adsp)


def _kind(name: bytes) -> Optional[str]:
    name = name.strip(b" \t").lower()
    if name == b"dkim-signature":
        return "dkim"
    if name == b"domainkey-signature":
        return "domainkeys"
    return None


def _result(kind: str, shown: _Display, result: str, reason: str) -> SignatureResult:
    return SignatureResult(kind, shown.domain, shown.selector, shown.algorithm, result, reason,
                           shown.b, shown.identity, shown.testing, shown.key_bits)


def _header_block(message: bytes) -> bytes:
    end = re.search(rb"\r?\n\r?\n", message)
    return to_crlf(message[:end.end()] if end else message[:1 << 20])


def _lenient_headers(data: bytes) -> List[Header]:
    """Header fields of a message split_message refused: lines that are not fields are skipped."""
    head = data.split(b"\r\n\r\n", 1)[0]
    fields = []
    for item in re.split(rb"\r\n(?![ \t])", head):
        name, colon, value = item.partition(b":")
        if colon and name and re.fullmatch(rb"[\x21-\x39\x3b-\x7e]+[ \t]*", name):
            fields.append((name, value + b"\r\n"))
    return fields
