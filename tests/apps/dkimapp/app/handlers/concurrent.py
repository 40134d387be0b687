"""wait.test and release.test: two handlers that run at once (the handler threads), recording in what order.

Both are @nolocking: Salmon's Router otherwise holds one lock around every
handler, and the second would wait for the first whatever the threads.
"""
import os
import threading

from salmon.routing import nolocking, route, stateless

from config import settings
from .spool import record

_released = threading.Event()


@route("(local)@wait\\.test")
@stateless
@nolocking
def WAIT(message, local=None):
    """Holds its session's reply until a message for release.test is handled (10 s at most)."""
    open(os.path.join(settings.spool, local + ".waiting"), "w").close()  # the test sends the release now
    message.Data = b"released: %s\r\n" % (b"yes" if _released.wait(10) else b"no, timed out")
    record(local, message)


@route("(local)@release\\.test")
@stateless
@nolocking
def RELEASE(message, local=None):
    _released.set()
    record(local, message)
