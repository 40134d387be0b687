"""Salmon receivers on aiosmtpd: exact bytes, real sessions (STARTTLS, SMTP AUTH), LMTP.

Drop-in replacements for ``salmon.server.SMTPReceiver`` and ``LMTPReceiver``
that hand messages to ``salmon.routing.Router.deliver`` as Salmon's do::

    dkim = glue.install("config/salmon_dkim.ini")
    settings.receiver = Receivers(
        SMTPReceiver("0.0.0.0", 25, dkim=dkim),                        # role "mx"
        SMTPReceiver("0.0.0.0", 587, role="submission", dkim=dkim),    # STARTTLS, then AUTH
        LMTPReceiver(socket="/run/salmon/lmtp.sock", dkim=dkim))       # role "lmtp"

- ``message.Data`` is exactly the bytes the client sent: CRLF kept and
  dot-stuffing undone as RFC 5321 section 4.5.2 says (aiosmtpd with
  ``decode_data=False``: ``envelope.original_content``).  A DKIM signature
  covers those bytes, so nothing else will do.
- ``message.session`` is a :class:`salmon_dkim.core.results.Session`: peer IP,
  HELO/EHLO/LHLO name, role, the SMTP AUTH user, whether STARTTLS was used,
  the envelope sender ("" for ``<>``) and whether the session counts as
  authenticated (:func:`authenticated`).
- Submission (RFC 6409): STARTTLS with ``[Submission] TLSCertificate`` and
  ``TLSKey``; AUTH PLAIN and LOGIN only after it (``RequireTLSForAuth``);
  MAIL answered ``530 5.7.0`` until the client logged in (or is one of
  ``[Verification] AuthenticatedPeers``).  Users come from ``authenticator=``
  (a callable ``(user, password) -> bool``) or ``[Submission]
  CredentialsFile`` (:mod:`salmon_dkim.salmon.auth`); checking a password
  runs in a worker thread, never in the event loop.
- Replies: a handler's SMTPError as it is; :class:`RejectAndClose` closes the
  connection after its reply; 552 5.3.4 over the size limit; 451 4.3.0 when
  the session cannot be worked out; any other exception of a handler is
  Salmon's ``250`` plus the undeliverable queue.  SMTP refuses a second
  RCPT (one reply after DATA cannot say "delivered to one, refused by
  another"); LMTP (RFC 2033) replies once per recipient.

Threads.  One asyncio event loop, in one thread, serves every receiver of the
process: greetings, commands, TLS, AUTH and DATA of all sessions.  Handlers
run in a pool of ``[Submission] HandlerThreads`` threads (one pool per
process, sized by the first receiver started), so a slow handler does not stop
other sessions.  What is safe: Salmon's ``Router.deliver`` still holds
``Router.call_lock`` around every handler not marked ``@nolocking``, so such
handlers run one at a time, as in Salmon (the pool then keeps only the
sessions moving).  A ``@stateless @nolocking`` handler runs alongside others;
salmon-dkim's decorators, signer, verifier, key store, DNS cache and activity
log may be used from several threads.  Salmon's ``MemoryStorage`` state store
is not thread-safe: state handlers should keep the lock.

``salmon start`` calls ``settings.receiver.start()`` in its main thread and
returns; the loop thread (not a daemon) keeps the process alive.  Started
from the main thread, :class:`Receivers` turns SIGTERM and SIGHUP (``salmon
stop``) into a clean stop, when nothing else handles them: listeners close,
running handlers finish (10 s at most), idle sessions get ``421``.

Also here, as the receivers make MailRequests: :func:`message_bytes`,
:func:`replace_data` and :func:`headers_changed` keep ``message.Data`` and
the parsed message in step for the decorators and the relay.
"""
from __future__ import annotations

import asyncio
import binascii
import concurrent.futures
import email.utils
import logging
import os
import queue
import re
import signal
import socket as socket_module
import ssl
import stat
import threading
from base64 import b64decode
from typing import Callable, List, Optional, Sequence, Tuple

from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import MISSING, SMTP, AuthResult
from salmon import encoding, mail, routing
from salmon import server as salmon_server

from salmon_dkim.config import ConfigError, Settings
from salmon_dkim.core.message import to_crlf
from salmon_dkim.core.policy import in_networks
from salmon_dkim.core.results import Session
from salmon_dkim.salmon.auth import Authenticator, CredentialsError, CredentialsFile

LOG = logging.getLogger("salmon_dkim.salmon.receivers")

ROLES = ("mx", "submission", "lmtp")
DATA_SIZE_DEFAULT = 33554432  # as Salmon's receivers (smtpd.DATA_SIZE_DEFAULT)
MAX_AUTH_FAILURES = 3  # then the connection is closed: guessing passwords costs a reconnect
STOP_SECONDS = 10.0  # how long a stop waits for running handlers
AUTH_THREADS = 2  # password checks (Argon2 is CPU-bound; the machine's cores bound it anyway)

TEMPFAIL_REPLY = "451 4.3.0 Temporary failure; try again later"
MULTIPLE_RCPT_REPLY = "451 4.5.3 Will not accept multiple recipients in one transaction"
# aiosmtpd's own replies at the end of DATA, with enhanced codes; LMTP sends them once per recipient
_DATA_REFUSALS = {
    "552 Error: Too much mail data": "552 5.3.4 Error: Too much mail data",
    "500 Line too long (see RFC5321 4.5.3.1.6)": "500 5.5.2 Line too long (RFC 5321 section 4.5.3.1.6)",
}


class RejectAndClose(salmon_server.SMTPError):
    """An SMTPError after whose reply the receiver closes the connection."""


# -- MailRequest: its bytes and its parsed form ------------------------------------

def message_bytes(message) -> bytes:
    """``message.Data`` as CRLF bytes (a queue may hand Salmon str or LF-only text)."""
    data = message.Data
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogateescape")
    return to_crlf(data)


def _header_fields(message) -> list:
    return list(message.base.mime_part.items())


def replace_data(message, data: bytes) -> None:
    """Make ``data`` the message: ``message.Data`` and the parsed headers/body agree again."""
    message.Data = data
    if not hasattr(message, "base"):
        return
    base = encoding.from_string(data)
    # as MailRequest.__init__ does
    if "from" not in base and getattr(message, "From", None):
        base["from"] = message.From
    if "to" not in base and getattr(message, "To", None):
        base["to"] = message.To
    message.base = base
    message._parsed_fields = _header_fields(message)


def envelope_sender(message, session=None) -> Optional[str]:
    """The envelope sender (MAIL FROM) of a received message; None for the null sender <>.

    Salmon's MailRequest.From is the From header when the envelope sender was null, so the
    session's ``mail_from`` is the one to trust when a receiver of ours made it.
    """
    if session is not None and session.mail_from is not None:
        return session.mail_from or None
    return email.utils.parseaddr(getattr(message, "From", None) or "")[1] or None


def recipient_domain(message) -> Optional[str]:
    """The domain of the envelope recipient (RCPT TO) of a received message, for DMARC reports."""
    to = getattr(message, "To", None) or ""
    return email.utils.parseaddr(to)[1].rpartition("@")[2].lower() or None


def edit_headers(message, data: bytes, drop: Callable[[bytes, bytes], bool], top: Sequence[bytes] = ()) -> None:
    """Make ``data`` the message, where ``data`` is ``message.Data`` with the fields ``drop(name, value)``
    removed (name lower case, as bytes) and the fields ``top`` (whole, CRLF-terminated) put above.

    The parsed headers handlers read are edited the same way, without parsing the message
    again (Salmon's parse of a large message costs more than verifying it).
    """
    message.Data = data
    mime = getattr(getattr(message, "base", None), "mime_part", None)
    headers = getattr(mime, "_headers", None)
    if not isinstance(headers, list):  # not parsed as Salmon parses: parse the new bytes
        if hasattr(message, "base"):
            replace_data(message, data)
        return
    added = []
    for field in top:
        name, _, value = field.decode("utf-8", "surrogateescape").partition(":")
        added.append((name, value.lstrip(" \t").rstrip("\r\n")))
    kept = [(n, v) for n, v in headers
            if not drop(n.strip().lower().encode("utf-8", "surrogateescape"), v.encode("utf-8", "surrogateescape"))]
    mime._headers = added + kept
    if hasattr(message, "_parsed_fields"):
        message._parsed_fields = _header_fields(message)


def request(peer, mailfrom, rcpt, data: bytes) -> mail.MailRequest:
    """A MailRequest that remembers its parsed header fields (see :func:`headers_changed`)."""
    message = mail.MailRequest(peer, mailfrom, rcpt, data)
    message._parsed_fields = _header_fields(message)
    return message


def headers_changed(message: mail.MailRequest) -> bool:
    """Whether a handler changed the headers through the MailRequest (``message["X"] = ...``) since
    ``message.Data`` was parsed; then ``str(message)``, not ``Data``, is what it means to send."""
    before = getattr(message, "_parsed_fields", None)
    if before is None:  # made elsewhere (Salmon's receivers, a queue): parse Data again
        before = _header_fields(mail.MailRequest(message.Peer, message.From, message.To, message.Data))
    return _header_fields(message) != before


# -- who sent it ----------------------------------------------------------------------

def _has_header(data: bytes, name: str) -> bool:
    end = re.search(rb"\r?\n\r?\n", data)
    head = data[:end.start() + 1] if end else data
    pattern = rb"(?im)^" + re.escape(name.encode("ascii", "replace")) + rb"[ \t]*:[ \t]*\S"
    return re.search(pattern, head) is not None


def authenticated(peer_ip: Optional[str], role: str, data: bytes, verification=None, *,
                  user: Optional[str] = None) -> bool:
    """Whether a session counts as authenticated.

    Yes when SMTP AUTH succeeded (``user``), for a peer in AuthenticatedPeers, and
    for a message carrying AuthenticatedHeader (set by a front MTA) from a peer in
    TrustedIPs; from any other peer that header is ignored, as anyone can write it.
    The listener's ``role`` alone never counts (a submission port is open to anyone
    who reaches it); the parameter stays for callers written when it did.
    """
    if user:
        return True
    if verification is None:
        return False
    if in_networks(peer_ip, verification.authenticated_peers):
        return True
    header = verification.authenticated_header
    if header and _has_header(data, header):
        if in_networks(peer_ip, verification.trusted_ips):
            return True
        LOG.warning("ignoring %s header from untrusted peer %s", header, peer_ip)
    return False


def session_of(message, settings) -> Session:
    """The receiver's session, or one worked out from ``message.Peer`` (stock Salmon receivers)."""
    session = getattr(message, "session", None)
    if session is not None:
        return session
    peer = getattr(message, "Peer", None)
    ip = peer[0] if isinstance(peer, tuple) and peer else None
    return Session(peer_ip=ip, authenticated=authenticated(
        ip, "mx", message_bytes(message), settings.verification))


def _reply_line(text: str) -> str:
    """One ASCII reply line: anything else would break the client's parser or the encoding of push()."""
    return re.sub(r"[^\x20-\x7e]", "?", text)


def _peer_ip(peer) -> Optional[str]:
    return peer[0] if isinstance(peer, tuple) and peer else None


def _b64(text: str) -> Optional[bytes]:
    try:
        return b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        return None


class _LoginDataDeprecation(logging.Filter):
    """aiosmtpd warns about its own deprecated ``Session.login_data`` at every successful AUTH."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "login_data is deprecated" not in str(record.msg)


logging.getLogger("mail.log").addFilter(_LoginDataDeprecation())


# -- the protocol: aiosmtpd's, with our replies, AUTH off the loop and close-after-reject

class _ReceiverProtocol:
    """Mixed into aiosmtpd's SMTP and LMTP: one instance per connection."""

    def __init__(self, receiver: "_Receiver", **kwargs) -> None:
        self.receiver = receiver
        self.close_after_reply = False
        self._auth_failures = 0
        self._in_data = False
        super().__init__(receiver.delivery, **kwargs)

    def replies_per_message(self) -> int:
        """Replies the client waits for after DATA: one for SMTP."""
        return 1

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self.receiver.sessions.add(self)

    def connection_lost(self, error) -> None:
        self.receiver.sessions.discard(self)
        super().connection_lost(error)

    async def push(self, status) -> None:
        if isinstance(status, str):
            if self._in_data and status in _DATA_REFUSALS:
                status = "\r\n".join([_DATA_REFUSALS[status]] * self.replies_per_message())
            status = "\r\n".join(_reply_line(line) for line in status.split("\r\n"))
        await super().push(status)

    async def smtp_DATA(self, arg) -> None:
        self._in_data = True
        try:
            await super().smtp_DATA(arg)
        finally:
            self._in_data = False
        if self.close_after_reply and self.transport is not None:
            LOG.info("closing the connection from %r after a reject", self.session.peer)
            self.transport.close()

    def _may_send_mail(self) -> bool:
        """Logged in, or a peer the INI file trusts as authenticated."""
        return bool(self.session.authenticated) or in_networks(
            _peer_ip(self.session.peer), self.receiver.verification.authenticated_peers)

    async def check_auth_needed(self, caller_method: str) -> bool:
        if self._auth_required and not self._may_send_mail():
            await self.push("530 5.7.0 Authentication required")
            return True
        return False

    async def smtp_AUTH(self, arg) -> None:
        if self.receiver.authenticator is None:
            await self.push("502 5.5.1 AUTH is not offered here")
            return
        await super().smtp_AUTH(arg)
        if self._auth_failures >= MAX_AUTH_FAILURES and self.transport is not None:
            await self.push("421 4.7.0 Too many failed logins; closing the connection")
            self.transport.close()

    async def auth_PLAIN(self, _, args: List[str]) -> AuthResult:
        """RFC 4616: authzid NUL authcid NUL password, in the command or after an empty challenge."""
        if len(args) == 1:
            blob = await self.challenge_auth("")
            if blob is MISSING:  # challenge_auth has replied
                return AuthResult(success=False)
        else:
            blob = _b64(args[1])
            if blob is None:
                await self.push("501 5.5.2 Cannot decode base64")
                return AuthResult(success=False)
        parts = blob.split(b"\0")
        if len(parts) != 3:
            await self.push("501 5.5.2 Cannot split the AUTH PLAIN value")
            return AuthResult(success=False)
        authzid, login, password = parts
        if authzid and authzid != login:  # acting for another user is not offered
            self._auth_failures += 1
            return AuthResult(success=False, handled=False)
        return await self._check_password(login, password)

    async def auth_LOGIN(self, _, args: List[str]) -> AuthResult:
        """The LOGIN mechanism: user name, then password, each base64 after a challenge."""
        if len(args) == 1:
            login = await self.challenge_auth("Username:")
        else:
            login = _b64(args[1])
            if login is None:
                await self.push("501 5.5.2 Cannot decode base64")
                return AuthResult(success=False)
        if login is MISSING:
            return AuthResult(success=False)
        password = await self.challenge_auth("Password:")
        if password is MISSING:
            return AuthResult(success=False)
        return await self._check_password(login, password)

    async def _check_password(self, login: bytes, password: bytes) -> AuthResult:
        peer = _peer_ip(self.session.peer) or "local socket"
        try:
            user, secret = login.decode("utf-8"), password.decode("utf-8")
        except UnicodeDecodeError:
            user, ok = login.decode("utf-8", "replace"), False
        else:
            try:  # Argon2 takes tens of milliseconds: never in the event loop
                ok = await asyncio.wrap_future(self.receiver.auth_threads.submit(
                    self.receiver.authenticator, user, secret))
            except Exception:  # noqa: BLE001 (the app's authenticator failed: the client may retry)
                LOG.exception("the authenticator failed checking %r from %s", user, peer)
                return AuthResult(success=False, handled=False,
                                  message="454 4.7.0 Temporary authentication failure")
        if ok:
            LOG.info("%s logged in as %r", peer, user)
            return AuthResult(success=True, auth_data=user)
        self._auth_failures += 1
        LOG.warning("failed login as %r from %s", user, peer)
        return AuthResult(success=False, handled=False)


class _SMTPProtocol(_ReceiverProtocol, SMTP):
    pass


class _LMTPProtocol(_ReceiverProtocol, LMTP):
    def replies_per_message(self) -> int:
        """RFC 2033: one reply per accepted recipient."""
        return max(1, len(self.envelope.rcpt_tos))


# -- the handler: aiosmtpd's handler protocol, handing messages to Salmon's Router ----------

class _Delivery:
    """What the receiver does with a session's commands (aiosmtpd's ``handle_*`` hooks)."""

    def __init__(self, receiver: "_Receiver") -> None:
        self.receiver = receiver

    async def handle_EHLO(self, server, session, envelope, hostname: str, responses: List[str]) -> List[str]:
        session.host_name = hostname
        if self.receiver.authenticator is None:
            return [r for r in responses if not r[4:].upper().startswith("AUTH")]
        return responses

    async def handle_RCPT(self, server, session, envelope, address: str, rcpt_options) -> str:
        if envelope.rcpt_tos and not self.receiver.multiple_recipients:
            LOG.warning("client attempted to deliver mail with multiple RCPT TOs; refused")
            return MULTIPLE_RCPT_REPLY
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope) -> str:
        seen = (session.peer, session.host_name, session.auth_data if session.authenticated else None,
                session.ssl is not None)
        job = self.receiver.pool.submit(self.receiver.deliver, seen, envelope.mail_from,
                                        list(envelope.rcpt_tos), envelope.original_content)
        self.receiver.jobs.add(job)
        job.add_done_callback(self.receiver.jobs.discard)
        replies, close = await asyncio.wrap_future(job)
        server.close_after_reply = close
        return "\r\n".join(replies)


# -- the receivers ----------------------------------------------------------------------

def _remove_stale_socket(path: str) -> None:
    """Remove a UNIX socket file nothing listens on (left by a stopped server), so a restart can bind."""
    try:
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            return  # not a socket: bind says what is wrong
    except FileNotFoundError:
        return
    probe = socket_module.socket(socket_module.AF_UNIX, socket_module.SOCK_STREAM)
    try:
        probe.connect(path)
    except ConnectionRefusedError:
        os.unlink(path)
    except OSError:
        pass
    finally:
        probe.close()


def _listen(host: str, port: int, path: Optional[str]) -> socket_module.socket:
    """The listening socket, bound now (as Salmon's receivers do), so boot fails when the port is taken.

    ConfigError, one line, when it cannot be had.
    """
    try:
        return _bind(host, port, path)
    except OSError as exc:
        where = path or f"{host}:{port}"
        raise ConfigError(f"cannot listen on {where}: {exc.strerror or exc}; is another server running there, "
                          "or is the address wrong?") from None


def _bind(host: str, port: int, path: Optional[str]) -> socket_module.socket:
    if path is not None:
        _remove_stale_socket(path)
        sock = socket_module.socket(socket_module.AF_UNIX, socket_module.SOCK_STREAM)
        try:
            sock.bind(path)
            sock.listen(128)
        except BaseException:
            sock.close()
            raise
    else:
        family = socket_module.getaddrinfo(host, port, type=socket_module.SOCK_STREAM,
                                           flags=socket_module.AI_PASSIVE)[0][0]
        sock = socket_module.create_server((host, port), family=family, backlog=128)
    sock.setblocking(False)
    return sock


def server_tls_context(settings: Settings) -> Optional[ssl.SSLContext]:
    """The server TLS context of ``[Submission] TLSCertificate`` and ``TLSKey``, or None when unset."""
    submission = settings.submission
    if submission.tls_certificate is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(submission.tls_certificate, submission.tls_key)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(f"{settings.source or '<defaults>'}: [Submission] TLSKey: {submission.tls_key} and "
                          f"TLSCertificate {submission.tls_certificate} cannot be used: "
                          f"{exc.strerror or exc}") from None
    return context


class _Receiver:
    protocol_class = _SMTPProtocol
    kind = "SMTP"
    default_role = "mx"
    multiple_recipients = False

    def __init__(self, host: str = "127.0.0.1", port: int = 8825, *, role: Optional[str] = None,
                 dkim=None, authenticator: Optional[Authenticator] = None,
                 tls_context: Optional[ssl.SSLContext] = None, data_size_limit: int = DATA_SIZE_DEFAULT,
                 socket: Optional[str] = None, hostname: Optional[str] = None):
        role = role or self.default_role
        if role not in ROLES:
            raise ValueError(f"role {role!r} is not one of {', '.join(ROLES)}")
        if dkim is None:
            from salmon_dkim.salmon import context as glue  # noqa: PLC0415 (glue imports this module)
            dkim = glue.installed()
        if dkim is None:
            LOG.warning("%s receiver on %s has no salmon-dkim context: [Verification] and [Submission] take "
                        "their defaults; pass dkim= or install one first", self.kind, socket or f"{host}:{port}")
        settings = dkim.settings if dkim is not None else Settings()
        self.host, self.port, self.role, self.path = host, port, role, socket
        self.verification, self.submission = settings.verification, settings.submission
        self.data_size_limit = data_size_limit
        self.hostname = hostname or socket_module.getfqdn()  # once, not per connection
        submission = role == "submission"
        if authenticator is None and submission and settings.submission.credentials_file is not None:
            try:
                authenticator = CredentialsFile(settings.submission.credentials_file)
            except CredentialsError as exc:
                raise ConfigError(f"{settings.source or '<defaults>'}: [Submission] CredentialsFile: {exc}") from None
        self.authenticator = authenticator
        if tls_context is None and submission:
            tls_context = server_tls_context(settings)
        self.tls_context = tls_context
        self.auth_required = submission
        self.require_tls_for_auth = settings.submission.require_tls_for_auth
        if submission:
            self._warn_when_nobody_can_log_in()
        self.delivery = _Delivery(self)
        self.sessions: set = set()  # the protocols of open connections
        self.jobs: set = set()  # handler runs not finished yet
        self.pool: Optional[_Threads] = None  # handlers
        self.auth_threads: Optional[_Threads] = None  # password checks
        self.poller_loop: Optional[asyncio.AbstractEventLoop] = None
        self.poller: Optional[threading.Thread] = None  # the loop thread, as Salmon's receivers name it
        self.socket = _listen(host, port, socket)
        if socket is None:
            self.port = self.socket.getsockname()[1]  # the kernel's choice when port was 0

    def _warn_when_nobody_can_log_in(self) -> None:
        if self.authenticator is None:
            LOG.warning("submission listener %s has no users ([Submission] CredentialsFile or authenticator=): "
                        "only [Verification] AuthenticatedPeers can send mail through it", self.address)
        elif self.tls_context is None and self.require_tls_for_auth:
            LOG.warning("submission listener %s has no TLS certificate ([Submission] TLSCertificate) and "
                        "RequireTLSForAuth is on: nobody can log in", self.address)

    @property
    def address(self) -> str:
        return self.path or f"{self.host}:{self.port}"

    @property
    def handler_threads(self) -> int:
        return self.submission.handler_threads

    def protocol(self) -> SMTP:
        """A new session's protocol (asyncio's protocol factory)."""
        return self.protocol_class(
            self, hostname=self.hostname, ident="ESMTP" if self.kind == "SMTP" else "LMTP",
            data_size_limit=self.data_size_limit, enable_SMTPUTF8=True, decode_data=False,
            tls_context=self.tls_context, auth_required=self.auth_required,
            auth_require_tls=self.require_tls_for_auth, loop=self.poller_loop)

    # -- in a handler thread

    def deliver(self, seen: tuple, mail_from: Optional[str], recipients: List[str],
                data: bytes) -> Tuple[List[str], bool]:
        """Route the message once per recipient (SMTP has one); the replies and whether to close after them."""
        peer = seen[0]
        try:
            session = self.session(seen, mail_from, data)
        except Exception:  # noqa: BLE001 (ours: the client retries, the message is not lost)
            LOG.exception("cannot work out the session of a message from %r", peer)
            return [TEMPFAIL_REPLY] * len(recipients), False
        replies, close = [], False
        for rcpt in recipients:
            reply, closing = self._route(peer, mail_from, rcpt, data, session)
            replies.append(reply)
            close = close or closing
        if close:
            LOG.info("closing the connection from %r after: %s", peer, replies[-1])
        return replies, close

    def session(self, seen: tuple, mail_from: Optional[str], data: bytes) -> Session:
        peer, helo, user, tls = seen
        peer_ip = _peer_ip(peer)
        return Session(peer_ip=peer_ip, helo=helo or None, role=self.role, user=user, tls=tls,
                       mail_from="" if mail_from == "<>" else mail_from,
                       authenticated=authenticated(peer_ip, self.role, data, self.verification, user=user))

    def _route(self, peer, mail_from, rcpt, data: bytes, session: Session) -> Tuple[str, bool]:
        ok = "250 2.0.0 Ok" if self.multiple_recipients else "250 OK"
        try:
            message = request(peer, mail_from, rcpt, data)
            message.session = session
            LOG.debug("message from %r (%s), From: %r, To: %r", peer, session.role, mail_from, rcpt)
            routing.Router.deliver(message)
        except RejectAndClose as err:
            return str(err), True
        except salmon_server.SMTPError as err:
            return str(err), False
        except Exception:  # noqa: BLE001 (as Salmon: the message is kept in the undeliverable queue)
            LOG.exception("exception while processing message from %r, From: %r, To: %r", peer, mail_from, rcpt)
            salmon_server.undeliverable_message(
                data, "Error in message %r:%r:%r, look in logs." % (peer, mail_from, rcpt))
        return ok, False

    # -- serving

    def start(self) -> None:
        """Serve in the process's one receiver loop (started with the first receiver)."""
        _serve(self)
        LOG.info("%s receiver (%s) started on %s", self.kind, self.role, self.address)

    def stop(self, timeout: float = STOP_SECONDS) -> None:
        """Stop listening and close its sessions; the loop ends with the last receiver."""
        _unserve([self], timeout)

    def close(self) -> None:
        """Close the listening socket of a receiver never started (the UNIX socket file stays)."""
        if self.pool is None:
            self.socket.close()
        else:
            self.stop()

    def __repr__(self):
        return f"<{type(self).__name__} {self.role} on {self.address}>"


class SMTPReceiver(_Receiver):
    """SMTP listener (``role="mx"`` or ``"submission"``) giving handlers exact bytes and the session."""


class LMTPReceiver(_Receiver):
    """LMTP listener (TCP, or a UNIX socket with ``socket=PATH``): exact bytes, one reply per recipient."""

    protocol_class = _LMTPProtocol
    kind = "LMTP"
    default_role = "lmtp"
    multiple_recipients = True

    def __init__(self, host: str = "127.0.0.1", port: int = 8824, **kwargs):
        super().__init__(host, port, **kwargs)


# -- the one event loop ----------------------------------------------------------------

class _Threads:
    """A fixed number of worker threads taking calls from a queue, each answered with a Future.

    Not concurrent.futures.ThreadPoolExecutor: it refuses work once the main thread
    has finished, which is how ``salmon start`` leaves the process.
    """

    def __init__(self, count: int, name: str) -> None:
        self.count = count
        self._calls: "queue.SimpleQueue" = queue.SimpleQueue()
        for number in range(count):  # daemons: the loop thread is what keeps the process alive
            threading.Thread(target=self._work, name=f"{name}-{number}", daemon=True).start()

    def submit(self, function, *args) -> concurrent.futures.Future:
        future: concurrent.futures.Future = concurrent.futures.Future()
        self._calls.put((future, function, args))
        return future

    def _work(self) -> None:
        while True:
            call = self._calls.get()
            if call is None:
                return
            future, function, args = call
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = function(*args)
            except BaseException as exc:  # noqa: BLE001 (handed to whoever waits on the future)
                future.set_exception(exc)
            else:
                future.set_result(result)

    def shutdown(self) -> None:
        for _ in range(self.count):
            self._calls.put(None)


class _ReceiverLoop:
    """The asyncio loop serving every receiver of the process, in one thread, and the worker threads."""

    def __init__(self, handler_threads: int) -> None:
        self.loop = asyncio.new_event_loop()
        self.pool = _Threads(handler_threads, "salmon-handler")
        self.auth_threads = _Threads(AUTH_THREADS, "salmon-auth")
        self.servers: dict = {}
        # not a daemon: after `salmon start` returns, this thread keeps the process alive
        self.thread = threading.Thread(target=self.loop.run_forever, name="salmon-dkim-receivers")
        self.thread.start()

    def call(self, coroutine, timeout: Optional[float] = None):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    async def add(self, receiver: _Receiver) -> None:
        if receiver.path is not None:
            server = await self.loop.create_unix_server(receiver.protocol, sock=receiver.socket)
        else:
            server = await self.loop.create_server(receiver.protocol, sock=receiver.socket)
        self.servers[receiver] = server

    async def remove(self, receivers, timeout: float) -> None:
        """Stop listening, let running handlers finish, then tell idle sessions and close them."""
        for receiver in receivers:
            server = self.servers.pop(receiver, None)
            if server is not None:
                server.close()
                if receiver.path is not None:
                    try:
                        os.unlink(receiver.path)
                    except OSError:
                        pass
        deadline = self.loop.time() + timeout
        while any(r.jobs for r in receivers) and self.loop.time() < deadline:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.05)  # the sessions whose handler just finished send its reply
        for session in [s for r in receivers for s in list(r.sessions)]:
            if session.transport is not None and not session.transport.is_closing():
                session.transport.write(b"421 4.3.2 Service shutting down\r\n")
                session.transport.close()
        await asyncio.sleep(0)  # let the closes run

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.pool.shutdown()
        self.auth_threads.shutdown()
        self.loop.close()


_loop_lock = threading.Lock()
_current: Optional[_ReceiverLoop] = None


def _serve(receiver: _Receiver) -> None:
    global _current
    with _loop_lock:
        if _current is None:
            _current = _ReceiverLoop(receiver.handler_threads)
        elif receiver.handler_threads != _current.pool.count:
            LOG.info("%r: the handler pool has %d threads already (HandlerThreads of the first receiver)",
                     receiver, _current.pool.count)
        receiver.pool, receiver.auth_threads = _current.pool, _current.auth_threads
        receiver.poller, receiver.poller_loop = _current.thread, _current.loop
        _current.call(_current.add(receiver))


def _unserve(receivers, timeout: float) -> None:
    global _current
    with _loop_lock:
        if _current is None:
            return
        _current.call(_current.remove(receivers, timeout))
        if not _current.servers:
            _current.stop()
            _current = None


class Receivers:
    """Several receivers as one ``settings.receiver``: ``start()`` starts them all, in one loop thread.

    Salmon's own (asyncore) receivers may be among them: they are served by one
    shared asyncore thread rather than one each.
    """

    def __init__(self, *receivers):
        self.receivers = receivers

    def start(self) -> None:
        stock = []
        for receiver in self.receivers:
            if isinstance(receiver, _Receiver):
                receiver.start()
            else:
                stock.append(receiver)
        if stock:
            poller = _start_asyncore()
            for receiver in stock:
                receiver.poller = poller
        if threading.current_thread() is threading.main_thread():
            self._stop_on_signals()

    def stop(self, timeout: float = STOP_SECONDS) -> None:
        """Stop every receiver of ours: listeners close, running handlers finish, sessions end."""
        _unserve([r for r in self.receivers if isinstance(r, _Receiver)], timeout)

    def _stop_on_signals(self) -> None:
        def stop(signum, frame):
            LOG.info("signal %d: stopping the receivers", signum)
            self.stop()
            # `salmon start` has returned and the interpreter is waiting for our thread: it now ends.
            # Otherwise (salmon start --debug sleeps in the main thread) leave as the signal asked.
            if frame is None or frame.f_globals.get("__name__") != "threading":
                raise SystemExit(0)

        for signum in (signal.SIGTERM, signal.SIGHUP):
            handler = signal.getsignal(signum)  # the default, or the activity log's flush standing in for it
            if handler is signal.SIG_DFL or getattr(handler, "stands_for_default", False):
                signal.signal(signum, stop)

    def __iter__(self):
        return iter(self.receivers)

    def __repr__(self):
        return f"<Receivers {list(self.receivers)!r}>"


_asyncore_thread: Optional[threading.Thread] = None


def _start_asyncore() -> threading.Thread:
    """One asyncore thread for Salmon's stock receivers (each one's start() would run its own loop)."""
    global _asyncore_thread
    from salmon._vendor import asyncore  # noqa: PLC0415 (only for Salmon's own receivers)
    with _loop_lock:
        if _asyncore_thread is None or not _asyncore_thread.is_alive():
            _asyncore_thread = threading.Thread(target=asyncore.loop, name="salmon-receivers",
                                                kwargs={"timeout": 0.1, "use_poll": True})
            _asyncore_thread.start()
        return _asyncore_thread
