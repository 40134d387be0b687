"""Mail an intermediary sends on: list posts (strip, sign as the list, seal) and forwarded mail (seal).

A list that adds a subject tag or a footer breaks the author's DKIM
signature; MDaemon's answer, kept here, is ``[DomainKeys]
StripSigsFromListMail`` (remove them), ``SignListMail`` (sign the
redistributed post as the list's domain) and ``ARCSeal`` (record how the post
authenticated on arrival, RFC 8617).  An author whose domain publishes DMARC
``p=reject`` or ``p=quarantine`` would still fail DMARC at every large
receiver, so ``DMARCMitigation`` rewrites From to the list (Mailman's "munge
from") or wraps the post as a message/rfc822 attachment.  No Salmon import: the list route in the
example project calls :func:`prepare_list_post` on the post it is about to send.

Mail forwarded to an outside mailbox without list processing breaks SPF and, once anything changes it,
DKIM too; :func:`seal_forwarded` adds our ARC set (RFC 8617) recording how it authenticated on
arrival, which is what a receiver's DMARC override for forwarders looks at.
"""
from __future__ import annotations

import email.utils
import logging
import re
from typing import Iterable, Optional, Tuple, Union

from salmon_dkim.core.arc import ARCError, ARCSealer, arc_result, arrival_arc_result
from salmon_dkim.core.dmarc import published_policy
from salmon_dkim.core.message import Message, MessageFormatError, field_name, remove_fields, to_crlf
from salmon_dkim.config import Settings
from salmon_dkim.dns.resolver import DNSError, LookupLimitExceeded, TXTResolver

log = logging.getLogger(__name__)

SIGNATURE_FIELDS = (b"dkim-signature", b"domainkey-signature")

HeaderLike = Tuple[Union[bytes, str], object]


def is_list_mail(message: Union[bytes, Iterable[HeaderLike]]) -> bool:
    """Whether a message carries a List-Id header field (RFC 2919): message bytes or (name, value) pairs."""
    if isinstance(message, (bytes, bytearray)):
        head = to_crlf(bytes(message)).split(b"\r\n\r\n", 1)[0]
        if head.startswith(b"\r\n"):  # no header fields at all
            return False
        return re.search(rb"(?:^|\r\n)list-id[ \t]*:", head, re.IGNORECASE) is not None
    for name, _value in message:
        name = name if isinstance(name, bytes) else str(name).encode("ascii", "replace")
        if name.strip().lower() == b"list-id":
            return True
    return False


def strip_signatures(message: bytes) -> bytes:
    """The message without DKIM-Signature and DomainKey-Signature fields (folded ones whole).

    Every other byte is kept as it was (bare LF line ends become CRLF first).
    """
    return remove_fields(to_crlf(message), lambda name, _value: name in SIGNATURE_FIELDS)


def prepare_list_post(message: bytes, settings: Settings, list_domain: str, signer=None,
                      sealer: Optional[ARCSealer] = None, *, resolver: Optional[TXTResolver] = None,
                      arrival_cv: Optional[str] = None, list_address: Optional[str] = None,
                      mitigation: Optional[str] = None) -> bytes:
    """The post as the list sends it: stripped, signed as ``list_domain``, sealed, as ``settings.lists`` says.

    ``signer`` is a :class:`salmon_dkim.core.signer.Signer`; ``sealer`` an :class:`ARCSealer` for the
    list's domain.  The seal's cv= is ``arrival_cv`` when given, else the arc= result our
    Authentication-Results recorded on arrival, else the chain checked now through ``resolver``.
    Apply the list's own changes (subject tag, footer, List-* fields) before calling this, and
    work out ``arrival_cv`` on the bytes as received if a footer may break the arriving chain.

    ``mitigation`` ("munge_from", "wrap_message", "none"; default ``[DomainKeys] DMARCMitigation``)
    applies when the author's domain publishes DMARC p=reject or p=quarantine (looked up through
    ``resolver``; a lookup that fails for now counts as yes), with ``list_address`` as the new author
    (default: the address of the List-Post field).
    """
    message = to_crlf(message)
    lists = settings.lists
    sealing = lists.arc_seal and sealer is not None
    if sealing:  # the chain as it arrived: stripping signatures can break the last ARC-Message-Signature
        arrival_cv = arrival_cv or _arrival_cv(message, settings, sealer, resolver)
    if lists.strip_sigs_from_list_mail:
        message = strip_signatures(message)
    how = mitigation or lists.dmarc_mitigation
    if how != "none" and resolver is not None:
        message = mitigate_dmarc(message, how, list_address, resolver)
    if lists.sign_list_mail and signer is not None:
        result = signer.sign(message, domain=list_domain)
        if result.unsigned_reason:
            log.warning("list post for %s not signed: %s", list_domain, result.unsigned_reason)
        message = result.message
    if sealing:
        message = _sealed(message, settings, sealer, arrival_cv, "list post")
    return message


def seal_forwarded(message: bytes, settings: Settings, sealer: ARCSealer, *,
                   resolver: Optional[TXTResolver] = None, arrival_cv: Optional[str] = None) -> bytes:
    """Forwarded mail with our ARC set on top, or as it was (logged) when it must not be sealed.

    The ARC-Authentication-Results records our own Authentication-Results from arrival; cv= is
    ``arrival_cv``, else the arc= result that header recorded, else the chain checked now through
    ``resolver``.  Not sealed: a chain whose newest seal already says cv=fail (RFC 8617 section
    5.1), one that could not be checked for now, or past ``[DomainKeys] MaxARCInstances``.
    Sign the message (DKIM) before sealing it: the seal covers the message as sent.
    """
    message = to_crlf(message)
    cv = arrival_cv or _arrival_cv(message, settings, sealer, resolver)
    return _sealed(message, settings, sealer, cv, "forwarded message")


def _sealed(message: bytes, settings: Settings, sealer: ARCSealer, arrival_cv: Optional[str], what: str) -> bytes:
    """``message`` sealed with ``arrival_cv``; unchanged, with a warning in the log, when it cannot be."""
    if arrival_cv == "temperror":
        log.warning("%s not ARC-sealed: the arriving chain could not be checked for now "
                    "(temporary DNS failure); sealing it cv=fail would break it for good", what)
        return message
    try:
        return sealer.seal(message, arrival_cv, max_instances=settings.lists.max_arc_instances)
    except (ARCError, MessageFormatError) as exc:
        log.warning("%s not ARC-sealed: %s", what, exc)
        return message


def _arrival_cv(message: bytes, settings: Settings, sealer: ARCSealer,
                resolver: Optional[TXTResolver]) -> Optional[str]:
    """arc= from our Authentication-Results, else the chain checked now (None: cannot tell)."""
    cv = arrival_arc_result(message, sealer.authserv_id)
    if cv is None and resolver is not None:
        cv = arc_result(message, resolver, settings)[0]
    return cv


_LIST_POST = re.compile(r"<mailto:([^>?\s]+)")


def _list_address(msg: Message) -> Optional[str]:
    for value in msg.values(b"list-post"):
        found = _LIST_POST.search(value.decode("ascii", "replace"))
        if found:
            return found.group(1)
    return None


def strict_dmarc_author(msg: Message, resolver: TXTResolver) -> Optional[str]:
    """The author's domain when it publishes DMARC p=reject or p=quarantine (or its policy cannot be
    read for now), else None."""
    for domain in msg.authors.domains:
        try:
            policy = published_policy(domain, resolver)
        except LookupLimitExceeded:
            policy = None
        except DNSError:
            policy = "unknown"
        if policy in ("reject", "quarantine", "unknown"):
            return domain
    return None


def mitigate_dmarc(message: bytes, how: str, list_address: Optional[str], resolver: TXTResolver) -> bytes:
    """The post made deliverable for an author whose domain publishes a strict DMARC policy.

    ``munge_from``: From becomes "NAME via LIST" <list address> and the author goes into Reply-To
    (Mailman's way).  ``wrap_message``: the post travels as a message/rfc822 attachment of a message
    from the list.  Unchanged when the author's domain is not strict, or no list address is known.
    """
    try:
        msg = Message.parse(message)
    except MessageFormatError:
        return message  # not a message: it goes out unsigned, as the signer will say
    if strict_dmarc_author(msg, resolver) is None:
        return message
    address = list_address or _list_address(msg)
    if not address:
        log.warning("DMARC mitigation skipped: no list address (give list_address or a List-Post field)")
        return message
    author = msg.values(b"from")[0].strip().decode("utf-8", "replace") if msg.values(b"from") else ""
    name = email.utils.parseaddr(author)[0] or (msg.authors.mailboxes[0].local if msg.authors.mailboxes else "")
    list_name = address.partition("@")[0]
    new_from = _address_field("From", f"{name} via {list_name}" if name else list_name, address)
    if how == "wrap_message":
        return _wrap(msg, new_from, author)
    reply_to = msg.values(b"reply-to")
    value = reply_to[0].strip().decode("utf-8", "replace") + ", " + author if reply_to else author
    drop = {b"from", b"reply-to"}
    kept = remove_fields(msg.data, lambda n, v: n in drop)
    return new_from + b"Reply-To: " + value.encode("utf-8") + b"\r\n" + kept


_OUTER_FIELDS = (b"to", b"cc", b"subject", b"date", b"message-id", b"in-reply-to", b"references")


def _wrap(msg: Message, new_from: bytes, author: str) -> bytes:
    outer = [new_from, b"Reply-To: " + author.encode("utf-8") + b"\r\n"]
    outer += [n + b":" + v for n, v in msg.fields if field_name(n) in _OUTER_FIELDS
              or field_name(n).startswith(b"list-") or field_name(n) == b"precedence"]
    outer += [b"MIME-Version: 1.0\r\n", b"Content-Type: message/rfc822\r\n",
              b"Content-Disposition: inline\r\n"]
    return b"".join(outer) + b"\r\n" + msg.data


def _address_field(name: str, display: str, address: str) -> bytes:
    """``Name: "display" <address>`` with the display name encoded (RFC 2047) when it is not ASCII."""
    return f"{name}: {email.utils.formataddr((display, address), charset='utf-8')}\r\n".encode("ascii")
