"""Mail for example.com: DKIM-verified on arrival, then kept in maildir/ with our Authentication-Results.

Mail for any other domain on this (mx) listener is refused: outgoing mail
goes to the submission listener.
"""
import logging
import mailbox
import re

from salmon.routing import route, stateless
from salmon.server import SMTPError

from app.listeners import listener
from config import settings
from salmon_dkim.salmon.decorators import dkim_verify, message_bytes

log = logging.getLogger("example.inbound")
OURS = "|".join(re.escape(d) for d in (settings.mail_domain, settings.list_domain))


@route("(address)@(host)", address=".+", host=re.escape(settings.mail_domain))
@stateless
@listener("mx")
@dkim_verify
def INBOX(message, address=None, host=None):
    key = mailbox.Maildir(settings.maildir).add(message_bytes(message))
    log.info("mail for %s@%s stored as %s/new/%s (%s)", address, host, settings.maildir, key,
             message.dkim_outcome.reason)


@route("(address)@(host)", address=".+", host=f"(?!(?:{OURS})$).+")
@stateless
@listener("mx")
def NOT_OURS(message, address=None, host=None):
    raise SMTPError(550, f"5.7.1 Relaying denied: this listener takes mail for {settings.mail_domain} "
                         f"and {settings.list_domain}; send outgoing mail to the submission port")
