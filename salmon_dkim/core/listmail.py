"""Mailing-list mail: recognise it, strip the signatures the list will break, sign and seal.

A list that adds a subject tag or a footer breaks the author's DKIM
signature; MDaemon's answer, kept here, is ``[DomainKeys]
StripSigsFromListMail`` (remove them), ``SignListMail`` (sign the
redistributed post as the list's domain) and ``ARCSeal`` (record how the post
authenticated on arrival, RFC 8617).  No Salmon import: the list route in the
example project calls :func:`prepare_list_post` on the post it is about to send.
"""
from __future__ import annotations

import logging
import re
from typing import Iterable, Optional, Tuple, Union

from salmon_dkim.core.arc import ARCError, ARCSealer, arc_result, arrival_arc_result
from salmon_dkim.core.message import MessageFormatError, remove_fields, to_crlf
from salmon_dkim.config import Settings
from salmon_dkim.dns.resolver import TXTResolver

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
                      arrival_cv: Optional[str] = None) -> bytes:
    """The post as the list sends it: stripped, signed as ``list_domain``, sealed, as ``settings.lists`` says.

    ``signer`` is a :class:`salmon_dkim.core.signer.Signer`; ``sealer`` an :class:`ARCSealer` for the
    list's domain.  The seal's cv= is ``arrival_cv`` when given, else the arc= result our
    Authentication-Results recorded on arrival, else the chain checked now through ``resolver``.
    Apply the list's own changes (subject tag, footer, List-* fields) before calling this, and
    work out ``arrival_cv`` on the bytes as received if a footer may break the arriving chain.
    """
    message = to_crlf(message)
    lists = settings.lists
    sealing = lists.arc_seal and sealer is not None
    if sealing:  # the chain as it arrived: stripping signatures can break the last ARC-Message-Signature
        arrival_cv = arrival_cv or _arrival_cv(message, settings, sealer, resolver)
    if lists.strip_sigs_from_list_mail:
        message = strip_signatures(message)
    if lists.sign_list_mail and signer is not None:
        result = signer.sign(message, domain=list_domain)
        if result.unsigned_reason:
            log.warning("list post for %s not signed: %s", list_domain, result.unsigned_reason)
        message = result.message
    if sealing and arrival_cv == "temperror":
        log.warning("list post not ARC-sealed: the arriving chain could not be checked for now "
                    "(temporary DNS failure); sealing it cv=fail would break it for good")
        sealing = False
    if sealing:
        try:
            message = sealer.seal(message, arrival_cv, max_instances=lists.max_arc_instances)
        except (ARCError, MessageFormatError) as exc:
            log.warning("list post not ARC-sealed: %s", exc)
    return message


def _arrival_cv(message: bytes, settings: Settings, sealer: ARCSealer,
                resolver: Optional[TXTResolver]) -> Optional[str]:
    """arc= from our Authentication-Results, else the chain checked now (None: cannot tell)."""
    cv = arrival_arc_result(message, sealer.authserv_id)
    if cv is None and resolver is not None:
        cv = arc_result(message, resolver, settings)[0]
    return cv
