"""Routes measured against each other: the same work with and without salmon-dkim's decorators."""
from salmon.routing import nolocking, route, stateless

from config import settings
from salmon_dkim.salmon.decorators import dkim_sign, dkim_verify


@route("(local)@plain\\.bench")
@stateless
@nolocking
def PLAIN(message, local=None):
    """Receive and route, nothing else: the baseline for verification."""


@route("(local)@verify\\.bench")
@stateless
@nolocking
@dkim_verify(settings.dkim)
def VERIFY(message, local=None):
    """The same, verified: our header on top, policy decided."""


@route("(local)@relay\\.bench")
@stateless
@nolocking
def RELAY(message, local=None):
    """Relayed as received, unsigned: the baseline for signing."""
    settings.relay.deliver(message, To="sink@sink.bench", From="bench@example.com", sign=False)


@route("(local)@sign\\.bench")
@stateless
@nolocking
@dkim_sign(settings.dkim)
def SIGN(message, local=None):
    """Signed and relayed."""
    settings.relay.deliver(message, To="sink@sink.bench", From="bench@example.com")
