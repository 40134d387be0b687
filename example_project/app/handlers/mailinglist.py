"""Mailing lists at lists.example.com, in the manner of Salmon's old librelist example.

    LIST-subscribe@lists.example.com     join with the From address (a welcome comes back)
    LIST-unsubscribe@lists.example.com   leave (a goodbye comes back)
    LIST@lists.example.com               a member's post goes to every member

A post gets "[LIST]" in its subject and List-* fields, which breaks the
author's DKIM signature.  ``[DomainKeys]`` in config/salmon_dkim.ini says
what happens then (salmon_dkim.core.listmail.prepare_list_post): the author's
signatures are stripped, From is rewritten to the list when the author's
domain publishes DMARC p=reject (example.com does: DMARCMitigation), the post
is signed as lists.example.com and ARC-sealed with what our
Authentication-Results said on arrival.
"""
import logging
import re
from email.utils import parseaddr

from salmon.mail import MailResponse
from salmon.routing import route, stateless
from salmon.server import SMTPError

from app.listeners import listener
from app.model.members import Members
from config import settings
from salmon_dkim.salmon import context as glue
from salmon_dkim.core.arc import arc_result, arrival_arc_result, sealer_from_settings
from salmon_dkim.salmon.decorators import dkim_verify, message_bytes
from salmon_dkim.core.listmail import prepare_list_post

log = logging.getLogger("example.mailinglist")
LIST_NAME = "[a-z0-9][a-z0-9_.]*"  # no "-": LIST-subscribe is never taken for a post
HOST = re.escape(settings.list_domain)
members = Members(settings.members_file)


def author(message) -> str:
    return (parseaddr(message["from"] or "")[1] or message.From or "").lower()


def reply(list_name: str, host: str, to: str, subject: str, body: str) -> None:
    """A note from the list, signed as the list's domain by the SigningRelay."""
    settings.relay.deliver(MailResponse(To=to, From=f"{list_name}-owner@{host}", Subject=subject, Body=body))


@route("(list)-subscribe@(host)", list=LIST_NAME, host=HOST)
@stateless
@listener("mx")
@dkim_verify
def SUBSCRIBE(message, list=None, host=None):
    address = author(message)
    joined = members.subscribe(list, address)
    log.info("%s %s %s", address, "joined" if joined else "was already on", list)
    reply(list, host, address, f"Welcome to {list}@{host}",
          f"You are on {list}@{host}.\n\nWrite to {list}@{host} to post to every member;\n"
          f"write to {list}-unsubscribe@{host} to leave.\n")


@route("(list)-unsubscribe@(host)", list=LIST_NAME, host=HOST)
@stateless
@listener("mx")
@dkim_verify
def UNSUBSCRIBE(message, list=None, host=None):
    address = author(message)
    if members.unsubscribe(list, address):
        log.info("%s left %s", address, list)
        reply(list, host, address, f"Goodbye from {list}@{host}",
              f"You have left {list}@{host}. Write to {list}-subscribe@{host} to join again.\n")


@route("(list)@(host)", list=LIST_NAME, host=HOST)
@stateless
@listener("mx")
@dkim_verify
def POST(message, list=None, host=None):
    address = author(message)
    if not members.is_member(list, address):
        raise SMTPError(550, f"5.7.1 Only members may post to {list}@{host}; "
                             f"join by writing to {list}-subscribe@{host}")
    dkim = glue.current()
    arrival = message_bytes(message)  # as received, our Authentication-Results on top
    chain = arrival_chain(dkim, arrival)
    post = list_fields(arrival, list, host)
    try:
        sent = prepare_list_post(post, dkim.settings, host, dkim.signer, sealer(dkim, host), arrival_cv=chain,
                                 resolver=dkim.resolver, list_address=f"{list}@{host}")
    except Exception as exc:  # signing or sealing failed: 451, the author's server retries (Salmon: 250)
        log.exception("post to %s@%s not sent", list, host)
        raise SMTPError(451, "4.3.0 The list cannot sign this post now; try again later") from exc
    recipients = members.of(list)
    for member in recipients:
        deliver_as_is(sent, f"{list}-bounces@{host}", member)
    log.info("post from %s to %s sent to %d members (ARC chain on arrival: %s)", address, list,
             len(recipients), chain or "not checked")


def arrival_chain(dkim, arrival: bytes):
    """The ARC chain as it arrived: arc= in our Authentication-Results, else checked here.

    Before the list changes the post: its subject tag would break the last ARC-Message-Signature.
    """
    found = arrival_arc_result(arrival, dkim.settings.verification.authserv_id)
    if found is None and dkim.settings.lists.arc_verify:
        found, reason = arc_result(arrival, dkim.resolver, dkim.settings)
        log.info("ARC chain on arrival: %s (%s)", found, reason)
    return found


def list_fields(data: bytes, list_name: str, host: str) -> bytes:
    """The post as the list changes it: "[LIST]" subject tag and RFC 2369/2919 List-* fields."""
    tag = f"[{list_name}] ".encode()
    end = data.find(b"\r\n\r\n")
    head, rest = (data, b"") if end < 0 else (data[:end + 2], data[end + 2:])
    if not re.search(rb"(?im)^subject:[^\r\n]*" + re.escape(tag.strip()), head):
        head, found = re.subn(rb"(?im)^(subject:[ \t]*)", lambda m: m.group(1) + tag, head, count=1)
        if not found:
            head += b"Subject: " + tag.strip() + b"\r\n"
    fields = (f"List-Id: <{list_name}.{host}>\r\n"
              f"List-Post: <mailto:{list_name}@{host}>\r\n"
              f"List-Subscribe: <mailto:{list_name}-subscribe@{host}>\r\n"
              f"List-Unsubscribe: <mailto:{list_name}-unsubscribe@{host}>\r\n"
              f"Precedence: list\r\n").encode()
    return fields + head + rest


def sealer(dkim, host: str):
    """The list's ARC sealer, with its domain's active key (keys are read once, so this is cheap)."""
    return sealer_from_settings(dkim.settings, host, dkim.keys, dkim.lifecycle)


def deliver_as_is(data: bytes, sender: str, recipient: str) -> None:
    """Hand the finished post to the relay: prepare_list_post signed and sealed it already."""
    settings.relay.deliver(data, To=recipient, From=sender, sign=False)
