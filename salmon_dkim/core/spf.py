"""SPF (RFC 7208): may this IP address send mail for the MAIL FROM domain (or, for a null sender, the HELO name)?

pyspf, the reference implementation, parses the record, expands macros and
keeps the lookup limits of RFC 7208 section 4.6.4 (10 mechanisms that query
DNS, 2 void lookups, 10 names per MX or PTR).  Its DNS goes through
``_ResolverQuery.dns``, overridden on our subclass of ``spf.query``, so every
lookup uses our resolver (per-message budget, zone files, our timeouts) and no
module-global state of pyspf is touched: checks may run in several threads.
pyspf's own DNS code (dnspython or pydns) is never called.

A temporary DNS failure is ``temperror``; running past ``time_limit`` seconds
in all is ``temperror`` too (RFC 7208 section 4.6.4).  Reasons are our own
plain words: they name the domain, the IP address and pyspf's rule, never the
MAIL FROM local-part, HELO text that is not a domain, or ``exp=`` text.
"""
from __future__ import annotations

import ipaddress
import re
import time
from dataclasses import dataclass
from typing import List, Optional

import dns.exception
import dns.name
import dns.rdatatype
import spf as pyspf

from salmon_dkim.dns.resolver import DNSError, LookupLimitExceeded, NoRecord, Resolver

RESULTS = ("pass", "fail", "softfail", "neutral", "none", "temperror", "permerror")
# RFC 7208 section 4.6.4 lets a check be cut off after at least 20 seconds.
TIME_LIMIT = 20.0
# RFC 5321 dot-atom local-part: shown in smtp.mailfrom as is; anything else shows the domain alone.
_DOT_ATOM = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
_PRINTABLE_RULE = re.compile(r"[^ -~]+")


@dataclass(frozen=True)
class SPFResult:
    """The outcome of one SPF check, with what Authentication-Results and DMARC need."""

    result: str  # one of RESULTS
    identity: str  # "mailfrom" or "helo" (null sender): smtp.mailfrom or smtp.helo
    domain: str  # the domain checked, lower case, A-labels; "" when there was none to check
    address: str  # the smtp.mailfrom (local@domain or domain) or smtp.helo value; "" when none
    reason: str
    type: str = "spf"

    def as_json(self) -> dict:
        return {"type": self.type, "identity": self.identity, "domain": self.domain, "result": self.result,
                "reason": self.reason}


def _domain(text: str) -> str:
    """text as a lower-case DNS name in A-labels, or "" when it is not one with two labels or more."""
    text = text.strip().rstrip(".")
    if not text or text.startswith("["):  # an address literal
        return ""
    try:
        name = dns.name.from_text(text).to_text(omit_final_dot=True).lower()
    except (dns.exception.DNSException, UnicodeError, ValueError):
        return ""
    if "." not in name or not re.fullmatch(r"[a-z0-9_.-]+", name):
        return ""
    return name


def _rdata_value(qtype: str, rdata):
    """One record in the shape pyspf's own dnspython lookup gives it."""
    if qtype in ("A", "AAAA"):
        return rdata.address
    if qtype == "MX":
        return rdata.preference, rdata.exchange.to_text(omit_final_dot=True)
    if qtype in ("PTR", "CNAME"):
        return rdata.target.to_text(omit_final_dot=True)
    return rdata.strings  # TXT: pyspf joins the strings itself


class _ResolverQuery(pyspf.query):
    """pyspf's query object with its DNS going through our resolver, bounded in time."""

    def __init__(self, ip: str, sender: str, helo: str, resolver: Resolver, time_limit: float) -> None:
        super().__init__(ip, sender, helo, strict=True)
        self.resolver = resolver
        self.time_limit = time_limit
        self.deadline = time.monotonic() + time_limit
        self.dns_failure: Optional[str] = None  # our resolver's words for a temporary failure

    def dns(self, name, qtype, cnames=None, ignore_void=False) -> List:
        """pyspf's contract: the values of qtype at name, [] for none; void lookups counted (RFC 7208 4.6.4)."""
        name = str(name).rstrip(".").lower()
        if not name or not all(0 < len(label) < 64 for label in name.split(".")):
            return []  # not a valid DNS name: pyspf's own lookup answers nothing too
        cached = self.cache.get((name, qtype))
        if cached:
            return cached
        if time.monotonic() > self.deadline:
            self.dns_failure = f"the check took longer than {self.time_limit:g} s"
            raise pyspf.TempError("DNS: time limit reached")
        try:
            values = [_rdata_value(qtype, r) for r in self.resolver.query(name, qtype)]
        except NoRecord:
            values = []
        except LookupLimitExceeded:
            raise pyspf.PermError("per-message DNS lookup limit reached (MaxLookupsPerMessage)") from None
        except DNSError as exc:
            self.dns_failure = str(exc)
            raise pyspf.TempError("DNS: temporary failure") from None
        self.cache[(name, qtype)] = values
        if not values and not ignore_void:
            self.void_lookups += 1
            if self.void_lookups > pyspf.MAX_VOID_LOOKUPS:
                raise pyspf.PermError(f"more than {pyspf.MAX_VOID_LOOKUPS} lookups found nothing "
                                      "(void lookup limit)")
        return values


def _smtp_address(local: str, domain: str) -> str:
    """What smtp.mailfrom shows: local@domain for a plain local-part, else the domain alone (RFC 8601 2.7.2)."""
    if len(local) <= 64 and _DOT_ATOM.fullmatch(local):
        return f"{local}@{domain}"
    return domain


def check_spf(ip: str, mail_from: str, helo: str, resolver: Resolver, *,
              time_limit: float = TIME_LIMIT) -> SPFResult:
    """The SPF result for a client at ``ip`` that said ``helo`` and gave ``mail_from`` ("" or "<>": null).

    The MAIL FROM identity is checked; for a null sender the HELO identity
    (RFC 7208 section 2.4).  ``resolver`` answers every lookup: give it the
    message's BudgetedResolver so SPF shares the per-message budget.
    Raises ValueError when ``ip`` is not an IP address (the caller's mistake).
    """
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        raise ValueError(f"{ip!r} is not an IP address; SPF needs the client's address") from None
    mail_from = (mail_from or "").strip()
    if mail_from.startswith("<") and mail_from.endswith(">"):
        mail_from = mail_from[1:-1]
    if mail_from:
        local, at, domain_text = mail_from.rpartition("@")
        identity, domain = "mailfrom", _domain(domain_text)
        if not at:
            local = "postmaster"  # RFC 7208 section 4.3: a sender without a local-part
        shown = _smtp_address(local or "postmaster", domain) if domain else ""
    else:
        identity, domain = "helo", _domain(helo or "")
        local, shown = "postmaster", domain
    if not domain:
        what = "MAIL FROM" if identity == "mailfrom" else "HELO name"
        return SPFResult("none", identity, "", "", f"the {what} has no domain SPF can check (RFC 7208 4.3)")

    query = _ResolverQuery(str(address), f"{local or 'postmaster'}@{domain}", helo or domain, resolver,
                           time_limit)
    try:
        result, _, _ = query.check()
    except Exception as exc:  # noqa: BLE001 (a pyspf bug on hostile data must not lose the message)
        return SPFResult("permerror", identity, domain, shown,
                         f"the SPF record of {domain} could not be evaluated ({type(exc).__name__} in pyspf)")
    if result not in RESULTS:  # pyspf's "ambiguous" is only given in its harsh mode, never used here
        result = "permerror"
    return SPFResult(result, identity, domain, shown, _reason(result, query, domain, str(address)))


def _reason(result: str, query: _ResolverQuery, domain: str, ip: str) -> str:
    if result == "pass":
        return f"{ip} is allowed to send for {domain} by its SPF record"
    if result == "fail":
        return f"{ip} is not allowed to send for {domain}: its SPF record says fail"
    if result == "softfail":
        return f"{ip} is not allowed to send for {domain}: its SPF record says softfail (~)"
    if result == "neutral":
        return f"the SPF record of {domain} neither allows nor denies {ip}"
    if result == "none":
        return f"{domain} publishes no SPF record"
    if result == "temperror":
        return f"SPF check of {domain} failed for now: {query.dns_failure or 'temporary DNS failure'}"
    rule = _PRINTABLE_RULE.sub(" ", str(getattr(query, "prob", "") or "malformed record"))[:100]
    return f"the SPF record of {domain} is unusable: {rule}"
