"""Route decorators: ``@dkim_verify`` for inbound routes, ``@dkim_sign`` for outbound ones.

They stack with Salmon's own, below ``@route`` (and ``@stateless``), right
above the handler, and keep its name and ``_salmon_settings``::

    @route("(address)@(host)", address=".+")
    @stateless
    @dkim_verify                 # or @dkim_verify(context) for another DKIM context
    def INBOUND(message, address=None, host=None):
        message.dkim            # the VerificationReport (None when skipped)
        message.Data            # received bytes + our Authentication-Results on top

    @route("(address)@(host)", address=".+")
    @stateless
    @dkim_sign
    def OUTBOUND(message, address=None, host=None):
        settings.relay.deliver(message)   # a SigningRelay sends the signed bytes as they are

Handlers also find here the attributes the decorators set: ``message.dkim``
(VerificationReport), ``message.dkim_outcome`` (policy Outcome),
``message.dkim_signed`` (SignResult); and ``message_bytes(message)``, the
bytes to store or pass on.

Bare decorators use the context installed at boot (:func:`salmon_dkim.salmon.context.install`),
looked up when a message arrives.  ``message.session`` comes from
:mod:`salmon_dkim.salmon.receivers`; with Salmon's stock receivers it is worked out
from the peer address.

Salmon turns any exception but SMTPError into "250 OK" and the undeliverable
queue; so a failure of our own code while verifying becomes 451 (or, with
``[Verification] InternalErrorAction = accept``, ``dkim=temperror``), and
while signing always 451: the client retries, nothing goes out unsigned.
"""
from __future__ import annotations

import email.utils
import functools
import logging
import re
from typing import Optional

from salmon.server import SMTPError

from salmon_dkim.core import authres as authresults
from salmon_dkim.salmon import receivers
from salmon_dkim.core.canon import remove_fields
from salmon_dkim.core.policy import decide, exempt, in_networks
from salmon_dkim.core.results import Outcome, Session
from salmon_dkim.salmon.receivers import message_bytes, replace_data

__all__ = ["dkim_verify", "dkim_sign", "apply_verification", "apply_signing",
           "message_bytes", "replace_data", "session_of"]  # message_bytes, replace_data: from receivers

LOG = logging.getLogger("salmon_dkim.salmon.decorators")

TEMPFAIL_TEXT = "4.3.0 DKIM processing failed; try again later"


class InternalError(Exception):
    """Our own code failed on a message (not the message's fault, not the handler's)."""


def session_of(message, settings) -> Session:
    """The receiver's session, or one worked out from ``message.Peer`` (stock Salmon receivers)."""
    session = getattr(message, "session", None)
    if session is not None:
        return session
    peer = getattr(message, "Peer", None)
    ip = peer[0] if isinstance(peer, tuple) and peer else None
    return Session(peer_ip=ip, authenticated=receivers.authenticated(
        ip, "mx", message_bytes(message), settings.verification))


def _context(explicit):
    if explicit is not None:
        return explicit
    from salmon_dkim.salmon import context as glue  # noqa: PLC0415 (glue imports the relay, which imports us)
    return glue.current()


def _decorator(wrap_message, func=None, context=None):
    """Shared shape: ``@deco``, ``@deco()`` and ``@deco(context)``."""
    if func is not None and not callable(func):
        func, context = None, func

    def decorate(handler):
        @functools.wraps(handler)
        def dkim_wrapper(message, *args, **kwargs):
            try:
                ctx = _context(context)
            except RuntimeError as exc:  # no context installed: a retry after the fix delivers it
                LOG.error("%s", exc)
                raise SMTPError(451, TEMPFAIL_TEXT) from exc
            wrap_message(message, ctx)
            return handler(message, *args, **kwargs)
        return dkim_wrapper

    return decorate(func) if func is not None else decorate


def _message_id(data: bytes) -> Optional[str]:
    found = re.search(rb"(?im)^message-id:[ \t]*(<[^>\r\n]{1,250}>)", data[:65536])
    return found.group(1).decode("ascii", "replace") if found else None


# -- verification ---------------------------------------------------------------

def _strip_fields(data: bytes, name: str) -> bytes:
    """Remove every header field called ``name`` (with its continuation lines)."""
    name_bytes = name.lower().encode("ascii")
    return remove_fields(data, lambda field, _value: field == name_bytes)


def _ours_on_top(data: bytes, options, authentication_results: str, score: float) -> bytes:
    """Incoming headers that claim to be ours (A-R with our id, our score header) replaced by ours."""
    data = authresults.remove_ours(data, options.authserv_id)
    if options.score_header:
        data = authresults.add_header_on_top(_strip_fields(data, options.score_header),
                                             f"{options.score_header}: {score:g}\r\n")
    return authresults.add_header_on_top(data, authentication_results) if authentication_results else data


def apply_verification(message, context) -> None:
    """Verify ``message.Data``, annotate the message, raise SMTPError for reject/tempfail.

    Sets ``message.dkim`` (VerificationReport or None) and ``message.dkim_outcome``.
    """
    settings = context.settings
    options = settings.verification
    try:
        data = message_bytes(message)
        session = session_of(message, settings)
        skip = exempt(session, settings)
        if skip:
            if options.enabled and not in_networks(session.peer_ip, options.trusted_ips):
                # not verified, yet from outside the trust boundary: headers claiming to be ours are forged
                unforged = authresults.remove_ours(data, options.authserv_id)
                if options.score_header:
                    unforged = _strip_fields(unforged, options.score_header)
                if unforged != data:
                    replace_data(message, unforged)
            message.dkim, message.dkim_outcome = None, decide(None, session, settings)
            context.activity.record("skip-verify", message_id=_message_id(data),
                                    peer=session.peer_ip, reason=skip)
            return
        report = context.verifier.verify(data)
        if report.internal_error:
            raise InternalError(report.internal_error)
        outcome = decide(report, session, settings)
        context.activity.record(
            "verify", message_id=_message_id(data), peer=session.peer_ip,
            results=[{"d": r.domain, "s": r.selector, "a": r.algorithm, "result": r.result,
                      "reason": r.reason} for r in report.results],
            action=outcome.action, score=outcome.score, reason=outcome.reason)
        if outcome.action in ("accept", "skip"):
            replace_data(message, _ours_on_top(
                data, options, authresults.authentication_results(options.authserv_id, report), outcome.score))
        message.dkim, message.dkim_outcome = report, outcome
    except Exception as exc:  # noqa: BLE001 (any failure of ours must not become Salmon's silent 250)
        _internal_error(message, context, exc)
        return
    _raise_for(outcome)


def _raise_for(outcome: Outcome) -> None:
    if outcome.action == "reject":
        error = receivers.RejectAndClose if outcome.close_connection else SMTPError
        raise error(outcome.code or 550, outcome.text or None)
    if outcome.action == "tempfail":
        raise SMTPError(outcome.code or 451, outcome.text or None)


def _internal_error(message, context, exc: Exception) -> None:
    options = context.settings.verification
    action = options.internal_error_action
    LOG.error("DKIM verification failed unexpectedly (%s: %s); InternalErrorAction = %s",
              type(exc).__name__, exc, action, exc_info=exc)
    reason = f"internal error: {type(exc).__name__}: {exc}"
    try:
        data = message_bytes(message)
        context.activity.record("verify", message_id=_message_id(data), results=[],
                                action="tempfail" if action == "tempfail" else "accept",
                                score=0.0, reason=reason)
        if action == "tempfail":
            raise InternalError(reason)
        # accept: say so in the message, as RFC 8601 dkim=temperror
        header = (f"Authentication-Results: {options.authserv_id};\r\n"
                  f"\tdkim=temperror reason=\"internal error\"\r\n")
        replace_data(message, _ours_on_top(data, options, header, 0.0))
    except Exception as failed:  # noqa: BLE001 (tempfail asked for, or accepting failed too)
        raise SMTPError(451, TEMPFAIL_TEXT) from (exc if isinstance(failed, InternalError) else failed)
    message.dkim = None
    message.dkim_outcome = Outcome("accept", None, "", 0.0, False, reason)


def dkim_verify(func=None, context=None):
    """Goes below @route/@stateless, above the handler: verify, annotate, 550/451 by policy.

    ``@dkim_verify``, ``@dkim_verify()`` or ``@dkim_verify(context)``.  The
    handler runs only for accepted (or exempt) mail; ``message.Data`` then
    starts with our Authentication-Results (incoming ones claiming our
    AuthservId removed) and the score header.  Exempt mail is not verified; from
    a peer outside TrustedIPs it still loses headers claiming our AuthservId.
    """
    return _decorator(apply_verification, func, context)


# -- signing --------------------------------------------------------------------

def apply_signing(message, context) -> None:
    """Sign ``message.Data`` as received; the signed bytes become ``message.Data``.

    Sets ``message.dkim_signed`` (the SignResult), which tells a SigningRelay
    to send ``message.Data`` as it is.  No key: unsigned, and the activity log
    says why.  Any failure: SMTPError 451.
    """
    try:
        # MailRequest.From is the From header ("Name <address>") when the envelope sender was null
        sender = email.utils.parseaddr(getattr(message, "From", None) or "")[1] or None
        result = context.signer.sign(message_bytes(message), sender=sender)
        replace_data(message, result.message)
    except Exception as exc:  # noqa: BLE001 (never relay unsigned what should be signed)
        LOG.error("DKIM signing failed (%s: %s); answering 451", type(exc).__name__, exc,
                  exc_info=exc)
        raise SMTPError(451, TEMPFAIL_TEXT) from exc
    message.dkim_signed = result


def dkim_sign(func=None, context=None):
    """Goes below @route/@stateless, above the handler: sign the received bytes as they are.

    ``@dkim_sign``, ``@dkim_sign()`` or ``@dkim_sign(context)``.  Relay the
    message with a :class:`salmon_dkim.salmon.relay.SigningRelay`, which sends
    ``message.Data`` unchanged (Salmon's Relay would re-serialise it).  A
    handler that changes the message should not use it: the SigningRelay
    alone signs after the last change.
    """
    return _decorator(apply_signing, func, context)
