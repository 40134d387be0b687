"""record.test: what the receivers hand Salmon, without DKIM."""
from salmon.routing import route, stateless
from salmon.server import SMTPError

from .spool import record


@route("(local)@record\\.test")
@stateless
def RECORD(message, local=None):
    record(local, message)


@route("(local)@refuse\\.test")
@stateless
def REFUSE(message, local=None):
    """A handler refusing with the recipient in its text, as handlers do (8-bit if the client sent it)."""
    raise SMTPError(550, f"5.1.1 <{local}@refuse.test>: no such user")


@route("(local)@crash\\.test")
@stateless
def CRASH(message, local=None):
    """A handler with a bug: Salmon answers 250 and keeps the message in the undeliverable queue."""
    raise RuntimeError(f"simulated handler bug for {local}")
