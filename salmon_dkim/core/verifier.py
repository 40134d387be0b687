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
from salmon_dkim.core.arc import arc_result, arrival_results
from salmon_dkim.core.dmarc import aligned, evaluate_dmarc
from salmon_dkim.core.canon import body_hashes
from salmon_dkim.core.dkim import (CheckOptions, Signature, check_body, check_crypto, objections,
                                   parse_signature)
from salmon_dkim.core.domainkeys import verify_domainkeys
from salmon_dkim.core.explain import explain_failure
from salmon_dkim.core.keyfetch import SignatureProblem, fetch_key
from salmon_dkim.core.keys import KeyRecord, KeyRecordError, key_name, parse_key_record
from salmon_dkim.core.message import Message, MessageFormatError, field_name
from salmon_dkim.core.policy import in_networks
from salmon_dkim.core.results import RESULT_WORDS, Session, SignatureResult, VerificationReport
from salmon_dkim.core.spf import check_spf
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

    def verify(self, message: Union[bytes, Message], session: Optional[Session] = None) -> VerificationReport:
        """Check every signature of the received bytes (or a parsed Message); never raises on content.

        With the ``session`` it came in on, also SPF (for a client that is not a trusted front
        server or an LMTP peer) and DMARC, as [SPF] and [DMARC] say.
        """
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
        for _, sig in parsed.values():
            if isinstance(sig, Signature):
                bodies.want(sig)
        checked = {i: self._check(message, i, parsed[i], resolver, bodies) for i in positions[:cap]
                   if signature_kind(message.fields[i][0]) == "dkim"}
        skip = self._domainkeys_skipped(checked.values())
        results = tuple(checked[i] if i in checked else self._check(message, i, parsed[i], resolver, bodies, skip)
                        for i in positions[:cap])
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
        spf = dmarc = None
        if session is not None:
            try:
                spf = self._spf(session, resolver)
                if self.settings.dmarc.enabled:
                    # DMARC makes at most two lookups per author domain: DKIM signatures cannot starve it
                    dmarc = evaluate_dmarc(authors.domains if authors.parsable else None, results, spf, self.resolver)
                    if dmarc.result == "fail" and arc == "pass":
                        dmarc = self._arc_override(dmarc, message)
            except Exception as exc:  # as for ADSP: our bug must not cost the message
                log.exception("SPF/DMARC check: internal error")
                bugs.append(f"internal error: {type(exc).__name__}: {exc}")
        single = authors.single
        return VerificationReport(results, max(0, len(positions) - cap), single.domain if single else None,
                                  authors, adsp, reason, arc=arc, arc_reason=arc_reason,
                                  internal_error=bugs[0] if bugs else None, spf=spf, dmarc=dmarc)

    def _spf(self, session: Session, resolver):
        """SPF for the client, when the session's peer is the client (not a trusted front server, not LMTP)."""
        if not self.settings.spf.enabled or not session.peer_ip or session.role == "lmtp":
            return None
        if in_networks(session.peer_ip, self.options.trusted_ips):
            return None
        return check_spf(session.peer_ip, session.mail_from or "", session.helo or "", resolver,
                         time_limit=self.settings.spf.time_limit)

    def _arc_override(self, dmarc, message: Message):
        """RFC 8617 7.2: a trusted sealer's intact chain recorded an aligned pass on arrival."""
        trusted = self.settings.dmarc.trusted_arc_sealers
        for sealer, clauses in arrival_results(message):
            if sealer not in trusted:
                continue
            for clause in clauses:
                domain = clause.prop("header", "d") if clause.method == "dkim" else (
                    clause.prop("header", "from") if clause.method == "dmarc" else
                    (clause.prop("smtp", "mailfrom") or "").rpartition("@")[2] if clause.method == "spf" else None)
                if clause.result == "pass" and domain and aligned(domain, dmarc.domain, "r"):
                    return dmarc.with_override(
                        "trusted_forwarder", f"arc=pass as.d={sealer} {clause.method}=pass {domain}")
        return dmarc

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
        """(tags or None when they do not parse, and for DKIM the Signature or the SignatureProblem)."""
        name, value = message.fields[position]
        try:
            tags = parse_tags(value)
        except ValueError as exc:
            return None, SignatureProblem("neutral", f"malformed tag list: {exc}")
        if signature_kind(name) != "dkim":
            return tags, None
        try:
            return tags, parse_signature(name, value, tags)
        except SignatureProblem as problem:
            return tags, problem

    def _domainkeys_skipped(self, dkim_results) -> Optional[str]:
        """Why DomainKey-Signatures are not checked, or None: VerifyDomainKeys is off, or a DKIM
        signature passed (MDaemon checks DomainKeys only for mail DKIM did not authenticate)."""
        if not self.options.verify_domainkeys:
            return "not checked: [Verification] VerifyDomainKeys = No"
        passed = next((r for r in dkim_results if r.result == "pass"), None)
        if passed is not None:
            return (f"not checked: the DKIM signature of {passed.domain} passed (DomainKeys is checked only "
                    "when no DKIM signature passes)")
        return None

    def _check(self, message: Message, position: int, parsed, resolver, bodies: _BodyDigests,
               domainkeys_skipped: Optional[str] = None) -> SignatureResult:
        name, value = message.fields[position]
        kind = signature_kind(name)
        tags, parsed = parsed
        shown = _Display.of(value, tags)
        try:
            if kind == "domainkeys":
                if domainkeys_skipped:  # "none" (RFC 8601: no result), no DNS lookup, a reason that says why
                    shown.algorithm = shown.algorithm or "rsa-sha1"
                    return shown.result(kind, "none", domainkeys_skipped)
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
        try:
            check_body(sig, digest, length)
            check_crypto(sig, message, record)
        except SignatureProblem as problem:  # the reason says what most likely changed (bounded, under 1 MiB)
            problem.reason = explain_failure(message, sig, record, problem.reason).short
            raise
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
