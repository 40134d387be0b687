"""Result types shared by the core, the Salmon face and the command line.

Small frozen classes, separate from the code that produces them (as authres
keeps one class per result method apart from its parser).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

from salmon_dkim.core.message import Authors


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
    quarantine: bool = False  # DMARC asked for quarantine: the handler may route it (and the header says so)


RESULT_WORDS = ("pass", "fail", "neutral", "policy", "temperror", "permerror")
"""RFC 8601 section 2.7.1 result words a signature can get."""


class InternalError(Exception):
    """Our own code failed on a message: not the message's fault.  InternalErrorAction decides."""


@dataclass(frozen=True)
class SignatureResult:
    """What became of one signature."""

    type: str  # "dkim" | "domainkeys"
    domain: str
    selector: str
    algorithm: str
    result: str  # one of RESULT_WORDS
    reason: str
    b: str = ""  # first 8 characters of b=, for header.b= (RFC 6008)
    identity: Optional[str] = None
    testing: bool = False
    key_bits: Optional[int] = None
    identity_source: Optional[str] = None  # DomainKeys: "from" | "sender", the field identity came from
    internal: bool = False  # the result comes from a bug of ours, not from the message

    def as_json(self) -> dict:
        return {"type": self.type, "domain": self.domain, "selector": self.selector,
                "algorithm": self.algorithm, "result": self.result, "reason": self.reason}


@dataclass(frozen=True)
class VerificationReport:
    """Every signature's result, in header order (top first), and the message-level methods."""

    results: Tuple[SignatureResult, ...] = ()
    not_checked: int = 0  # signatures beyond MaxSignatures
    author_domain: Optional[str] = None  # the single author's domain, None when there is no single author
    authors: Optional[Authors] = None  # every From address, and why there is no single author
    adsp: Optional[str] = None  # RFC 5617 result word when ADSP ran
    adsp_reason: Optional[str] = None
    unverified_reason: Optional[str] = None  # why the message as a whole was not verified
    arc: Optional[str] = None  # RFC 8617 chain result when the message has ARC sets
    arc_reason: Optional[str] = None
    internal_error: Optional[str] = None  # a bug of ours cost a result: InternalErrorAction applies
    spf: Optional[object] = None  # salmon_dkim.core.spf.SPFResult when SPF was checked
    dmarc: Optional[object] = None  # salmon_dkim.core.dmarc.DMARCResult when DMARC was evaluated

    @property
    def passed(self) -> bool:
        return any(r.result == "pass" for r in self.results)
