"""Result types shared by the core, the Salmon face and the command line.

Small frozen classes, separate from the code that produces them (as authres
keeps one class per result method apart from its parser).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class Session:
    """The SMTP session and transaction a message came in on, as the receiver saw it."""

    peer_ip: Optional[str] = None
    helo: Optional[str] = None
    authenticated: bool = False  # SMTP AUTH succeeded, or a peer or header the INI file trusts
    role: str = "mx"  # "mx" | "submission" | "lmtp"
    user: Optional[str] = None  # the SMTP AUTH user name (smtp.auth in Authentication-Results)
    tls: bool = False  # the message came over TLS (STARTTLS)
    mail_from: Optional[str] = None  # the envelope sender as the client gave it; "" for the null sender <>


@dataclass(frozen=True)
class Outcome:
    action: str  # "accept" | "reject" | "tempfail" | "skip"
    code: Optional[int]  # 550, 451, or None when the message is accepted
    text: str  # "5.7.20 DKIM signature of example.com failed: body hash mismatch"
    score: float
    close_connection: bool
    reason: str
