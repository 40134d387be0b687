"""ARC (RFC 8617): seal mail a list or a forwarder sends on, and verify the chain on mail that arrives.

An ARC set is three header fields with the same instance ``i=``: the
ARC-Authentication-Results (what this hop saw on arrival), the
ARC-Message-Signature (a DKIM-like signature over the message as sent) and
the ARC-Seal (a signature over every ARC set so far).  Built on
``salmon_dkim.core.canon`` and ``cryptography``; keys come from the zone or DNS
through a ``TXTResolver``, at most ``[DNS] MaxLookupsPerMessage`` per message.
"""
from __future__ import annotations

import base64
import hashlib
import re
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple, Union

from salmon_dkim.config import ListSettings, Settings
from salmon_dkim.core import crypto
from salmon_dkim.core.authres import AuthResError, Clause, authserv_id_of, clause_text, parse
from salmon_dkim.core.canon import body_hash, canon_header
from salmon_dkim.core.dkim import header_data, own_field, signature_field
from salmon_dkim.core.keyfetch import SignatureProblem, fetch_key
from salmon_dkim.core.keys import KeyRecordError, key_name, parse_key_record
from salmon_dkim.core.message import Header, Message, MessageFormatError, field_name
from salmon_dkim.core.tags import compact, fold, parse_tags
from salmon_dkim.dns.resolver import BudgetedResolver, TXTResolver

AAR, AMS, SEAL = b"arc-authentication-results", b"arc-message-signature", b"arc-seal"
ARC_FIELDS = (AAR, AMS, SEAL)
RFC_MAX_INSTANCES = 50  # RFC 8617 section 4.2.1

# What our ARC-Message-Signature covers, when present (never ARC-Seal, never A-R): [DomainKeys] ARCHeaders.
AMS_HEADERS = ListSettings().arc_headers

_INSTANCE = re.compile(rb"(?:^|;)[ \t\r\n]*i[ \t\r\n]*=[ \t\r\n]*([0-9]+)")
_CV = re.compile(rb"(?:^|;)[ \t\r\n]*cv[ \t\r\n]*=[ \t\r\n]*([A-Za-z]*)")
_HUGE = 10 ** 9  # stands for any longer i= digit string: int() refuses over 4300 digits


def _instance(digits: bytes) -> int:
    return int(digits) if len(digits) < 10 else _HUGE


class ARCError(Exception):
    """A message that cannot be sealed (too many ARC sets, an unchecked or already failed chain, no key)."""


@dataclass(frozen=True)
class ARCSet:
    instance: int
    aar: Header
    ams: Header
    seal: Header


class ARCTemporaryError(Exception):
    """A key of the chain could not be fetched for now (timeout, SERVFAIL): no verdict on the chain."""


class ARCChainError(ValueError):
    """The ARC chain on a message is broken; str() is the reason reported with arc=fail."""


def _name(header: Header) -> bytes:
    return field_name(header[0])


def arc_sets(headers: Sequence[Header]) -> List[ARCSet]:
    """The ARC sets, oldest first; ARCChainError when one is incomplete, doubled or out of sequence."""
    by_instance: Dict[int, Dict[bytes, Header]] = {}
    for header in headers:
        name = _name(header)
        if name not in ARC_FIELDS:
            continue
        match = _INSTANCE.search(header[1])
        if not match:
            raise ARCChainError(f"{header[0].decode('ascii', 'replace')} has no i= tag")
        instance = _instance(match.group(1))
        fields = by_instance.setdefault(instance, {})
        if name in fields:
            raise ARCChainError(f"two {header[0].decode('ascii', 'replace')} fields with i={instance}")
        fields[name] = header
    sets = []
    for expected, instance in enumerate(sorted(by_instance), start=1):
        if instance != expected:
            raise ARCChainError(f"ARC instances are not 1..N in sequence: i={expected} is missing")
        fields = by_instance[instance]
        missing = [n.decode() for n in ARC_FIELDS if n not in fields]
        if missing:
            raise ARCChainError(f"ARC set i={instance} has no {', '.join(missing)}")
        sets.append(ARCSet(instance, fields[AAR], fields[AMS], fields[SEAL]))
    return sets


def arc_instance_count(message: Union[bytes, Message]) -> int:
    """The highest ARC instance number on a message (0 when it has none)."""
    if not isinstance(message, Message):
        message = Message.parse(message)
    found = [_instance(m.group(1)) for h in _arc_fields(message) for m in [_INSTANCE.search(h[1])] if m]
    return max(found, default=0)


def _arc_fields(message: Message) -> List[Header]:
    """The ARC fields, top first, from the message's index (not a pass over every field)."""
    return [message.fields[i] for i in sorted(i for name in ARC_FIELDS for i in message.positions(name))]


def newest_seal_cv(message: Message) -> Optional[Tuple[int, str]]:
    """(instance, cv) of the ARC-Seal with the highest i=, read even from a chain that is malformed;
    None without one.  cv is lower case, "" when the seal has none."""
    newest = None
    for name, value in _arc_fields(message):
        if field_name(name) != SEAL:
            continue
        instance, cv = _INSTANCE.search(value), _CV.search(value)
        if instance and (newest is None or _instance(instance.group(1)) > newest[0]):
            newest = (_instance(instance.group(1)), _text(cv.group(1)).lower() if cv else "")
    return newest


def our_clauses(message: Union[bytes, Message], authserv_id: str) -> List[Clause]:
    """The results of every Authentication-Results field with our authserv-id, top first, read strictly.

    Forged ones were removed before ours were added, so all of them are this ADMD's, and the
    ARC-Authentication-Results records them together (RFC 8617 section 4.1.1; the ARC test suite's
    ar_merged cases).  A field that does not parse as RFC 8601 is not ours and gives nothing, nor
    does a message that cannot be parsed.
    """
    if not isinstance(message, Message):
        try:
            message = Message.parse(message)
        except MessageFormatError:
            return []
    ours = authserv_id.strip().rstrip(".").lower()
    found: List[Clause] = []
    for value in message.values(b"authentication-results"):
        if authserv_id_of(value) == ours:
            try:
                found += parse(value)[1]
            except AuthResError:
                continue
    return found


_AAR_INSTANCE = re.compile(rb"[ \t\r\n]*i[ \t\r\n]*=[ \t\r\n]*[0-9]+[ \t\r\n]*;")


def arrival_results(message: Message) -> List[Tuple[str, List[Clause]]]:
    """(sealer domain, results its ARC-Authentication-Results recorded), newest set first.

    Only for a chain that is well formed; an AAR that does not read as RFC 8601 gives no results.
    Whether the chain verifies is :func:`arc_result`'s question: ask it first.
    """
    try:
        sets = arc_sets(message.fields)
    except ARCChainError:
        return []
    found = []
    for arc_set in reversed(sets):
        try:
            sealer = _text(parse_tags(arc_set.seal[1]).get(b"d", b"")).lower().rstrip(".")
            clauses = parse(_AAR_INSTANCE.sub(b"", arc_set.aar[1], count=1))[1]
        except (ValueError, AuthResError):
            clauses = []
        found.append((sealer, clauses))
    return found


def arrival_arc_result(message: Union[bytes, Message], authserv_id: str) -> Optional[str]:
    """The arc= result our own Authentication-Results header recorded on arrival, if any."""
    for clause in our_clauses(message, authserv_id):
        if clause.method == "arc":
            return clause.result
    return None


def _chain_input(sets: Sequence[ARCSet]) -> bytes:
    """What the newest ARC-Seal signs before itself: older sets whole (AAR, AMS, AS), then its AAR and AMS."""
    fields = [f for s in sets[:-1] for f in (s.aar, s.ams, s.seal)] + [sets[-1].aar, sets[-1].ams]
    return b"".join(canon_header(name, value, "relaxed") for name, value in fields)


# --- sealing -------------------------------------------------------------------------------------

class ARCSealer:
    """Adds the next ARC set to messages, as ``domain`` with one key (RSA is what receivers expect)."""

    def __init__(self, domain: str, selector: str, key, authserv_id: str, *,
                 headers: Sequence[str] = AMS_HEADERS, clock=time.time) -> None:
        self.domain, self.selector, self.key = domain, selector, key
        self.authserv_id = authserv_id
        self.headers = tuple(h.lower() for h in headers)
        self.algorithm = crypto.SIGNING_ALGORITHM[key.algorithm]
        self.clock = clock

    def seal(self, message: bytes, cv: Optional[str] = None, *, results: Optional[str] = None,
             max_instances: int = RFC_MAX_INSTANCES) -> bytes:
        """The message with a new ARC set on top.

        ``cv`` is the chain as it arrived: "none", "pass" or "fail" (None: "none" when there is
        no chain).  ``results`` is the ARC-Authentication-Results text; by default the results of
        our own Authentication-Results fields.  ARCError when the message already has
        ``max_instances`` sets, ``cv`` is missing for a message that has a chain, or the newest
        ARC-Seal already says cv=fail: RFC 8617 section 5.1 adds nothing to a chain an earlier hop
        recorded as broken (a chain found broken *here* is sealed cv=fail, once).
        """
        msg = Message.parse(message)
        newest = newest_seal_cv(msg)
        if newest is not None and newest[1] == "fail":
            raise ARCError(f"the newest ARC-Seal (i={newest[0]}) already says cv=fail; a failed chain "
                           "is not continued (RFC 8617 section 5.1)")
        try:
            previous = arc_sets(msg.fields)
        except ARCChainError:
            previous, cv = [], "fail"
        instance = arc_instance_count(msg) + 1
        if instance > min(max_instances, RFC_MAX_INSTANCES):
            raise ARCError(f"the message already carries {instance - 1} ARC sets; "
                           f"MaxARCInstances is {max_instances}")
        if instance == 1:
            cv = "none"
        elif cv is None:
            raise ARCError("the message has an ARC chain that was not checked; give cv or a resolver")
        elif cv != "pass":
            cv = "fail"  # "none" past i=1 means the chain was not there on arrival: it is broken
        now = str(int(self.clock()))
        aar = self._aar(instance, msg, cv, results)
        ams = self._ams(instance, msg, now)
        new = ARCSet(instance, _split(aar), _split(ams), (b"ARC-Seal", b""))
        chain = ([] if cv == "fail" else previous) + [new]  # a failed chain: seal only our own set
        seal_tags = [("i", str(instance)), ("a", self.algorithm), ("t", now), ("cv", cv),
                     ("d", self.domain), ("s", self.selector)]
        seal = signature_field("ARC-Seal", seal_tags, (), _chain_input(chain), self.key, self.algorithm, "relaxed")
        return seal + ams + aar + msg.data

    def _aar(self, instance: int, msg: Message, cv: str, results: Optional[str]) -> bytes:
        texts = [r.strip() for r in results.split(";")] if results is not None else [
            clause_text(c) for c in our_clauses(msg, self.authserv_id)]
        if instance > 1 and not any(re.match(r"arc\s*=", t, re.IGNORECASE) for t in texts):
            texts.append(f"arc={cv}")
        texts = [t for t in texts if t] or ["none"]
        lines = [f"ARC-Authentication-Results: i={instance}; {self.authserv_id};"]
        for i, text in enumerate(texts):  # one result a line, long ones folded between words
            end = ";" if i < len(texts) - 1 else ""
            lines += fold("", [" " + word for word in (text + end).split(" ")])
        return "\r\n".join(lines).encode("utf-8") + b"\r\n"

    def _ams(self, instance: int, msg: Message, now: str) -> bytes:
        names = [h for h in self.headers if msg.count(h.encode("ascii"))]
        if "from" not in names:
            raise ARCError("the message has no From field to sign")
        digest, _ = body_hash(msg.data, "relaxed", start=msg.body_offset)
        data = header_data(msg.fields, [n.encode("ascii") for n in names], "relaxed")
        tags = [("i", str(instance)), ("a", self.algorithm), ("c", "relaxed/relaxed"),
                ("d", self.domain), ("s", self.selector), ("t", now),
                ("bh", base64.b64encode(digest).decode("ascii"))]
        return signature_field("ARC-Message-Signature", tags, names, data, self.key, self.algorithm, "relaxed")


def _split(field: bytes) -> Header:
    name, value = field.split(b":", 1)
    return name, value


def sealer_from_settings(settings: Settings, domain: Optional[str], keys, lifecycle=None) -> Optional[ARCSealer]:
    """A sealer as [DomainKeys] says, or None when no key is configured for the sealing domain.

    The domain (d=) is ``domain`` (a list's), else ``ARCDomain``, else ``[Signing] DefaultDomain``.
    The key: ``ARCSelector`` (its ``ARCKeyFile``, else KEYSDIR/DOMAIN/SELECTOR.key), else the first
    RSA key of the domain's [Domains] entry (or its only key); with the key ``lifecycle``
    (salmon_dkim.core.lifecycle.KeyLifecycle), the first active one: a key DNS does not publish
    yet seals nothing (None).  The AMS signs ``ARCHeaders``.  ``keys`` is the KeyStore: a key
    file that cannot be used raises KeyFileError (fail closed).
    """
    lists, signing = settings.lists, settings.signing
    default = signing.default.domain if signing.default else ""
    domain = (domain or lists.arc_domain or default).lower().rstrip(".")
    if not domain:
        return None
    options = dict(headers=lists.arc_headers)
    if lists.arc_selector:
        path = lists.arc_key_file or signing.keys_dir / domain / f"{lists.arc_selector}.key"
        return ARCSealer(domain, lists.arc_selector, keys.get(path), settings.verification.authserv_id, **options)
    entry = signing.domains.get(domain)
    if entry is None and default == domain:
        entry = signing.default
    if entry is None:
        return None
    usable = lifecycle.signing_keys(entry)[0] if lifecycle is not None else tuple(zip(entry.selectors,
                                                                                     entry.key_files))
    if not usable:
        return None
    loaded = [(sel, keys.get(path)) for sel, path in usable]
    selector, key = next(((s, k) for s, k in loaded if k.algorithm == "rsa"), loaded[0])
    return ARCSealer(entry.domain, selector, key, settings.verification.authserv_id, **options)


# --- verifying -----------------------------------------------------------------------------------

class _KeyFetcher:
    """Public keys by selector and domain, each looked up once per message."""

    def __init__(self, resolver: TXTResolver, min_bits: int) -> None:
        self.resolver, self.min_bits = resolver, min_bits
        self.found: Dict[str, object] = {}

    def get(self, selector: str, domain: str):
        name = key_name(selector, domain)
        if name not in self.found:
            try:
                record, _ = fetch_key(selector, domain, self.resolver, lambda s, d, txt: parse_key_record(txt))
                public = record.public_key()
            except SignatureProblem as problem:
                error = ARCTemporaryError if problem.result == "temperror" else ARCChainError
                raise error(problem.reason) from None
            except KeyRecordError as exc:
                raise ARCChainError(f"the key record at {name} is unusable: {exc}") from None
            if record.bits() < self.min_bits and record.key_type == "rsa":
                raise ARCChainError(f"the key at {name} has {record.bits()} bits, under {self.min_bits}")
            self.found[name] = public
        return self.found[name]


def _tags(header: Header, required: Sequence[bytes]) -> Dict[bytes, bytes]:
    label = f"{header[0].decode('ascii', 'replace')} i={_INSTANCE.search(header[1]).group(1).decode()}"
    try:
        tags = parse_tags(header[1])
    except ValueError as exc:
        raise ARCChainError(f"{label} is malformed: {exc}") from None
    missing = [t.decode() for t in required if t not in tags]
    if missing:
        raise ARCChainError(f"{label} has no {', '.join(missing)}= tag")
    return tags


def _text(value: bytes) -> str:
    return value.decode("ascii", "replace")


def _verify_ams(arc_set: ARCSet, msg: Message, keys: _KeyFetcher) -> None:
    tags = _tags(arc_set.ams, [b"i", b"a", b"b", b"bh", b"d", b"h", b"s"])
    label = f"ARC-Message-Signature i={arc_set.instance}"
    _algorithm(tags, label)  # before the body hash: an rsa-sha1 bh= would otherwise read as a changed body
    # no c=: DKIM's default, simple/simple (RFC 8617 4.1.2 gives the AMS DKIM-Signature's tags; RFC 6376 3.5)
    header_canon, _, body_canon = _text(tags.get(b"c", b"simple/simple")).partition("/")
    body_canon = body_canon or "simple"
    if header_canon not in ("relaxed", "simple") or body_canon not in ("relaxed", "simple"):
        raise ARCChainError(f"{label} has an unknown c= value")
    names = [n.strip() for n in compact(tags[b"h"]).split(b":")]
    if b"arc-seal" in (n.lower() for n in names):
        raise ARCChainError(f"{label} signs ARC-Seal, which RFC 8617 forbids")
    digest, _ = body_hash(msg.data, body_canon, start=msg.body_offset)
    if base64.b64encode(digest) != compact(tags[b"bh"]):
        raise ARCChainError(f"{label}: the body hash does not match (the body was changed)")
    data = header_data(msg.fields, names, header_canon) + own_field(*arc_set.ams, header_canon)
    _check(keys, tags, label, data)


def _chain_digests(sets: Sequence[ARCSet]) -> List[bytes]:
    """The SHA-256 digest each ARC-Seal signs (its _chain_input and its own field), oldest first.

    One running digest over the sets: each field is canonicalized and hashed once, where hashing
    each seal's input whole read every byte of a 50-set chain 25 times (190x sha256 per MiB).
    """
    running, digests = hashlib.sha256(), []
    for arc_set in sets:
        aar, ams = canon_header(*arc_set.aar, "relaxed"), canon_header(*arc_set.ams, "relaxed")
        signed = running.copy()
        signed.update(aar + ams + own_field(*arc_set.seal, "relaxed"))
        digests.append(signed.digest())
        running.update(aar + ams + canon_header(*arc_set.seal, "relaxed"))
    return digests


def _verify_seal(arc_set: ARCSet, digest: bytes, keys: _KeyFetcher) -> None:
    tags = _tags(arc_set.seal, [b"i", b"a", b"b", b"cv", b"d", b"s"])
    label = f"ARC-Seal i={arc_set.instance}"
    if b"h" in tags:
        raise ARCChainError(f"{label} has an h= tag, which RFC 8617 forbids")
    _check(keys, tags, label, digest, prehashed=True)


def _check(keys: "_KeyFetcher", tags: Dict[bytes, bytes], label: str, data: bytes, *,
           prehashed: bool = False) -> None:
    """ARCChainError unless b= verifies over ``data`` (its SHA-256 digest if ``prehashed``) with the key
    d= and s= name."""
    algorithm = _algorithm(tags, label)
    public = keys.get(_text(tags[b"s"]), _text(tags[b"d"]))
    try:
        crypto.verify(public, algorithm, _b64(tags[b"b"], label), data, prehashed=prehashed)
    except crypto.BadSignature:
        raise ARCChainError(f"{label} does not verify (d={_text(tags[b'd'])}, s={_text(tags[b's'])})") from None


def _algorithm(tags: Dict[bytes, bytes], label: str) -> str:
    """a=, when it is one ARC signs with: rsa-sha256 or ed25519-sha256 (rsa-sha1 is refused, RFC 8301 3.1)."""
    algorithm = _text(tags[b"a"]).lower()
    if algorithm not in ("rsa-sha256", "ed25519-sha256"):
        raise ARCChainError(f"{label}: a={algorithm[:30]} is not an ARC algorithm")
    return algorithm


def _b64(value: bytes, label: str) -> bytes:
    try:
        return base64.b64decode(compact(value), validate=True)
    except ValueError:
        raise ARCChainError(f"{label}: b= is not base64") from None


def _verify_chain(msg: Message, resolver: TXTResolver, settings: Settings) -> Tuple[str, str]:
    count = arc_instance_count(msg)
    if count == 0:
        return "none", "no ARC sets"
    cap = min(settings.lists.max_arc_instances, RFC_MAX_INSTANCES)
    if count > cap:
        return "fail", f"{count} ARC sets, more than MaxARCInstances ({cap})"
    sets = arc_sets(_arc_fields(msg))
    for arc_set in sets:
        cv = _text(_tags(arc_set.seal, [b"cv"])[b"cv"]).lower()
        wanted = "none" if arc_set.instance == 1 else "pass"
        if cv != wanted:
            raise ARCChainError(f"ARC-Seal i={arc_set.instance} has cv={cv}, not cv={wanted}")
    keys = _KeyFetcher(BudgetedResolver(resolver, settings.dns.max_lookups_per_message),
                       settings.verification.min_key_bits)
    _verify_ams(sets[-1], msg, keys)
    for arc_set, digest in reversed(list(zip(sets, _chain_digests(sets)))):  # newest first
        _verify_seal(arc_set, digest, keys)
    return "pass", f"{len(sets)} ARC set{'s' if len(sets) > 1 else ''} verified, " \
                   f"last sealed by {_text(_tags(sets[-1].seal, [b'd'])[b'd'])}"


def arc_result(message: Union[bytes, Message], resolver: TXTResolver, settings: Settings) -> Tuple[str, str]:
    """The ARC chain on a received message: ("pass" | "fail" | "none" | "temperror", reason) for arc= in A-R.

    "temperror": a key could not be fetched for now; the chain is neither good nor bad, and a
    sealer must not record cv=fail for it.

    Lookups go through ``resolver`` capped at ``[DNS] MaxLookupsPerMessage``; a chain longer
    than ``[DomainKeys] MaxARCInstances`` fails without lookups.  Never raises on message content.
    """
    try:
        return _verify_chain(message if isinstance(message, Message) else Message.parse(message), resolver,
                             settings)
    except ARCChainError as exc:
        return "fail", str(exc)
    except ARCTemporaryError as exc:
        return "temperror", str(exc)
    except MessageFormatError as exc:
        return "fail", f"the message cannot be parsed: {exc}"
