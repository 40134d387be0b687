"""Send the running example project a message, as a mail client or another server would.

    python send.py inbox                 signed mail from alice@example.com to bob@example.com
    python send.py subscribe ADDRESS     ADDRESS joins lunch@lists.example.com
    python send.py unsubscribe ADDRESS   ADDRESS leaves it
    python send.py post                  a post from alice@example.com (signed) to the list
    python send.py submit                alice@example.com writes to dave@example.net (submission port)
    python send.py news                  alice sends the newsletter from news@news.example.com (submission)

"Signed" means signed as example.com with the project's own key, as Alice's
outgoing server would have done; ports as run.py (options or EXAMPLE_*).
"""
from __future__ import annotations

import argparse
import email.utils
import os
import smtplib
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
LIST = "lunch@lists.example.com"
SUBMISSION_LOGIN = ("alice@example.com", "alice's example password")  # run.py adds her on first start


def compose(sender: str, to: str, subject: str, body: str) -> bytes:
    """A plain text message, CRLF line endings, with the fields a signer signs."""
    domain = sender.rpartition("@")[2]
    head = (f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\n"
            f"Date: {email.utils.formatdate(usegmt=True)}\r\n"
            f"Message-ID: {email.utils.make_msgid(domain=domain)}\r\n"
            f"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n")
    return (head + body.replace("\n", "\r\n")).encode("utf-8")


def sign_as_sender(data: bytes, config: str) -> bytes:
    """The message signed by its author's domain with the project's keys (its Signer, its INI)."""
    from salmon_dkim.config import load_settings  # noqa: PLC0415
    from salmon_dkim.activity import ActivityLog  # noqa: PLC0415
    from salmon_dkim.core.signer import Signer  # noqa: PLC0415
    result = Signer(load_settings(HERE / config), activity=ActivityLog(None)).sign(data)
    if result.unsigned_reason:
        sys.exit(f"could not sign: {result.unsigned_reason}")
    return result.message


def send(host: str, port: int, sender: str, to: str, data: bytes, login: bool = False) -> None:
    with smtplib.SMTP(host, port, timeout=30) as smtp:
        if login:  # the submission port takes mail only from users who logged in
            smtp.login(*SUBMISSION_LOGIN)
        smtp.sendmail(sender, [to], data)
    print(f"sent to {to} via {host}:{port}")


def messages(args):
    """(port, envelope sender, recipient, bytes) for the command given."""
    alice = "alice@example.com"
    if args.command == "inbox":
        data = compose(alice, "bob@example.com", "Hello Bob", "Signed by example.com, verified on arrival.\n")
        return args.mx_port, alice, "bob@example.com", sign_as_sender(data, args.config)
    if args.command in ("subscribe", "unsubscribe"):
        address = args.address or alice
        to = LIST.replace("@", f"-{args.command}@")
        data = compose(address, to, args.command, "\n")
        # example.com publishes DMARC p=reject: its users' mail is signed, as their provider would sign it
        return args.mx_port, address, to, sign_as_sender(data, args.config) if address.endswith("@example.com") else data
    if args.command == "post":
        data = compose(alice, LIST, "Lunch on Friday", "Shall we meet at noon?\n\nAlice\n")
        return args.mx_port, alice, LIST, sign_as_sender(data, args.config)
    if args.command == "news":
        data = compose("news@news.example.com", "dave@example.net", "News", "Signed as news.example.com once its "
                       "key is active, as example.com (the shared key) until then.\n")
        return args.submission_port, alice, "dave@example.net", data
    data = compose(alice, "dave@example.net", "Hello Dave", "Signed on the way out.\n")
    return args.submission_port, alice, "dave@example.net", data


def options(argv=None) -> argparse.Namespace:
    env = os.environ.get
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["inbox", "subscribe", "unsubscribe", "post", "submit", "news"])
    parser.add_argument("address", nargs="?", help="who (un)subscribes (default alice@example.com)")
    parser.add_argument("--host", default=env("EXAMPLE_HOST", "127.0.0.1"))
    parser.add_argument("--mx-port", type=int, default=int(env("EXAMPLE_MX_PORT", 8823)))
    parser.add_argument("--submission-port", type=int, default=int(env("EXAMPLE_SUBMISSION_PORT", 8587)))
    parser.add_argument("--config", default=env("EXAMPLE_DKIM_CONFIG", "config/salmon_dkim.ini"))
    return parser.parse_args(argv)


if __name__ == "__main__":
    arguments = options()
    port, sender, recipient, message = messages(arguments)
    try:
        send(arguments.host, port, sender, recipient, message, login=port == arguments.submission_port)
    except (OSError, smtplib.SMTPException) as exc:
        sys.exit(f"not sent: {exc} (is run.py running?)")
