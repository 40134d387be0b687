"""Outbound routes: signed with @dkim_sign or by the SigningRelay, delivered to the sink."""
from salmon.routing import route, stateless
from salmon.server import SMTPError

from config import settings
from salmon_dkim.salmon.decorators import dkim_sign


def _authenticated_only(message):
    if not message.session.authenticated:
        raise SMTPError(550, "5.7.1 Relaying denied: submit outbound mail on the submission port")


@route("(local)@remote\\.example")
@stateless
@dkim_sign
def OUTBOUND(message, local=None):
    _authenticated_only(message)
    settings.relay.deliver(message)


@route("(local)@unguarded\\.example")
@stateless
@dkim_sign
def UNGUARDED(message, local=None):
    """No listener guard, as a hasty app might write: @dkim_sign itself signs only what earned it."""
    settings.relay.deliver(message)


@route("(local)@relay\\.example")
@stateless
def RELAY(message, local=None):
    """No decorator: the SigningRelay signs the received bytes."""
    _authenticated_only(message)
    settings.relay.deliver(message)


@route("(local)@list\\.example")
@stateless
def LIST(message, local=None):
    """A change made through the MailRequest, then relayed: the change goes out, signed."""
    _authenticated_only(message)
    message["X-Mailing-List"] = "tests@list.example"
    settings.relay.deliver(message)


@route("(local)@reply\\.example")
@stateless
def REPLY(message, local=None):
    """A MailResponse Salmon builds: gets Date and Message-ID, then is signed."""
    _authenticated_only(message)
    settings.relay.send(To=local + "@remote.example", From="robot@example.com",
                        Subject="Your request", Body="Done.\n.a line with a dot\n")
