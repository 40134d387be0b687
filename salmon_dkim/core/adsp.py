"""Author Domain Signing Practices (RFC 5617): does the From domain promise to sign?

ADSP is historic, but MDaemon and others still offer it.  A message with no
passing signature from its author domain fails when that domain publishes
``dkim=all`` (result ``fail``) or ``dkim=discardable`` (result ``discard``),
except, as our issue 4 asks, when an author-domain signature failed with a key
in testing mode (``t=y``): that is reported as ``unknown``.  An author-domain
signature that met a temporary DNS failure makes the result ``temperror``.

An author domain that does not exist at all (NXDOMAIN, RFC 5617 section 4.3;
any query type will do, ours is TXT) gives ``nxdomain``.

The From field cannot be used to dodge it: with several From fields or
addresses every author domain is checked and the most severe result stands; a
message whose author cannot be read at all (no From, a From that does not
parse, no address) is ``permerror``, which policy treats as a failure
(RFC 6376 section 8.15 and RFC 7489 section 6.6.1 reason the same way).
"""
from __future__ import annotations

from typing import Iterable, List, Optional, Tuple

from salmon_dkim.core.message import Authors
from salmon_dkim.core.tags import parse_tags
from salmon_dkim.dns.resolver import DNSError, LookupLimitExceeded, NoRecord, NoSuchDomain, TemporaryDNSError, TXTResolver

PRACTICES = ("unknown", "all", "discardable")
SEVERITY = ("discard", "fail", "permerror", "temperror", "nxdomain", "unknown", "pass", "none")
"""With several author domains, the first of these among their results stands."""


def adsp_name(domain: str) -> str:
    return f"_adsp._domainkey.{domain}"


def practice(domain: str, resolver: TXTResolver) -> Tuple[Optional[str], str]:
    """The published practice ("unknown", "all", "discardable") or None, with a reason."""
    name = adsp_name(domain)
    records = []
    for txt in resolver.txt(name):
        try:
            tags = parse_tags(txt)
        except ValueError:
            continue  # RFC 5617 4.2.1: a record that does not parse is ignored
        if b"dkim" in tags:
            records.append(tags[b"dkim"].strip().lower().decode("ascii", "replace"))
    if len(records) != 1:
        return None, f"no usable ADSP record at {name}"
    value = records[0] if records[0] in PRACTICES else "unknown"
    return value, f"{name} says dkim={value}"


def evaluate(authors: Authors, results: Iterable, resolver: TXTResolver) -> Tuple[str, str]:
    """The RFC 5617 result word and a reason, given the message's authors and signature results."""
    if not authors.domains or not authors.parsable:
        return "permerror", f"the author cannot be determined: {authors.problem}"
    results = list(results)
    found: List[Tuple[str, str]] = [evaluate_domain(domain, results, resolver) for domain in authors.domains]
    return min(found, key=lambda item: SEVERITY.index(item[0]))


def evaluate_domain(author_domain: str, results: List, resolver: TXTResolver) -> Tuple[str, str]:
    """The RFC 5617 result word and a reason for one author domain."""
    own = [r for r in results if r.type == "dkim" and r.domain == author_domain]
    if any(r.result == "pass" for r in own):
        return "pass", f"a valid signature by the author domain {author_domain}"
    if any(r.result == "temperror" for r in own):  # it may be valid: "fail" could become a 550
        return "temperror", (f"the signature by the author domain {author_domain} could not be "
                             "checked (temporary DNS failure); ADSP is decided on retry")
    try:
        resolver.txt(author_domain)  # section 4.3: does the author domain exist at all?
    except NoSuchDomain:
        return "nxdomain", f"the author domain {author_domain} does not exist (NXDOMAIN)"
    except NoRecord:
        pass  # it exists, without TXT records
    except LookupLimitExceeded as exc:
        return "permerror", str(exc)
    except DNSError as exc:
        return "temperror", f"existence check of {author_domain} failed: {exc}"
    try:
        value, reason = practice(author_domain, resolver)
    except NoRecord:
        return "none", f"no ADSP record at {adsp_name(author_domain)}"
    except LookupLimitExceeded as exc:
        return "permerror", str(exc)
    except (TemporaryDNSError, DNSError) as exc:
        return "temperror", f"ADSP lookup failed: {exc}"
    if value is None:
        return "none", reason
    if value == "unknown":
        return "unknown", reason
    if any(r.testing for r in own):
        return "unknown", f"{reason}, but the author-domain key is in testing mode (t=y)"
    word = "discard" if value == "discardable" else "fail"
    return word, f"{reason} and no valid signature by {author_domain}"
