"""Inbound routes: @dkim_verify with the installed context and with explicit ones."""
from salmon.routing import route, stateless

from config import settings
from salmon_dkim.salmon.decorators import dkim_verify

from .spool import record


@route("(local)@inbound\\.test")
@stateless
@dkim_verify
def INBOUND(message, local=None):
    record(local, message)


def _verified_with(name, domain):
    @route("(local)@" + domain.replace(".", "\\."))
    @stateless
    @dkim_verify(settings.contexts[name])
    def VERIFIED(message, local=None):
        record(local, message)
    return VERIFIED


REJECT = _verified_with("reject", "reject.test")
CLOSE = _verified_with("close", "close.test")
BLACKHOLE = _verified_with("blackhole", "blackhole.test")
BROKEN = _verified_with("broken", "broken.test")
BROKEN_ACCEPT = _verified_with("broken-accept", "broken-accept.test")
if "live" in settings.contexts:
    LIVE = _verified_with("live", "live.test")


@route("(local)@state\\.test")
@dkim_verify
def START(message, local=None):
    """A state handler (not @stateless): @dkim_verify passes the next state through."""
    record(local, message)
    return SECOND


@route("(local)@state\\.test")
@dkim_verify
def SECOND(message, local=None):
    record(local + "-second", message)
    return SECOND
