"""record.test: what the receivers hand Salmon, without DKIM."""
from salmon.routing import route, stateless

from .spool import record


@route("(local)@record\\.test")
@stateless
def RECORD(message, local=None):
    record(local, message)
