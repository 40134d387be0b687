"""Route decorators: ``@dkim_verify`` for inbound routes, ``@dkim_sign`` for outbound ones.

They stack with Salmon's own, below ``@route`` (and ``@stateless``), right
above the handler, keep its name and ``_salmon_settings``, and take the DKIM
context built at boot (:class:`salmon_dkim.salmon.context.DKIM`)::

    dkim = DKIM.from_config("config/salmon_dkim.ini")   # config/boot.py, or your handlers module

    @route("(address)@example\\.com", address=".+")
    @stateless
    @dkim_verify(dkim)
    def INBOUND(message, address=None):
        message.dkim            # the VerificationReport (None when skipped)
        message.Data            # received bytes + our Authentication-Results on top

    @route("(address)@(host)", address=".+", host=".+")
    @stateless
    @dkim_sign(dkim)
    def OUTBOUND(message, address=None, host=None):
        dkim_relay.deliver(message)   # a SigningRelay sends the signed bytes as they are

Bare ``@dkim_verify`` / ``@dkim_sign`` use the context installed with
:func:`salmon_dkim.salmon.context.install`, looked up when a message arrives.

Handlers find here what the decorators set: ``message.dkim`` (VerificationReport),
``message.dkim_outcome`` (policy Outcome), ``message.dkim_signed`` (SignResult); and
``message_bytes(message)``, the bytes to store or pass on.  ``message.session`` comes
from :mod:`salmon_dkim.salmon.receivers`; with Salmon's stock receivers it is worked
out from the peer address (no SMTP AUTH there).

``@dkim_sign`` signs only what earned it (``[Signing] SignFor``): mail from an
authenticated session (SMTP AUTH, AuthenticatedPeers), never a stranger's that claims
our domain in From; the rest goes on unsigned and the activity log says why.

Salmon turns any exception but SMTPError into "250 OK" and the undeliverable
queue; so a failure of our own code while verifying becomes 451 (or, with
``[Verification] InternalErrorAction = accept``, ``dkim=temperror``), and
while signing always 451: the client retries, nothing goes out unsigned.
"""
from __future__ import annotations

import functools
import logging
import time
from typing import Optional, Tuple

from salmon.server import SMTPError

from salmon_dkim.core import authres
from salmon_dkim.core.dmarc_report import activity_entries
from salmon_dkim.core.message import Message, MessageFormatError, prepend, remove_fields
from salmon_dkim.core.policy import decide, exempt, in_networks, may_sign
from salmon_dkim.core.results import InternalError, Outcome, Session  # noqa: F401 (Session: for handlers)
from salmon_dkim.core.signer import SignResult
from salmon_dkim.salmon import receivers
from salmon_dkim.salmon.receivers import edit_headers, message_bytes, replace_data, session_of

__all__ = ["dkim_verify", "dkim_sign", "apply_verification", "apply_signing",
           "message_bytes", "replace_data", "session_of"]  # message_bytes, replace_data: from receivers

LOG = logging.getLogger("salmon_dkim.salmon.decorators")

TEMPFAIL_TEXT = "4.3.0 DKIM processing failed; try again later"


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

def _ours_on_top(message, data: bytes, settings, header: bytes, score: Optional[float],
                 quarantine: bool = False) -> None:
    """Incoming fields that claim to be ours (A-R with our id, our score and quarantine headers) replaced by ours."""
    options, marker = settings.verification, settings.dmarc.quarantine_header
    claims = authres.claims_ours(options.authserv_id, [options.score_header, marker])
    top = [header] + ([f"{options.score_header}: {score:g}\r\n".encode("ascii")]
                      if options.score_header and score is not None else [])
    if quarantine and marker:
        top.append(f"{marker}: Yes\r\n".encode("ascii"))
    data = prepend(remove_fields(data, claims), b"".join(top))
    edit_headers(message, data, claims, top)


def _says_why_not_verified(readable: Message, session: Session, options) -> bool:
    """Whether mail that is not verified gets our header saying so (and loses fields claiming to be ours).

    Not when verification is off, and not from inside the trust boundary when a front server
    there already wrote our authserv-id: then its header is the verdict and stands.
    """
    if not options.enabled:
        return False
    if in_networks(session.peer_ip, options.trusted_ips):
        claims = authres.claims_ours(options.authserv_id)
        return not any(claims(b"authentication-results", v) for v in readable.values(b"authentication-results"))
    return True


def _clauses(session: Session):
    return [authres.auth_clause(session.user)] if session.authenticated and session.user else []


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
            message.dkim, message.dkim_outcome = None, decide(None, session, settings)
            if _says_why_not_verified(readable, session, options):
                header = authres.write(options.authserv_id, _clauses(session), comment=f"not verified: {skip}")
                _ours_on_top(message, data, settings, header, None)
            context.activity.record("skip-verify", direction="in", message_id=readable.message_id,
                                    account=session.user, peer=session.peer_ip, reason=skip)
            return
        started = time.perf_counter()
        report = context.verifier.verify(parsed or data, session)  # malformed: the verifier says why
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
            spf=report.spf.as_json() if report.spf else None, dmarc=report.dmarc.as_json() if report.dmarc else None,
            ms=round((time.perf_counter() - started) * 1000, 3))
        if report.dmarc is not None:
            for fields in activity_entries(report.dmarc, source_ip=session.peer_ip or "", dkim_results=report.results,
                                           spf_result=report.spf, envelope_to=receivers.recipient_domain(message)):
                context.activity.record("dmarc", direction="in", message_id=readable.message_id, **fields)
        if outcome.action in ("accept", "skip"):
            header = authres.header_for(options.authserv_id, report, _clauses(session))
            _ours_on_top(message, data, settings, header, outcome.score, outcome.quarantine)
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
        _ours_on_top(message, data, context.settings, header, 0.0)
    except Exception as failed:  # noqa: BLE001 (tempfail asked for, or accepting failed too)
        raise SMTPError(451, TEMPFAIL_TEXT) from (exc if isinstance(failed, InternalError) else failed)
    message.dkim = None
    message.dkim_outcome = Outcome("accept", None, "", 0.0, False, reason)


def dkim_verify(func=None, context=None):
    """Goes below @route/@stateless, above the handler: verify, annotate, 550/451 by policy.

    ``@dkim_verify``, ``@dkim_verify()`` or ``@dkim_verify(context)``.  The
    handler runs only for accepted (or exempt) mail; ``message.Data`` then
    starts with our Authentication-Results (incoming ones claiming our
    AuthservId removed) and the score header.  Exempt mail is not verified, and our
    header says so (``ID; (not verified: trusted IP 127.0.0.1) none``, or
    ``auth=pass smtp.auth=USER`` for an authenticated session).
    """
    return _decorator(apply_verification, func, context)


# -- signing --------------------------------------------------------------------

def apply_signing(message, context) -> None:
    """Sign ``message.Data`` as received, when the session earned it; the signed bytes become ``message.Data``.

    Sets ``message.dkim_signed`` (the SignResult), which tells a SigningRelay to send
    ``message.Data`` as it is.  A session that did not earn a signature (``[Signing]
    SignFor``), or a domain without a key: unsigned, and the activity log says why.
    Any failure, or a configured key that cannot be used: SMTPError 451.
    """
    try:
        session = session_of(message, context.settings)
        refused = may_sign(session, context.settings)
        if refused:
            LOG.info("not signing mail from %s: %s", session.peer_ip, refused)
            context.activity.record("unsigned", direction="out", peer=session.peer_ip,
                                    message_id=_parse(message_bytes(message))[1].message_id, reason=refused)
            message.dkim_signed = SignResult(message_bytes(message), (), refused)
            return
        sender = session.user or receivers.envelope_sender(message, session)
        original = message_bytes(message)
        result = context.signer.sign(original, sender=sender)
        if result.signatures:
            _put_on_top(message, result.message, original)
    except Exception as exc:  # noqa: BLE001 (never relay unsigned what should be signed)
        LOG.error("DKIM signing failed (%s: %s); answering 451", type(exc).__name__, exc,
                  exc_info=exc)
        raise SMTPError(451, TEMPFAIL_TEXT) from exc
    message.dkim_signed = result


def _put_on_top(message, signed: bytes, original: bytes) -> None:
    """``signed`` becomes the message: only fields were added on top, so the parse is edited, not redone."""
    added = signed[:len(signed) - len(original)]
    if not signed.endswith(original):  # line endings changed too
        replace_data(message, signed)
        return
    fields = [name + b":" + value for name, value in Message(added + b"\r\n").fields]
    edit_headers(message, signed, lambda name, value: False, fields)


def dkim_sign(func=None, context=None):
    """Goes below @route/@stateless, above the handler: sign the received bytes as they are.

    ``@dkim_sign``, ``@dkim_sign()`` or ``@dkim_sign(context)``.  Relay the
    message with a :class:`salmon_dkim.salmon.relay.SigningRelay`, which sends
    ``message.Data`` unchanged (Salmon's Relay would re-serialise it).  A
    handler that changes the message should not use it: the SigningRelay
    alone signs after the last change.
    """
    return _decorator(apply_signing, func, context)
