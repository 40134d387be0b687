"""DMARC (RFC 7489): the author domain's policy record, alignment, and the disposition it asks for.

``evaluate_dmarc`` takes the author domains of From, the DKIM results and the
SPF result of a message and returns a ``DMARCResult``: the result word for
Authentication-Results (``dmarc=``, ``header.from``, ``policy.dmarc``), the
disposition after ``pct`` sampling, and what aggregate reports need.  It
decides nothing about SMTP replies: policy maps the disposition onto them, and
may override it (ARC, RFC 8617 section 7.2) with ``DMARCResult.with_override``.

A DNS failure fetching the record is ``temperror`` with disposition "none",
and so is a failure whose aligned DKIM or SPF check hit a temporary DNS
error (it may pass on retry): DMARC never turns a DNS failure into a reject.
Organizational domains come from the public suffix list of the
``publicsuffixlist`` package (refreshed with the package, never fetched).
"""
from __future__ import annotations

import dataclasses
import functools
import random
import re
from dataclasses import dataclass
from typing import Callable, Iterable, Optional, Sequence, Tuple

from salmon_dkim.core.tags import parse_tags
from salmon_dkim.dns.resolver import DNSError, LookupLimitExceeded, NoRecord, TXTResolver

RESULTS = ("pass", "fail", "none", "temperror", "permerror")
POLICIES = ("none", "quarantine", "reject")
# RFC 7489 section 6.6.4: a message left out by pct= gets the next policy down.
_NEXT_LOWER = {"reject": "quarantine", "quarantine": "none", "none": "none"}
_STRICTNESS = {"none": 0, "quarantine": 1, "reject": 2}
# Several author domains: of equally strict dispositions, the result shown is the most telling.
_RESULT_WEIGHT = {"fail": 4, "temperror": 3, "permerror": 2, "none": 1, "pass": 0}
# Each author domain costs up to two lookups; more than this many is not evaluated (RFC 7489 6.6.1 lets us refuse).
MAX_AUTHOR_DOMAINS = 10
_VERSION = re.compile(rb"v[ \t]*=[ \t]*DMARC1[ \t]*(?:;|$)")
_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:[^\s,!]+(?:![0-9]+[kmgt]?)?", re.IGNORECASE)


@functools.lru_cache(maxsize=1)
def _suffix_list():
    from publicsuffixlist import PublicSuffixList  # noqa: PLC0415 (0.1 s to load: only when DMARC runs)
    return PublicSuffixList()


def organizational_domain(domain: str) -> str:
    """The registered domain above ``domain`` (RFC 7489 section 3.2); a public suffix is its own."""
    domain = domain.lower().rstrip(".")
    return _suffix_list().privatesuffix(domain) or domain


def aligned(identifier: str, author_domain: str, mode: str) -> bool:
    """Whether an authenticated domain aligns with the author domain: "s" strict, "r" relaxed (section 3.1)."""
    identifier, author_domain = identifier.lower().rstrip("."), author_domain.lower().rstrip(".")
    if mode == "s":
        return identifier == author_domain
    return organizational_domain(identifier) == organizational_domain(author_domain)


@dataclass(frozen=True)
class DMARCRecord:
    """A DMARC policy record's tags as used (RFC 7489 section 6.3), defaults filled in."""

    domain: str  # the domain it was published for (the TXT record is at _dmarc.<domain>)
    p: str
    sp: str
    adkim: str = "r"
    aspf: str = "r"
    pct: int = 100
    rua: str = ""
    ruf: str = ""
    fo: str = "0"
    ri: int = 86400
    rf: str = "afrf"


class DMARCRecordError(ValueError):
    """A record that starts with v=DMARC1 but cannot be used; str() says why."""


def is_dmarc_record(text: bytes) -> bool:
    """Whether a TXT record starts with the v=DMARC1 tag (others at _dmarc are discarded, section 6.6.3)."""
    return _VERSION.match(text) is not None


def parse_record(text: bytes, domain: str) -> DMARCRecord:
    """The record published for ``domain``; DMARCRecordError when it is unusable (section 6.6.3).

    Unknown tags are ignored and a malformed optional tag takes its default
    (section 6.3).  A missing or invalid p= (or an invalid sp=) makes the record
    read as p=none when rua= names a reporting URI, and unusable otherwise.
    """
    if not is_dmarc_record(text):
        raise DMARCRecordError("it does not start with v=DMARC1")
    try:
        tags = {k.decode("ascii").lower(): v.decode("ascii") for k, v in parse_tags(text).items()}
    except (ValueError, UnicodeDecodeError) as exc:
        raise DMARCRecordError(f"its tag list is malformed ({exc})") from None
    rua = tags.get("rua", "")
    p, sp = tags.get("p", "").lower(), tags.get("sp", "").lower()
    problem = ("p= is missing" if "p" not in tags else "p= is not none, quarantine or reject"
               if p not in POLICIES else "sp= is not none, quarantine or reject" if sp and sp not in POLICIES
               else "")
    if problem:
        if not any(_URI.fullmatch(uri.strip()) for uri in rua.split(",")):
            raise DMARCRecordError(f"{problem}, and it names no rua= reporting URI to fall back on p=none for")
        p, sp = "none", "none"  # section 6.6.3: act as if p=none had been published
    pct = tags.get("pct", "100")
    ri = tags.get("ri", "86400")
    return DMARCRecord(
        domain=domain, p=p, sp=sp or p,
        adkim=_mode(tags.get("adkim")), aspf=_mode(tags.get("aspf")),
        pct=int(pct) if pct.isdigit() and int(pct) <= 100 else 100,
        rua=rua, ruf=tags.get("ruf", ""), fo=tags.get("fo", "0") or "0",
        ri=int(ri) if ri.isdigit() and len(ri) <= 10 else 86400, rf=tags.get("rf", "afrf") or "afrf")


def _mode(value: Optional[str]) -> str:
    return value.lower() if value is not None and value.lower() in ("r", "s") else "r"


@dataclass(frozen=True)
class DMARCResult:
    """What DMARC says about one message, for policy, Authentication-Results and aggregate reports."""

    result: str  # one of RESULTS
    domain: str  # header.from: the author domain ("" when it could not be determined)
    org_domain: str
    record: Optional[DMARCRecord]  # the record applied, with record.domain where it was found
    policy: Optional[str]  # policy.dmarc: p= or sp= as it applies to this domain; None without a record
    disposition: str  # none | quarantine | reject, after pct= (and any override)
    dkim_aligned: bool
    dkim_domain: str  # d= of the aligned passing signature, "" when none
    spf_aligned: bool
    spf_domain: str  # the SPF-authenticated domain when it aligns, "" when not
    reason: str
    override: str = ""  # RFC 7489 appendix C PolicyOverrideType: "sampled_out", or one policy sets
    override_comment: str = ""
    per_domain: Tuple["DMARCResult", ...] = ()  # one result per author domain when From had several
    type: str = "dmarc"

    def with_override(self, override: str, comment: str, disposition: str = "none") -> "DMARCResult":
        """This result with local policy overriding the disposition (e.g. "trusted_forwarder" for ARC)."""
        return dataclasses.replace(self, disposition=disposition, override=override, override_comment=comment)

    def as_json(self) -> dict:
        return {"type": self.type, "domain": self.domain, "result": self.result, "policy": self.policy,
                "disposition": self.disposition, "reason": self.reason}


def evaluate_dmarc(from_domains: Optional[Sequence[str]], dkim_results: Iterable, spf_result,
                   resolver: TXTResolver, *, sample: Callable[[], float] = random.random) -> DMARCResult:
    """The DMARC result of a message.

    ``from_domains``: the author domains of From (None when they cannot be
    determined); ``dkim_results``: objects with ``.type``, ``.domain`` and
    ``.result`` (SignatureResult); ``spf_result``: an SPFResult or None.
    ``sample()`` in [0, 1) decides pct= sampling.  Several author domains are
    each evaluated and the strictest disposition wins (RFC 7489 section 6.6.1).
    """
    domains = list(dict.fromkeys(d.lower().rstrip(".") for d in from_domains or () if d))
    if not domains:
        return _without_record("permerror", "", "the author domain could not be determined from From "
                               "(RFC 7489 section 6.6.1)")
    if len(domains) > MAX_AUTHOR_DOMAINS:
        return _without_record("permerror", domains[0], f"From names {len(domains)} author domains, more than "
                               f"the {MAX_AUTHOR_DOMAINS} evaluated (RFC 7489 section 6.6.1)")
    dkim = [(r.domain.lower().rstrip("."), r.result) for r in dkim_results if r.type == "dkim" and r.domain]
    results = [_evaluate_domain(d, dkim, spf_result, resolver, sample) for d in domains]
    if len(results) == 1:
        return results[0]
    worst = max(results, key=lambda r: (_STRICTNESS[r.disposition], _RESULT_WEIGHT[r.result]))
    return dataclasses.replace(worst, per_domain=tuple(results),
                               reason=f"{worst.reason} (the strictest of {len(results)} author domains)")


def _without_record(result: str, domain: str, reason: str) -> DMARCResult:
    return DMARCResult(result, domain, organizational_domain(domain) if domain else "", None, None, "none",
                       False, "", False, "", reason)


def _find_record(domain: str, org_domain: str, resolver: TXTResolver) -> Tuple[Optional[bytes], str]:
    """(record text, domain it was found for) per section 6.6.3; (None, reason) when there is none.

    Raises DNSError (temporary) or LookupLimitExceeded for the caller to map.
    """
    for candidate in dict.fromkeys((domain, org_domain)):
        try:
            records = [r for r in resolver.txt(f"_dmarc.{candidate}") if is_dmarc_record(r)]
        except NoRecord:
            records = []
        if len(records) > 1:
            return None, (f"{len(records)} DMARC records at _dmarc.{candidate}; with more than one no "
                          "policy applies (RFC 7489 section 6.6.3)")
        if records:
            return records[0], candidate
    where = " or ".join(f"_dmarc.{d}" for d in dict.fromkeys((domain, org_domain)))
    return None, f"no DMARC record at {where}"


def _evaluate_domain(domain: str, dkim, spf_result, resolver: TXTResolver, sample) -> DMARCResult:
    org = organizational_domain(domain)
    try:
        text, found = _find_record(domain, org, resolver)
    except LookupLimitExceeded as exc:
        return _without_record("permerror", domain, f"DMARC record not looked up: {exc}")
    except DNSError as exc:
        return _without_record("temperror", domain, f"DMARC record lookup failed for now: {exc}")
    if text is None:
        return _without_record("none", domain, found)
    try:
        record = parse_record(text, found)
    except DMARCRecordError as exc:
        return _without_record("permerror", domain, f"the DMARC record at _dmarc.{found} is unusable: {exc}")

    policy = record.sp if found == org and domain != org else record.p
    dkim_domain = next((d for d, result in dkim if result == "pass" and aligned(d, domain, record.adkim)), "")
    spf_domain = ""
    if spf_result is not None and spf_result.domain and aligned(spf_result.domain, domain, record.aspf):
        spf_domain = spf_result.domain if spf_result.result == "pass" else ""
        spf_pending = spf_result.result == "temperror"
    else:
        spf_pending = False
    base = DMARCResult("pass", domain, org, record, policy, "none", bool(dkim_domain), dkim_domain,
                       bool(spf_domain), spf_domain, "")
    if dkim_domain or spf_domain:
        how = " and ".join(filter(None, [dkim_domain and f"DKIM d={dkim_domain}",
                                         spf_domain and f"SPF {spf_domain}"]))
        return dataclasses.replace(base, reason=f"{how} aligned with {domain} ({_modes(record)})")
    if spf_pending or any(result == "temperror" and aligned(d, domain, record.adkim) for d, result in dkim):
        return dataclasses.replace(base, result="temperror", reason=(
            f"no aligned pass for {domain}, but an aligned check failed temporarily (DNS); "
            "DMARC is decided on retry"))
    reason = f"no DKIM or SPF pass aligned with {domain} ({_modes(record)}); policy {policy}"
    if policy != "none" and record.pct < 100 and sample() * 100 >= record.pct:
        lower = _NEXT_LOWER[policy]
        return dataclasses.replace(base, result="fail", disposition=lower, override="sampled_out",
                                   override_comment=f"pct={record.pct}",
                                   reason=f"{reason}; left out by pct={record.pct}, so {lower}")
    return dataclasses.replace(base, result="fail", disposition=policy, reason=reason)


def _modes(record: DMARCRecord) -> str:
    return f"adkim={record.adkim} aspf={record.aspf}"


def published_policy(domain: str, resolver: TXTResolver) -> Optional[str]:
    """The policy ``domain``'s DMARC record asks of failing mail ("none", "quarantine", "reject"), the
    organizational domain's sp= for a subdomain; None when there is no usable record.

    DNSError (temporary) propagates: the caller decides what an unknown policy means.
    """
    domain = domain.lower().rstrip(".")
    org = organizational_domain(domain)
    text, found = _find_record(domain, org, resolver)
    if text is None:
        return None
    try:
        record = parse_record(text, found)
    except DMARCRecordError:
        return None
    return record.sp if found == org and domain != org else record.p
