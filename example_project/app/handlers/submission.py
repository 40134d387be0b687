"""Mail from our users (the submission listener): signed as it is, then relayed to the smarthost."""
import logging

from salmon.routing import route, stateless

from app.listeners import listener
from config import settings
from salmon_dkim.salmon.decorators import dkim_sign

log = logging.getLogger("example.submission")


@route("(address)@(host)", address=".+", host=".+")
@stateless
@listener("submission")
@dkim_sign
def SUBMIT(message, address=None, host=None):
    settings.relay.deliver(message)  # a SigningRelay: sends the bytes @dkim_sign signed, unchanged
    signed = message.dkim_signed
    log.info("relayed mail for %s@%s to the smarthost %s", address, host,
             "signed as " + ", ".join(f"d={s.domain} s={s.selector}" for s in signed.signatures)
             if signed.signatures else f"unsigned ({signed.unsigned_reason})")
