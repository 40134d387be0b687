"""TXT lookups for DKIM keys and ADSP records: one interface, two sources.

``TXTResolver.txt(name)`` returns the TXT records at ``name``, each record's
strings joined without separators (RFC 6376 section 3.6.2.2).  It raises
``NoRecord`` for an answer that is final (NXDOMAIN, or no TXT there) and
``TemporaryDNSError`` for one that is not (timeout, SERVFAIL, network
trouble): the first makes a ``permerror``, the second a ``temperror``.

Sources: a zone file (RFC 1035 master file with absolute owner names, for
tests, air-gapped checks and the example project) and live DNS through
dnspython (see ``LiveResolver``).
"""
from __future__ import annotations

import os
from typing import Dict, List, Optional, Protocol

import dns.exception
import dns.name
import dns.rdatatype
import dns.zonefile


class DNSError(Exception):
    """A TXT lookup that gave no usable answer."""


class NoRecord(DNSError):
    """Final: the name does not exist, or has no TXT record."""


class NoSuchDomain(NoRecord):
    """Final: the name does not exist at all (NXDOMAIN), as opposed to existing without TXT."""


class TemporaryDNSError(DNSError):
    """Not final: timeout, SERVFAIL or network trouble; ask again later."""


class LookupLimitExceeded(DNSError):
    """The per-message cap on lookups was reached; the lookup was not made."""


class TXTResolver(Protocol):
    def txt(self, name: str) -> List[bytes]:
        """The TXT records at name, strings of each joined; raises NoRecord or TemporaryDNSError."""


def _key(name: str) -> str:
    return name.lower().rstrip(".") + "."


class ZoneResolver:
    """Answers from an RFC 1035 master file; a name not in the file does not exist."""

    def __init__(self, path: "str | os.PathLike") -> None:
        self.path = str(path)
        try:
            with open(self.path, encoding="utf-8") as f:
                rrsets = dns.zonefile.read_rrsets(f.read(), rdclass=None, default_ttl=3600, origin=dns.name.root,
                                                  relativize=False)
        except (OSError, UnicodeDecodeError, dns.exception.DNSException) as exc:
            raise DNSError(f"{self.path}: cannot be read as a zone file: {exc}") from None
        self._records: Dict[str, List[bytes]] = {}
        self._names = set()  # every owner name and the names above it up to the root
        for rrset in rrsets:
            owner = _key(rrset.name.to_text())
            labels = owner.split(".")
            self._names.update(".".join(labels[i:]) for i in range(len(labels)))
            if rrset.rdtype == dns.rdatatype.TXT:
                self._records.setdefault(owner, []).extend(b"".join(r.strings) for r in rrset)

    def txt(self, name: str) -> List[bytes]:
        records = self._records.get(_key(name))
        if not records:
            if _key(name) not in self._names:
                raise NoSuchDomain(f"{name.rstrip('.')}: does not exist in {self.path}")
            raise NoRecord(f"{name.rstrip('.')}: no TXT record in {self.path}")
        return list(records)


class BudgetedResolver:
    """Wraps a resolver for one message: at most ``limit`` lookups, then LookupLimitExceeded."""

    def __init__(self, resolver: TXTResolver, limit: int) -> None:
        self.resolver = resolver
        self.remaining = limit

    def txt(self, name: str) -> List[bytes]:
        if self.remaining <= 0:
            raise LookupLimitExceeded(f"{name}: not looked up; the per-message DNS lookup limit was reached")
        self.remaining -= 1
        return self.resolver.txt(name)


def resolver_from_settings(settings, zone_file: Optional[str] = None) -> TXTResolver:
    """The resolver a DNSSettings asks for: its zone file (or ``zone_file``) when set, else live DNS."""
    path = zone_file or settings.zone_file
    if path:
        return ZoneResolver(path)
    from salmon_dkim.dns.live import LiveResolver  # noqa: PLC0415 (live DNS only when asked for)
    return LiveResolver.from_settings(settings)
