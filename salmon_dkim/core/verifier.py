"""Verify every signature of a message as received, and the message-level methods built on them.

Our own verifier over :mod:`salmon_dkim.core.dkim` with OpenSSL (through
``cryptography``) for RSA and Ed25519 (RFC 8463), because dkimpy is slow,
reports only the first signature, turns DNS timeouts into "no key" and lets
through what RFC 8301 and the key tags forbid.  Each signature gets an RFC
8601 result word and a reason a person can act on.  Nothing in a message makes
``Verifier.verify`` raise: a broken signature is ``neutral``, an unusable key
``permerror``, a DNS failure ``temperror``; a bug of ours is marked
``internal`` on the result it cost and reported as ``internal_error``.

The message is parsed once (:class:`~salmon_dkim.core.message.Message`), its
body canonicalized once per method for every signature that needs it, and DNS
asked at most ``[DNS] MaxLookupsPerMessage`` times.  DomainKey-Signature
(RFC 4870) headers are verified by :mod:`salmon_dkim.core.domainkeys`; ADSP
counts only DKIM passes.
"""
from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Set, Tuple, Union

from salmon_dkim.core import adsp as adsp_check
from salmon_dkim.core.arc import arc_result
from salmon_dkim.core.canon import body_hashes
from salmon_dkim.core.dkim import (CheckOptions, Signature, check_body, check_crypto, objections,
                                   parse_signature)
from salmon_dkim.core.domainkeys import verify_domainkeys
from salmon_dkim.core.keyfetch import SignatureProblem, fetch_key
from salmon_dkim.core.keys import KeyRecord, KeyRecordError, key_name, parse_key_record
from salmon_dkim.core.message import Message, MessageFormatError, field_name
from salmon_dkim.core.results import RESULT_WORDS, SignatureResult, VerificationReport
from salmon_dkim.core.tags import parse_tags
from salmon_dkim.dns.resolver import BudgetedResolver, TXTResolver

__all__ = ["Verifier", "KeyCache", "RESULT_WORDS", "SignatureResult", "VerificationReport"]

log = logging.getLogger(__name__)

_FWS = b" \t\r\n"
_SHOWN_TAGS = re.compile(rb"(?:^|;)[ \t\r\n]*(d|s|a|b|i)[ \t\r\n]*=([^;]*)")


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

    @classmethod
    def of(cls, value: bytes, tags: Optional[dict] = None) -> "_Display":
        """d=, s=, a=, b=, i= from the parsed tags, or with a regex from a header that did not parse."""
        found = tags if tags is not None else dict(_SHOWN_TAGS.findall(value[:65536]))
        get = lambda tag: _text(found.get(tag, b"").strip(_FWS))  # noqa: E731
        return cls(get(b"d").lower(), get(b"s"), get(b"a").lower(),
                   _text(found.get(b"b", b"")[:64].translate(None, _FWS), 8), get(b"i") or None)

    def result(self, kind: str, word: str, reason: str, internal: bool = False) -> SignatureResult:
        return SignatureResult(kind, self.domain, self.selector, self.algorithm, word, reason, self.b,
                               self.identity, self.testing, self.key_bits, internal=internal)


def _text(value: bytes, limit: int = 253) -> str:
    return value[:limit].decode("ascii", "replace")


def signature_kind(name: bytes) -> Optional[str]:
    """"dkim" for DKIM-Signature, "domainkeys" for DomainKey-Signature, else None."""
    name = field_name(name)
    if name == b"dkim-signature":
        return "dkim"
    if name == b"domainkey-signature":
        return "domainkeys"
    return None


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


class _BodyDigests:
    """Canonical body digests of one message: one pass per canonicalization, for every signature."""

    def __init__(self, message: Message) -> None:
        self.message = message
        self.wanted: Dict[str, Set[Tuple[str, Optional[int]]]] = {}
        self.found: Dict[str, Dict[Tuple[str, Optional[int]], bytes]] = {}

    def want(self, sig: Signature) -> None:
        self.wanted.setdefault(sig.body_canon, set()).add((sig.hash_name, sig.length))

    def get(self, sig: Signature) -> Tuple[bytes, int]:
        """(digest of the canonical body cut at l=, whole canonical length)."""
        method = sig.body_canon
        if method not in self.found:
            self.want(sig)
            self.found[method] = body_hashes(self.message.data, method, self.wanted[method],
                                             self.message.body_offset)
        digests = self.found[method]
        return digests[(sig.hash_name, sig.length)], int.from_bytes(digests[("length", None)], "big")


class Verifier:
    """Verifies messages with one Settings, one resolver and a key cache shared between messages."""

    def __init__(self, settings, resolver: TXTResolver, *, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.options = settings.verification
        self.check_options = CheckOptions(self.options.min_key_bits, self.options.allow_sha1,
                                          self.options.honor_body_length, self.options.clock_drift)
        self.resolver = resolver
        self.clock = clock
        self.keys = KeyCache()

    def verify(self, message: Union[bytes, Message]) -> VerificationReport:
        """Check every signature of the received bytes (or a parsed Message); never raises on content."""
        limit = self.options.max_message_size
        size = len(message.data if isinstance(message, Message) else message)
        if limit and size > limit:
            reason = f"not verified: the message is {size} bytes, over MaxMessageSize {limit}"
            return self._unverified(message, "neutral", reason)
        if not isinstance(message, Message):
            try:
                message = Message.parse(message)
            except MessageFormatError as exc:
                return self._unverified(message, "permerror", f"message format: {exc}")
        positions = sorted(message.positions(b"dkim-signature") + message.positions(b"domainkey-signature"))
        cap = self.options.max_signatures
        resolver = BudgetedResolver(self.resolver, self.settings.dns.max_lookups_per_message)
        parsed = {i: self._parse(message, i) for i in positions[:cap]}
        bodies = _BodyDigests(message)
        for sig in parsed.values():
            if isinstance(sig, Signature):
                bodies.want(sig)
        results = tuple(self._check(message, i, parsed[i], resolver, bodies) for i in positions[:cap])
        authors = message.authors
        bugs = [r.reason for r in results if r.internal]
        adsp = reason = arc = arc_reason = None
        if self.options.adsp:
            try:
                adsp, reason = adsp_check.evaluate(authors, results, resolver)
            except Exception as exc:  # as for a signature: our bug must not cost the message
                log.exception("ADSP check: internal error")
                adsp, reason = "permerror", f"internal error: {type(exc).__name__}: {exc}"
                bugs.append(reason)
        if self.settings.lists.arc_verify and message.count(b"arc-seal"):
            try:
                arc, arc_reason = arc_result(message, resolver, self.settings)
            except Exception as exc:  # as for ADSP: our bug must not cost the message
                log.exception("ARC check: internal error")
                arc, arc_reason = "fail", f"internal error: {type(exc).__name__}: {exc}"
                bugs.append(arc_reason)
        single = authors.single
        return VerificationReport(results, max(0, len(positions) - cap), single.domain if single else None,
                                  authors, adsp, reason, arc=arc, arc_reason=arc_reason,
                                  internal_error=bugs[0] if bugs else None)

    def _unverified(self, message: Union[bytes, Message], result: str, reason: str) -> VerificationReport:
        """A report for a message whose signatures cannot be checked: each one found gets ``reason``."""
        if not isinstance(message, Message):
            end = re.search(rb"\r?\n\r?\n", message)
            message = Message.parse(message[:end.end()] if end else message[:1 << 20], lenient=True)
        signatures = [(n, v) for n, v in message.fields if signature_kind(n)]
        cap = self.options.max_signatures
        results = tuple(_Display.of(v).result(signature_kind(n), result, reason) for n, v in signatures[:cap])
        authors = message.authors
        single = authors.single
        return VerificationReport(results, max(0, len(signatures) - cap), single.domain if single else None,
                                  authors, unverified_reason=reason)

    def _parse(self, message: Message, position: int):
        """A DKIM signature parsed (Signature), the problem that stops it (SignatureProblem), or None (DK)."""
        name, value = message.fields[position]
        if signature_kind(name) != "dkim":
            return None
        try:
            return parse_signature(name, value)
        except SignatureProblem as problem:
            return problem

    def _check(self, message: Message, position: int, parsed, resolver, bodies: _BodyDigests) -> SignatureResult:
        name, value = message.fields[position]
        kind = signature_kind(name)
        try:
            tags = parse_tags(value)
        except ValueError:
            tags = None
        shown = _Display.of(value, tags)
        try:
            if kind == "domainkeys":
                return self._check_domainkeys(message, position, resolver, shown)
            if isinstance(parsed, SignatureProblem):
                raise parsed
            word, reason = self._verify_signature(message, parsed, resolver, bodies, shown)
        except SignatureProblem as problem:
            word, reason = problem.result, problem.reason
        except Exception as exc:  # a bug must cost one signature, not the message
            log.exception("DKIM signature d=%s s=%s: internal error", shown.domain, shown.selector)
            return shown.result(kind, "permerror", f"internal error: {type(exc).__name__}: {exc}", internal=True)
        return shown.result(kind, word, reason)

    def _check_domainkeys(self, message: Message, position: int, resolver, shown: _Display) -> SignatureResult:
        dk = verify_domainkeys(message, position, resolver, min_key_bits=self.options.min_key_bits,
                               parse_key=self.keys.parse)
        return SignatureResult("domainkeys", shown.domain, shown.selector, shown.algorithm or "rsa-sha1",
                               dk.result, dk.reason, shown.b, dk.sender, dk.testing, dk.key_bits,
                               dk.sender_header)

    def _verify_signature(self, message: Message, sig: Signature, resolver, bodies: _BodyDigests,
                          shown: _Display) -> Tuple[str, str]:
        now = int(self.clock())
        if sig.expiry is not None and now > sig.expiry + self.options.clock_drift:
            raise SignatureProblem("permerror", f"signature expired {now - sig.expiry} s ago (x={sig.expiry})")
        record = self._key(sig, resolver)
        shown.testing, shown.key_bits = record.testing, record.bits()
        digest, length = bodies.get(sig)
        check_body(sig, digest, length)
        check_crypto(sig, message, record)
        found = objections(sig, record, message, self.check_options, body_length=length, now=now)
        if found:
            return "policy", "; ".join(found)
        return "pass", f"good {sig.algorithm} signature, {record.bits()}-bit key" + (
            " in testing mode (t=y)" if record.testing else "")

    def _key(self, sig: Signature, resolver) -> KeyRecord:
        record, _ = fetch_key(sig.selector, sig.domain, resolver, self.keys.parse,
                              lookup_limit=self.settings.dns.max_lookups_per_message)
        if record.key_type != sig.key_type:
            raise SignatureProblem("permerror", f"key {key_name(sig.selector, sig.domain)} is "
                                   f"k={record.key_type}, which cannot check a={sig.algorithm}")
        return record
