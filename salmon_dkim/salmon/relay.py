"""A Salmon Relay that signs everything it delivers, on the bytes that go on the wire.

``SigningRelay`` is a drop-in ``salmon.server.Relay``: ``deliver``, ``send``
and ``reply`` all end in ``deliver``, which

1. takes the message's wire bytes, with CRLF line endings, after Salmon's last
   change to it:

   - a MailRequest: ``message.Data`` exactly as received (Salmon's
     ``str(message)`` would rewrite headers and bodies), unless a handler
     changed its headers through the MailRequest (``message["X"] = ...``), in
     which case ``str(message)`` is what the handler meant to send;
   - a MailResponse Salmon builds: Date and Message-ID added first when
     missing, then ``str(message)``;
   - ``bytes`` / ``str``: as given (pass To= and From=);

2. signs them with the Signer (unless ``@dkim_sign`` already did: then they
   go out as they are), when they earned it: a message the app composed
   (MailResponse, bytes), or a received MailRequest whose session did
   (``[Signing] SignFor``: authenticated by default).  A stranger's mail relayed
   on, or a domain without a key: sent unsigned, and the activity log says
   why; any failure, or a configured key that cannot be used:
   :class:`SigningFailed` (a SigningError and an SMTPError 451) raised, nothing sent;

3. hands the bytes to smtplib unchanged.

List mail is sent as [DomainKeys] says (StripSigsFromListMail, SignListMail as
the list's domain, ARCSeal): mail a list route marks, with
``deliver(..., list_domain="lists.example.com")`` or a relay made for the list
(``SigningRelay(..., list_domain=...)``), and mail that carries a List-Id
header and earned a signature (see 2.), whose list domain is then the envelope
sender's (the list's bounce address).

Forwarded mail (an app that sends what arrived on to an outside mailbox) is
ARC-sealed after signing with ``deliver(..., seal=True)`` or a relay made with
``seal=True``: as ``[DomainKeys] ARCDomain``/``ARCSelector`` say, cv= from our
Authentication-Results on arrival (see ``salmon_dkim.core.listmail.seal_forwarded``).

In config/boot.py::

    settings.relay = SigningRelay(host="smarthost.example.net", port=25)  # installed context's Signer
    settings.relay = dkim.relay(host="smarthost.example.net", port=25)    # the same, explicitly
"""
from __future__ import annotations

import email.utils
import logging
import smtplib
import threading
from typing import Optional

from salmon import mail
from salmon.server import Relay, SMTPError

from salmon_dkim.core.arc import sealer_from_settings
from salmon_dkim.core.message import to_crlf
from salmon_dkim.core.listmail import is_list_mail, prepare_list_post, seal_forwarded
from salmon_dkim.core.policy import may_sign
from salmon_dkim.core.signer import SigningError
from salmon_dkim.salmon.receivers import envelope_sender, headers_changed, message_bytes, session_of

LOG = logging.getLogger("salmon_dkim.salmon.relay")


class SigningFailed(SigningError, SMTPError):
    """Signing failed in ``deliver``, nothing was sent: a SigningError, and an SMTPError 451.

    Raised in a handler, Salmon passes SMTPError on to the client, who retries;
    any other exception would become "250 OK" and the undeliverable queue.
    """

    def __init__(self, reason: str):
        SMTPError.__init__(self, 451, "4.3.0 DKIM signing failed; try again later")
        self.reason = reason


def stamp(message: mail.MailResponse) -> None:
    """Give a message Salmon built the Date and Message-ID it lacks (both are signed)."""
    if "Date" not in message:
        message["Date"] = email.utils.formatdate(usegmt=True)
    if "Message-ID" not in message:
        sender = email.utils.parseaddr(message["From"] or "")[1]
        domain = sender.rpartition("@")[2] or None
        message["Message-ID"] = email.utils.make_msgid(domain=domain)


def wire_bytes(message) -> bytes:
    """What goes on the wire for ``message``, before signing, with CRLF line endings."""
    if isinstance(message, bytes):
        return to_crlf(message)
    if isinstance(message, str):
        return to_crlf(message.encode("utf-8", "surrogateescape"))
    if isinstance(message, mail.MailResponse):
        stamp(message)
        return to_crlf(str(message).encode("utf-8", "surrogateescape"))
    if isinstance(message, mail.MailRequest) and headers_changed(message):
        LOG.info("headers of %r were changed through the MailRequest; sending str(message)", message)
        return to_crlf(str(message).encode("utf-8", "surrogateescape"))
    return message_bytes(message)


class SigningRelay(Relay):
    """Relay that signs what it delivers; arguments as ``salmon.server.Relay`` plus ``signer``.

    ``signer`` defaults to the Signer of the context installed at boot,
    looked up at delivery time.  ``list_domain`` makes every delivery list
    mail of that domain; ``resolver`` checks an arriving ARC chain that our
    Authentication-Results did not record (for the seal's cv=).
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 25, *args, signer=None,
                 list_domain: Optional[str] = None, resolver=None, seal: bool = False, **kwargs):
        super().__init__(host, port, *args, **kwargs)
        self._signer = signer
        self.list_domain = list_domain
        self.resolver = resolver
        self._last_post: Optional[tuple] = None  # (post, list domain, bytes sent): one post, many members
        self._post_lock = threading.Lock()
        self.seal = seal

    @property
    def signer(self):
        if self._signer is not None:
            return self._signer
        from salmon_dkim.salmon import context as glue  # noqa: PLC0415 (glue builds relays)
        return glue.current().signer

    def signed_bytes(self, message, sender: Optional[str], data: Optional[bytes] = None) -> bytes:
        """The bytes ``deliver`` sends: signed here unless ``@dkim_sign`` signed them.

        ``data``: ``wire_bytes(message)``, when the caller has it already.
        """
        signed = getattr(message, "dkim_signed", None)
        if signed is not None:
            # Data replaced since signing (replace_data, message.Data = ...) is changed too
            if not (isinstance(message, mail.MailRequest) and headers_changed(message)) \
                    and message_bytes(message) == signed.message:
                return message_bytes(message)
            LOG.warning("%r was changed after @dkim_sign signed it: signing it again; "
                        "leave the signing to the SigningRelay in handlers that change messages", message)
        address = email.utils.parseaddr(sender)[1] if isinstance(sender, str) else None
        data = wire_bytes(message) if data is None else data
        session = self._session(message)
        if session is not None:
            refused = may_sign(session, self.signer.settings)
            if refused:
                LOG.info("relaying %r unsigned: %s", message, refused)
                self.signer.activity.record("unsigned", direction="out", peer=session.peer_ip, reason=refused)
                return data
            address = session.user or envelope_sender(message, session) or address
        return self.signer.sign(data, sender=address or None).message

    def _session(self, message):
        """The session a received message came in on; None for mail the app composed (it may be signed)."""
        if not isinstance(message, mail.MailRequest):
            return None
        return session_of(message, self.signer.settings)

    def list_bytes(self, data: bytes, list_domain: str) -> bytes:
        """The bytes of a list post as [DomainKeys] says: stripped, signed as the list, sealed.

        A list route delivers one post to each member in turn: the post is prepared once and the
        same signed, sealed bytes go to every member.
        """
        with self._post_lock:
            last = self._last_post
            if last is not None and last[1] == list_domain and last[0] == data:
                return last[2]
        signer = self.signer
        settings = signer.settings
        sealer = sealer_from_settings(settings, list_domain, signer.keys, signer.lifecycle) \
            if settings.lists.arc_seal else None
        prepared = prepare_list_post(data, settings, list_domain, signer, sealer, resolver=self.resolver)
        with self._post_lock:
            self._last_post = (data, list_domain, prepared)
        return prepared

    def sealed_bytes(self, data: bytes) -> bytes:
        """Forwarded mail with our ARC set on top; unsealed (logged) when there is no ARC key or it must not be."""
        settings = self.signer.settings
        sealer = sealer_from_settings(settings, None, self.signer.keys, self.signer.lifecycle)
        if sealer is None:
            LOG.warning("forwarded message not ARC-sealed: no ARC key (set [DomainKeys] ARCDomain and "
                        "ARCSelector, or [Signing] DefaultDomain with a [Domains] entry)")
            return data
        return seal_forwarded(data, settings, sealer, resolver=self.resolver)

    def _list_domain(self, message, data: bytes, sender, asked: Optional[str]) -> Optional[str]:
        if asked or self.list_domain:
            return asked or self.list_domain
        if is_list_mail(data):
            session = self._session(message)
            if session is not None and may_sign(session, self.signer.settings):
                return None  # a stranger's List-Id does not make its envelope domain ours to sign as
            return email.utils.parseaddr(sender)[1].rpartition("@")[2].lower() or None
        return None

    def deliver(self, message, To=None, From=None, *, sign: bool = True,
                list_domain: Optional[str] = None, seal: Optional[bool] = None) -> None:
        """Sign and send; ``sign=False`` sends a message that is already final (signed, sealed) as it is.

        ``list_domain`` marks list mail of that domain (see the module docstring); ``seal`` (default:
        the relay's) ARC-seals other mail after signing, for forwarded mail.
        """
        if isinstance(message, (bytes, str)):
            if not (To and From):
                raise TypeError("deliver(bytes) needs To= and From=")
            recipient, sender = To, From
        else:
            recipient = To or getattr(message, "To", None) or message["To"]
            sender = From or getattr(message, "From", None) or message["From"]
        # Signing raises before anything is sent.
        try:
            data = wire_bytes(message)
            if sign:
                listed = self._list_domain(message, data, sender, list_domain)
                data = self.list_bytes(data, listed) if listed else self.signed_bytes(message, sender, data)
                if not listed and (self.seal if seal is None else seal):
                    data = self.sealed_bytes(data)
        except Exception as exc:  # noqa: BLE001 (ours: never Salmon's silent 250)
            LOG.error("not sent: signing %r failed (%s: %s)", message, type(exc).__name__, exc, exc_info=exc)
            raise SigningFailed(f"{type(exc).__name__}: {exc}") from exc
        relay_host = self.configure_relay(self.hostname or self.resolve_relay_host(recipient))
        try:
            relay_host.sendmail(sender, recipient, data)
        finally:
            try:
                relay_host.quit()
            except smtplib.SMTPException:  # already gone: sendmail's error is the one that matters
                pass

    def __repr__(self):
        return "<SigningRelay to (%s:%d)>" % (self.hostname, self.port)
