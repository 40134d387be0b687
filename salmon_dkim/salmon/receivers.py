"""Salmon receivers that keep the received bytes exact and say who sent them.

Drop-in replacements for ``salmon.server.SMTPReceiver`` and ``LMTPReceiver``:

- ``message.Data`` is exactly the bytes the client sent, CRLF line endings
  kept and dot-stuffing undone as RFC 5321 section 4.5.2 says.  (Salmon's SMTP
  channel joins lines with LF; its LMTP channel compares ``text[0] == b'.'``,
  never true in Python 3, so stuffed lines stay doubled.)  A DKIM signature
  covers those bytes, so nothing else will do.
- ``message.session`` is a :class:`salmon_dkim.core.policy.Session`: peer IP,
  HELO/EHLO/LHLO name, the listener's role (``"mx"`` or ``"submission"``) and
  whether the session counts as authenticated (see :func:`authenticated`).
- A handler that raises :class:`RejectAndClose` (``@dkim_verify`` does, when
  the outcome says so) gets its reply sent and the connection closed.

Every receiver is served by one asyncore thread, as in Salmon, however many
are started; :class:`Receivers` groups them for ``settings.receiver``::

    settings.receiver = Receivers(
        SMTPReceiver("0.0.0.0", 25),                        # role "mx"
        SMTPReceiver("0.0.0.0", 587, role="submission"),    # authenticated
        LMTPReceiver("127.0.0.1", 8824))

Also here, as the receivers make MailRequests: :func:`message_bytes`,
:func:`replace_data` and :func:`headers_changed` keep ``message.Data`` and
the parsed message in step for the decorators and the relay.

Authentication needs ``[Verification]`` settings (AuthenticatedPeers,
AuthenticatedHeader, TrustedIPs): pass ``settings=`` or let the receiver use
the context installed by :func:`salmon_dkim.salmon.context.install`.
"""
from __future__ import annotations

import logging
import os
import re
import socket as socket_module
import stat
import threading
from typing import Optional

from salmon import encoding, mail, routing
from salmon import server as salmon_server
from salmon._vendor import asyncore, smtpd

from salmon_dkim.core.message import to_crlf
from salmon_dkim.core.policy import in_networks
from salmon_dkim.core.results import Session

LOG = logging.getLogger("salmon_dkim.salmon.receivers")

ROLES = ("mx", "submission")

# The DATA stream is read as if a CRLF came before it, so a stuffed first line
# and an empty message (a lone "." line) are found like any other line.
_STUFFED = re.compile(rb"\r\n\.")


class RejectAndClose(salmon_server.SMTPError):
    """An SMTPError after whose reply the receiver closes the connection."""


def unstuff(raw: bytes) -> bytes:
    """The message text from the DATA lines collected before the end marker.

    ``raw`` starts with the CRLF that precedes the first line (see
    ``_DataChannel.smtp_DATA``) and ends before the CRLF of the last line.
    """
    if not raw:
        return b""
    return _STUFFED.sub(b"\r\n", raw)[2:] + b"\r\n"


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


def authenticated(peer_ip: Optional[str], role: str, data: bytes, verification=None) -> bool:
    """Whether a session counts as authenticated (Salmon has no SMTP AUTH).

    Yes for a submission listener, for a peer in AuthenticatedPeers, and for a
    message carrying AuthenticatedHeader (set by a front MTA) from a peer in
    TrustedIPs; from any other peer that header is ignored, as anyone can write it.
    """
    if role == "submission":
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


def _verification_settings(settings):
    if settings is None:
        from salmon_dkim.salmon import context as glue  # noqa: PLC0415 (glue imports this module)
        context = glue.installed()
        settings = context.settings if context is not None else None
    return getattr(settings, "verification", settings)


class _SocketWithOneFQDNLookup:
    """The socket module as smtpd sees it, with getfqdn() asked once per process.

    smtpd.SMTPChannel calls socket.getfqdn(), a blocking DNS lookup, for every
    connection, in the one thread that serves every session.
    """

    _fqdn: Optional[str] = None

    def __getattr__(self, name):
        return getattr(socket_module, name)

    def getfqdn(self, name: str = "") -> str:
        if name:
            return socket_module.getfqdn(name)
        if self._fqdn is None:
            type(self)._fqdn = socket_module.getfqdn()
        return self._fqdn


smtpd.socket = _SocketWithOneFQDNLookup()


def _reply_line(text: str) -> str:
    """One ASCII reply line: push() fails on anything else and the session would end without a reply."""
    return re.sub(r"[^\x20-\x7e]", "?", text)


class _DataChannel(salmon_server.SMTPChannel):
    """SMTP channel handing the receiver exact bytes and the session."""

    multiple_recipients = False
    ok_reply = "250 OK"

    def __init__(self, server, conn, addr, *args, **kwargs):
        self.close_after_reply = False
        super().__init__(server, conn, addr, *args, **kwargs)

    def smtp_RCPT(self, arg):
        if self.rcpttos and not self.multiple_recipients:
            # one reply after DATA cannot say "delivered to one, refused for another"
            LOG.warning("client attempted to deliver mail with multiple RCPT TOs; refused")
            self.push("451 4.5.3 Will not accept multiple recipients in one transaction")
            return
        smtpd.SMTPChannel.smtp_RCPT(self, arg)

    def smtp_DATA(self, arg):
        super().smtp_DATA(arg)
        if self.smtp_state == self.DATA:
            self.ac_in_buffer = b"\r\n" + self.ac_in_buffer

    def found_terminator(self):
        if self.smtp_state != self.DATA:
            return super().found_terminator()
        raw = b"".join(self.received_lines)
        self.received_lines = []
        recipients = self.recipients_for_replies()
        if self.data_size_limit and self.num_bytes > self.data_size_limit:
            self._set_post_data_state()
            for _ in recipients:  # LMTP: the client waits for one reply per recipient
                self.push("552 5.3.4 Error: Too much mail data")
            return
        data = unstuff(raw)
        try:
            session = self.session(data)
        except Exception:  # noqa: BLE001 (ours: the client retries, the message is not lost)
            LOG.exception("cannot work out the session of a message from %r", self.peer)
            replies = ["451 4.3.0 Temporary failure; try again later"] * len(recipients)
        else:
            replies = [self.smtp_server.deliver(self.peer, self.mailfrom, rcpt, data, session, self)
                       for rcpt in recipients]
        self._set_post_data_state()
        for reply in replies:
            self.push(_reply_line(reply or self.ok_reply))
        if self.close_after_reply:
            LOG.info("closing the connection from %s after: %s", self.peer, replies[-1])
            self.close_when_done()

    def recipients_for_replies(self):
        """SMTP: one delivery and one reply for the transaction."""
        return [self.rcpttos]

    def session(self, data: bytes) -> Session:
        peer_ip = self.peer[0] if isinstance(self.peer, tuple) else None
        role = self.smtp_server.role
        return Session(peer_ip=peer_ip, helo=self.seen_greeting or None, role=role, mail_from=self.mailfrom,
                       authenticated=authenticated(
                           peer_ip, role, data, _verification_settings(self.smtp_server.settings)))


class SMTPChannel(_DataChannel):
    """SMTP with exact bytes; one recipient per transaction, as Salmon's."""


class LMTPChannel(_DataChannel):
    """LMTP (RFC 2033): LHLO instead of HELO/EHLO, one reply per recipient after DATA."""

    multiple_recipients = True
    ok_reply = "250 2.0.0 Ok"

    def smtp_LHLO(self, arg):
        if not arg:
            self.push("501 5.5.4 Syntax: LHLO hostname")
            return
        if self.seen_greeting:
            self.push("503 5.5.1 Duplicate LHLO")
            return
        self._set_rset_state()
        self.seen_greeting = arg
        self.extended_smtp = True
        self.push("250-%s" % self.fqdn)
        if self.data_size_limit:
            self.push("250-SIZE %s" % self.data_size_limit)
            self.command_size_limits["MAIL"] += 26
        self.push("250-8BITMIME")
        self.push("250-ENHANCEDSTATUSCODES")
        self.push("250 PIPELINING")

    def smtp_HELO(self, arg):
        self.push("500 5.5.1 Error: LMTP expects LHLO")

    smtp_EHLO = smtp_HELO

    def recipients_for_replies(self):
        return list(self.rcpttos)


_loop_lock = threading.Lock()
_loop_thread: Optional[threading.Thread] = None


def start_loop() -> threading.Thread:
    """Start the one asyncore thread that serves every receiver (once)."""
    global _loop_thread
    with _loop_lock:
        if _loop_thread is None or not _loop_thread.is_alive():
            _loop_thread = threading.Thread(target=asyncore.loop, name="salmon-dkim-receivers",
                                            kwargs={"timeout": 0.1, "use_poll": True})
            _loop_thread.start()
        return _loop_thread


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


class _Receiver(smtpd.SMTPServer):
    channel_class = _DataChannel
    kind = "SMTP"

    def __init__(self, host: str = "127.0.0.1", port: int = 8825, *, role: str = "mx",
                 settings=None, data_size_limit: int = smtpd.DATA_SIZE_DEFAULT,
                 socket: Optional[str] = None):
        if role not in ROLES:
            raise ValueError(f"role {role!r} is not one of {', '.join(ROLES)}")
        self.host, self.port, self.role, self.settings = host, port, role, settings
        self.path = socket
        if socket is None:
            smtpd.SMTPServer.__init__(self, (host, port), None, data_size_limit=data_size_limit)
            self.port = self.socket.getsockname()[1]  # the kernel's choice when port was 0
        else:
            self._listen_unix(socket, data_size_limit)

    def _listen_unix(self, path: str, data_size_limit: int) -> None:
        """What smtpd.SMTPServer.__init__ does, on a UNIX socket (LMTP from a local MTA)."""
        _remove_stale_socket(path)
        self._localaddr, self._remoteaddr = path, None
        self.data_size_limit, self.enable_SMTPUTF8, self._decode_data = data_size_limit, False, False
        asyncore.dispatcher.__init__(self)
        try:
            self.create_socket(socket_module.AF_UNIX, socket_module.SOCK_STREAM)
            self.bind(path)
            self.listen(5)
        except BaseException:
            self.close()
            raise

    def handle_accepted(self, conn: socket_module.socket, addr):
        self.channel_class(self, conn, addr, self.data_size_limit, self._map)

    def start(self) -> None:
        """Listen; mail is handled in the one shared asyncore thread."""
        LOG.info("%s receiver (%s) started on %s", self.kind, self.role, self.address)
        self.poller = start_loop()

    @property
    def address(self) -> str:
        return self.path or f"{self.host}:{self.port}"

    def handle_error(self):
        # asyncore would close the listening socket: keep serving, as Salmon's receivers do
        LOG.exception("error accepting a connection on %s; still listening", self.address)

    def deliver(self, peer, mailfrom, rcpt, data: bytes, session: Session, channel) -> Optional[str]:
        """Route one message; the reply line, or None for 250."""
        try:
            message = request(peer, mailfrom, rcpt, data)
            message.session = session
            LOG.debug("message from %r (%s), From: %r, To: %r", peer, session.role, mailfrom, rcpt)
            routing.Router.deliver(message)
        except RejectAndClose as err:
            channel.close_after_reply = True
            return str(err)
        except salmon_server.SMTPError as err:
            return str(err)
        except Exception:
            # as Salmon: the message is kept in the undeliverable queue
            LOG.exception("exception while processing message from %r, From: %r, To: %r",
                          peer, mailfrom, rcpt)
            salmon_server.undeliverable_message(
                data, "Error in message %r:%r:%r, look in logs." % (peer, mailfrom, rcpt))
        return None

    def process_message(self, peer, mailfrom, rcpttos, data, **kwargs):
        raise NotImplementedError("mail arrives through the channel's deliver()")

    def __repr__(self):
        return f"<{type(self).__name__} {self.role} on {self.address}>"


class SMTPReceiver(_Receiver):
    """SMTP listener (``role="mx"`` or ``"submission"``) giving handlers exact bytes and the session."""

    channel_class = SMTPChannel


class LMTPReceiver(_Receiver):
    """LMTP listener (TCP, or a UNIX socket with ``socket=PATH``) giving handlers exact bytes and the session."""

    channel_class = LMTPChannel
    kind = "LMTP"


class Receivers:
    """Several receivers as one ``settings.receiver``: ``start()`` starts them all, in one thread.

    Salmon's own receivers may be among them: they are served by the same
    thread rather than starting one each.
    """

    def __init__(self, *receivers):
        self.receivers = receivers

    def start(self) -> None:
        for receiver in self.receivers:
            if isinstance(receiver, _Receiver):
                receiver.start()
            else:  # a Salmon receiver's start() would run a second asyncore loop over the same sockets
                receiver.poller = start_loop()

    def __iter__(self):
        return iter(self.receivers)

    def __repr__(self):
        return f"<Receivers {list(self.receivers)!r}>"
