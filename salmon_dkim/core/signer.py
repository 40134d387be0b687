"""Signing messages: the right keys for each message, at OpenSSL speed.

``Signer`` picks the keys for a message from the settings (an address-specific
sender selector, the author domain and its parents, a domain-keyed sender
selector, the default key), signs with each (:func:`salmon_dkim.core.dkim.make_signature`),
records what it did in the activity log and returns the CRLF message with the
signatures on top, byte for byte unchanged below them.  A key that is configured
but unusable is a :class:`SigningError` (answer 451), never mail sent unsigned.

Given a :class:`~salmon_dkim.core.lifecycle.KeyLifecycle`, only active keys sign:
a domain whose keys are all pending (or whose entry says ``Enabled = No``) is
signed with the shared default key instead, or goes unsigned saying why.
``SharedSignature = always`` adds the shared signature below the domain's own.
Without one, every configured key signs (the ``sign --key`` command, tests, tools).
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Callable, List, Optional, Tuple

from salmon_dkim.activity import ActivityLog
from salmon_dkim.config import DomainKeys, Settings
from salmon_dkim.core import crypto
from salmon_dkim.core.canon import body_hash
from salmon_dkim.core.dkim import header_data, make_signature, signed_names
from salmon_dkim.core.domainkeys import sign_domainkeys
from salmon_dkim.core.keys import KeyFileError, KeyStore, PrivateKey
from salmon_dkim.core.lifecycle import KeyLifecycle
from salmon_dkim.core.message import AddressError, Message, MessageFormatError, domain_name, field_name

log = logging.getLogger(__name__)

class SigningError(Exception):
    """Signing failed inside salmon-dkim: the message must not go out as if signed (answer 451)."""


@dataclass(frozen=True)
class SignatureInfo:
    domain: str
    selector: str
    algorithm: str  # "rsa-sha256" | "ed25519-sha256"; "rsa-sha1" for a DomainKey-Signature
    headers: Tuple[str, ...]  # the h= list, oversigned names included


@dataclass(frozen=True)
class SignResult:
    message: bytes  # CRLF bytes with the DKIM-Signature header(s) on top; the input unchanged if unsigned
    signatures: Tuple[SignatureInfo, ...]
    unsigned_reason: Optional[str] = None


# --- choosing keys and signing messages ------------------------------------------------------------

class _Unsigned(Exception):
    """Why a message goes out unsigned (not an error)."""


def _domain_of(address: str) -> str:
    """The domain of an address (IDNA A-labels, lower case), or "" when there is none."""
    domain = address.rpartition("@")[2]
    try:
        return domain_name(domain) if domain else ""
    except AddressError:
        return ""


class Signer:
    """Signs outbound messages as ``settings.signing`` says; keys read once from their files."""

    def __init__(self, settings: Settings, keys: Optional[KeyStore] = None,
                 activity: Optional[ActivityLog] = None, clock: Callable[[], float] = time.time,
                 lifecycle: Optional[KeyLifecycle] = None) -> None:
        self.settings = settings
        self.signing = settings.signing
        self.keys = keys if keys is not None else KeyStore(recheck_seconds=1.0)
        self.activity = activity if activity is not None else ActivityLog(settings.logging.activity_log)
        self.clock = clock
        self.lifecycle = lifecycle  # None: every configured key signs

    # key choice
    def choose_keys(self, author: Optional[str], sender: Optional[str] = None,
                    domain: Optional[str] = None) -> DomainKeys:
        """The keys to sign with, most specific first.

        A selector configured for the sender's own address or account (SpamExperts' per-user
        selectors); the forced or author domain in [Domains], then its parents that
        include subdomains; a selector configured for the sender's domain; the default key.
        """
        entry, why, _ = self._own_entry(author, sender, domain)
        if entry is not None:
            return entry
        if self.signing.default is not None:
            return self.signing.default
        raise _Unsigned(f"{why}, no default key")

    def _own_entry(self, author: Optional[str], sender: Optional[str],
                   domain: Optional[str]) -> Tuple[Optional[DomainKeys], str, bool]:
        """The message's own keys (sender selector or domain table), or None and why there are none;
        and whether the domain is one of ours (a disabled entry is)."""
        author_domain = _domain_of(author or "")
        if not domain:
            chosen = self._sender_keys(sender, author, author_domain, by_domain=False)
            if chosen is not None:
                return chosen, "", True
        wanted = domain.lower().rstrip(".") if domain else author_domain
        table = self.signing.domains
        entry = table.get(wanted)
        parts = wanted.split(".")
        for i in range(1, len(parts)):
            if entry is not None:
                break
            parent = table.get(".".join(parts[i:]))
            entry = parent if parent is not None and parent.include_subdomains else None
        if entry is not None:
            if not entry.enabled:
                return None, f"{entry.domain} does not sign ([Domains] [[{entry.domain}]] Enabled = No)", True
            return entry, "", True
        if not domain:
            chosen = self._sender_keys(sender, author, author_domain, by_domain=True)
            if chosen is not None:
                return chosen, "", True
        return None, f"no signing key for {wanted or 'the message'}: not in [Domains], no sender selector", False

    def _sender_keys(self, sender: Optional[str], author: Optional[str], author_domain: str, *,
                     by_domain: bool) -> Optional[DomainKeys]:
        # The sender is who sends (authenticated user, envelope); the author counts when it is unknown.
        for who in filter(None, (sender,) if sender and not by_domain else (sender, author)):
            who = who.lower()
            # an account name without a domain signs for the author's domain
            key_domain = _domain_of(who) if "@" in who else author_domain
            selector = self.signing.sender_selectors.get(key_domain if by_domain else who)
            if selector and key_domain:
                entry = self._sender_entry(key_domain, selector)
                if self.lifecycle is None or self.lifecycle.signing_keys(entry)[0]:
                    return entry  # a sender key still pending leaves the choice to the domain table
        return None

    def _sender_entry(self, key_domain: str, selector: str) -> DomainKeys:
        return DomainKeys(key_domain, (selector,), (self.signing.keys_dir / key_domain / f"{selector}.key",))

    def check_keys(self) -> List[str]:
        """Load every configured key (domains, sender selectors, default) now, at start-up.

        One line per problem.  With a lifecycle: the keys that sign now (pending ones are
        checked as their records are, and shown by salmon-dkim keys).
        """
        if self.lifecycle is not None:
            return self.lifecycle.unusable()
        entries = list(self.signing.domains.values()) + [self.signing.default] * bool(self.signing.default)
        entries += [self._sender_entry(_domain_of(who) or who, selector)
                    for who, selector in self.signing.sender_selectors.items() if "@" in who or "." in who]
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
        domain = _domain_of(address)
        return any(entry in (address, domain, "@" + domain) for entry in self.signing.skip_senders if entry)

    def _active(self, entry: DomainKeys) -> Tuple[Tuple[Tuple[str, "os.PathLike"], ...], str]:
        """(selector, key file) of the entry's keys that sign now, or () and why none does."""
        if self.lifecycle is None:
            return tuple(zip(entry.selectors, entry.key_files)), ""
        return self.lifecycle.signing_keys(entry)

    def _plan(self, author: Optional[str], sender: Optional[str],
              domain: Optional[str]) -> Tuple[List[Tuple[str, str, "os.PathLike"]], str]:
        """(d=, selector, key file) of each signature to make, the domain's own first; and, when the
        shared key stands in for keys the domain has but cannot use now, why."""
        own, why, ours = self._own_entry(author, sender, domain)
        plan = []
        if own is not None:
            keys, why = self._active(own)
            plan = [(own.domain, selector, path) for selector, path in keys]
        default = self.signing.default
        shared_too = self.signing.shared_signature == "always" and default is not None \
            and (own is None or default.domain != own.domain)  # the same domain's keys sign once
        if plan and not shared_too:
            return plan, ""
        if default is None:
            raise _Unsigned(f"{why}; no default key" if ours else f"{why}, no default key")
        shared, shared_why = self._active(default)
        if not shared and not plan:
            raise _Unsigned(f"{why}; the shared key cannot stand in: {shared_why}")
        if not shared:
            log.warning("mail of %s goes without the shared signature: %s", own.domain, shared_why)
        stood_in = why if ours and not plan else ""
        return plan + [(default.domain, selector, path) for selector, path in shared], stood_in

    def _load(self, plan: List[Tuple[str, str, "os.PathLike"]]) -> List[Tuple[str, str, PrivateKey]]:
        """Every key of the plan; a configured key that cannot be used fails closed (SigningError)."""
        loaded = []
        for domain, selector, path in plan:
            try:
                loaded.append((domain, selector, self.keys.get(path)))
            except KeyFileError as exc:
                log.error("DKIM key %s for %s cannot be used: %s; mail it would sign is refused (451)",
                          selector, domain, exc)
                raise SigningError(f"the signing key {selector} of {domain} cannot be used: {exc}") from None
        return loaded

    # signing
    def sign(self, message: bytes, *, sender: Optional[str] = None,
             domain: Optional[str] = None) -> SignResult:
        """The message signed with every key chosen for it, or unchanged with the reason it is not.

        ``sender``: the authenticated user or the envelope sender (sender selectors, SkipSenders).
        ``domain``: sign as this domain whatever the From header says (list mail).
        Raises SigningError for a failure inside salmon-dkim or a configured key that cannot be used.
        """
        message_id = None
        sender = sender.strip().strip("<>").strip() or None if sender else None  # "<>": a bounce
        started = time.perf_counter()
        try:
            msg = self._prepare(message)
            message_id = msg.message_id
            if self._skipped(sender):
                raise _Unsigned(f"sender {sender} is in SkipSenders")
            author = msg.authors.single
            if author is None and not domain:
                raise _Unsigned(f"no signing domain: {msg.authors.problem}")
            address = author.address if author else None
            if sender is None and self._skipped(address):
                raise _Unsigned(f"author {address} is in SkipSenders")
            plan, stood_in = self._plan(address, sender, domain)
            keys = self._load(plan)
            signatures, infos = self._sign(msg, keys)
        except _Unsigned as reason:
            self.activity.record("unsigned", direction="out", message_id=message_id, account=sender,
                                 reason=str(reason))
            return SignResult(message, (), str(reason))
        except SigningError as exc:
            self.activity.record("unsigned", direction="out", message_id=message_id, account=sender,
                                 reason=str(exc), action="tempfail")
            raise
        except Exception as exc:
            log.exception("DKIM signing failed for %s", message_id)
            raise SigningError(f"signing failed ({type(exc).__name__}: {exc})") from exc
        signed = b"".join(signatures) + msg.data
        own = [i for i in infos if i.domain == infos[0].domain]
        shared = {"shared_d": infos[-1].domain, "shared_s": ",".join(i.selector for i in infos[len(own):])} \
            if len(own) < len(infos) else {}
        if stood_in:
            shared["reason"] = f"signed with the shared key: {stood_in}"
        self.activity.record("sign", direction="out", message_id=message_id,
                             account=sender or address, d=infos[0].domain,
                             s=",".join(i.selector for i in own),
                             algorithm=",".join(i.algorithm for i in own),
                             headers=list(infos[0].headers), size=len(signed),
                             ms=round((time.perf_counter() - started) * 1000, 3), **shared)
        return SignResult(signed, tuple(infos), None)

    def _prepare(self, message: bytes) -> Message:
        if not self.signing.enabled:
            raise _Unsigned("signing is disabled ([Signing] Enabled = No)")
        limit = self.signing.max_message_size
        if limit and len(message) > limit:
            raise _Unsigned(f"message of {len(message)} bytes is over MaxMessageSize ({limit})")
        try:
            return Message.parse(message)
        except MessageFormatError as exc:
            raise _Unsigned(f"malformed message: {exc}") from None

    def _sign(self, msg: Message, keys: List[Tuple[str, str, PrivateKey]]) -> Tuple[List[bytes], List[SignatureInfo]]:
        """The DKIM signatures (``keys``: domain, selector, key; the domain's own first), then a
        DomainKey-Signature by the first domain when it asks for one (SignDomainKeys).

        The DomainKey-Signature goes directly above the message and the DKIM-Signatures above it:
        a DomainKey-Signature signs only the fields below it (RFC 4870 section 3.3), so it does not
        depend on the DKIM signatures, and the DKIM signature covers it only when [Signing] Headers
        lists DomainKey-Signature (RFC 6376 section 5.4 leaves that to the signer; by default not, so
        a receiver or list that strips the historic field leaves DKIM intact).
        """
        s = self.signing
        first = keys[0][0]
        dk = self._domainkey_signature(msg, first, [(sel, key) for d, sel, key in keys if d == first])
        if dk is not None:
            msg = Message.parse(dk[0] + msg.data)  # DKIM signs what lies below it, the DomainKey-Signature too
        names = signed_names(msg.fields, s.headers, s.oversign_headers)
        bh, length = body_hash(msg.data, s.body_canon, start=msg.body_offset)
        data = header_data(msg.fields, [n.encode("ascii") for n in names], s.header_canon)
        now = int(self.clock())
        signatures, infos = [], []
        for domain, selector, key in keys:
            signatures.append(make_signature(data, names, bh, length if s.body_length_tag else None, domain,
                                             selector, key, (s.header_canon, s.body_canon), now,
                                             s.expire_seconds))
            infos.append(SignatureInfo(domain, selector, crypto.SIGNING_ALGORITHM[key.algorithm], names))
        if dk is not None:
            signatures.append(dk[0])
            infos.append(dk[1])
        return signatures, infos

    def _domainkey_signature(self, msg: Message, domain: str, keys) -> Optional[Tuple[bytes, SignatureInfo]]:
        """A DomainKey-Signature with the domain's first RSA key, when its entry says SignDomainKeys.

        None when off, or when the sending address is not in ``domain`` (receivers would call it
        "bad identity"; the DKIM signature is made all the same).  SigningError when the domain
        has no RSA key: a configuration that cannot do what it says fails closed.
        """
        entry = self.signing.domains.get(domain)
        if entry is None and self.signing.default is not None and self.signing.default.domain == domain:
            entry = self.signing.default
        on, canon = (entry.sign_domainkeys, entry.domainkeys_canon) if entry is not None else (
            self.signing.sign_domainkeys, self.signing.domainkeys_canon)
        if not on:
            return None
        rsa = next(((selector, key) for selector, key in keys if key.algorithm == "rsa"), None)
        if rsa is None:
            raise SigningError(f"SignDomainKeys is on for {domain} but none of its selectors "
                               f"({', '.join(sel for sel, _ in keys)}) is an RSA key; DomainKeys signs with RSA "
                               "only: add an RSA selector or set SignDomainKeys = No")
        headers = self.signing.domainkeys_headers or None
        try:
            field = sign_domainkeys(msg, domain, rsa[0], rsa[1], canon, headers)
        except ValueError as exc:
            log.info("no DomainKey-Signature for %s: %s", msg.message_id, exc)
            return None
        wanted = None if headers is None else set(headers) | {"sender", "from"}
        names = tuple(name for name in (field_name(n).decode("ascii", "replace") for n, _ in msg.fields)
                      if wanted is None or name in wanted)
        return field, SignatureInfo(domain, rsa[0], "rsa-sha1", names)
