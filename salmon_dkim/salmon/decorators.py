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
import time
from typing import Optional, Tuple

from salmon.server import SMTPError

from salmon_dkim.core import authres
from salmon_dkim.core.message import Message, MessageFormatError, prepend
from salmon_dkim.salmon import receivers
from salmon_dkim.core.policy import decide, exempt, in_networks
from salmon_dkim.core.results import InternalError, Outcome, Session
from salmon_dkim.salmon.receivers import message_bytes, replace_data

__all__ = ["dkim_verify", "dkim_sign", "apply_verification", "apply_signing",
           "message_bytes", "replace_data", "session_of"]  # message_bytes, replace_data: from receivers

LOG = logging.getLogger("salmon_dkim.salmon.decorators")

TEMPFAIL_TEXT = "4.3.0 DKIM processing failed; try again later"


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


def _parse(data: bytes) -> Tuple[Optional[Message], Message]:
    """(the message parsed, or None when it is malformed; a lenient parse for the logs)."""
    try:
        parsed = Message(data)
        return parsed, parsed
    except MessageFormatError:
        return None, Message(data, lenient=True)


# -- verification ---------------------------------------------------------------

def _ours_on_top(data: bytes, options, header: bytes, score: float) -> bytes:
    """Incoming fields that claim to be ours (A-R with our id, our score header) replaced by ours."""
    data = authres.remove_ours(data, options.authserv_id, [options.score_header])
    if options.score_header:
        header += f"{options.score_header}: {score:g}\r\n".encode("ascii")
    return prepend(data, header)


def _header(options, report, session) -> bytes:
    extra = [authres.auth_clause(session.user)] if session.authenticated and session.user else []
    return authres.header_for(options.authserv_id, report, extra)


def apply_verification(message, context) -> None:
    """Verify ``message.Data``, annotate the message, raise SMTPError for reject/tempfail.

    Sets ``message.dkim`` (VerificationReport or None) and ``message.dkim_outcome``.
    """
    settings = context.settings
    options = settings.verification
    try:
        data = message_bytes(message)
        parsed, readable = _parse(data)
        session = session_of(message, settings)
        skip = exempt(session, settings)
        if skip:
            if options.enabled and not in_networks(session.peer_ip, options.trusted_ips):
                # not verified, yet from outside the trust boundary: headers claiming to be ours are forged
                unforged = authres.remove_ours(data, options.authserv_id, [options.score_header])
                if unforged is not data:
                    replace_data(message, unforged)
            message.dkim, message.dkim_outcome = None, decide(None, session, settings)
            context.activity.record("skip-verify", direction="in", message_id=readable.message_id,
                                    account=session.user, peer=session.peer_ip, reason=skip)
            return
        started = time.perf_counter()
        report = context.verifier.verify(parsed or data)  # malformed: the verifier says why (permerror)
        if report.internal_error:
            raise InternalError(report.internal_error)
        outcome = decide(report, session, settings)
        context.activity.record(
            "verify", direction="in", message_id=readable.message_id, peer=session.peer_ip,
            account=session.user or (readable.authors.single.address if readable.authors.single else None),
            author_domain=report.author_domain,
            results=[{"type": r.type, "d": r.domain, "s": r.selector, "a": r.algorithm, "result": r.result,
                      "reason": r.reason} for r in report.results],
            action=outcome.action, score=outcome.score, reason=outcome.reason,
            ms=round((time.perf_counter() - started) * 1000, 3))
        if outcome.action in ("accept", "skip"):
            replace_data(message, _ours_on_top(data, options, _header(options, report, session), outcome.score))
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
        context.activity.record("verify", direction="in", message_id=_parse(data)[1].message_id, results=[],
                                action="tempfail" if action == "tempfail" else "accept",
                                score=0.0, reason=reason)
        if action == "tempfail":
            raise InternalError(reason)
        # accept: say so in the message, as RFC 8601 dkim=temperror
        header = authres.write(options.authserv_id, [authres.Clause("dkim", "temperror", "internal error")])
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
