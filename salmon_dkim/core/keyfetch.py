"""Fetching a signer's public key record, for DKIM and DomainKeys alike.

Each way a lookup can end maps to an RFC 8601 result word: no key is
``permerror``, a DNS failure that may pass is ``temperror``.
"""
from __future__ import annotations

import re
from typing import Callable, Optional, Tuple

from salmon_dkim.dns.resolver import DNSError, LookupLimitExceeded, NoRecord, TemporaryDNSError, TXTResolver
from salmon_dkim.core.keys import KeyRecord, KeyRecordError, key_name

DOMAIN = re.compile(r"(?=.{1,253}$)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
                    r"(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*")
"""A domain name or selector as a signature may give it (underscores allowed, as in DNS)."""


class SignatureProblem(Exception):
    """Ends the check of one signature with a result word and a reason."""

    def __init__(self, result: str, reason: str) -> None:
        super().__init__(reason)
        self.result = result
        self.reason = reason


def fetch_key(selector: str, domain: str, resolver: TXTResolver,
              parse: Callable[[str, str, bytes], KeyRecord], *,
              lookup_limit: Optional[int] = None) -> Tuple[KeyRecord, bytes]:
    """The one usable key record at SELECTOR._domainkey.DOMAIN and its text, or SignatureProblem.

    ``parse(selector, domain, txt)`` turns the TXT text into a KeyRecord (a cache may stand in);
    ``lookup_limit`` is only named in the reason when the per-message limit stopped the lookup.
    """
    name = key_name(selector, domain)
    try:
        records = resolver.txt(name)
    except LookupLimitExceeded:
        many = f"more than {lookup_limit}" if lookup_limit else "too many"
        raise SignatureProblem("permerror", f"key {name} not looked up: {many} DNS lookups for "
                               "this message (MaxLookupsPerMessage), the per-message lookup limit") from None
    except NoRecord:
        raise SignatureProblem("permerror", f"no key published at {name} (NXDOMAIN or no TXT)") from None
    except TemporaryDNSError as exc:
        raise SignatureProblem("temperror", f"key lookup {name} failed temporarily: {exc}") from None
    except DNSError as exc:
        raise SignatureProblem("temperror", f"key lookup {name} failed: {exc}") from None
    if len(records) != 1:
        raise SignatureProblem("permerror", f"{len(records)} TXT records at {name}; a key needs exactly one")
    try:
        record = parse(selector, domain, records[0])
    except KeyRecordError as exc:
        raise SignatureProblem("permerror", f"key record at {name} is malformed: {exc}") from None
    if record.revoked:
        raise SignatureProblem("permerror", f"key {name} has been revoked (empty p=)")
    return record, records[0]
