"""DNS lookups for DKIM, ARC, ADSP, SPF and DMARC: one interface, two sources.

``Resolver.query(name, rdtype)`` returns the records of one type at ``name``
as dnspython rdata (A and AAAA: ``.address``; MX: ``.preference`` and
``.exchange``; PTR and CNAME: ``.target``; TXT: ``.strings``), following
CNAMEs as resolvers do.  ``Resolver.txt(name)`` is the TXT shortcut DKIM keys
and policy records use: each record's strings joined without separators (RFC
6376 section 3.6.2.2).

Both raise ``NoRecord`` for an answer that is final (``NoSuchDomain`` for
NXDOMAIN, plain ``NoRecord`` when the name exists without records of that
type) and ``TemporaryDNSError`` for one that is not (timeout, SERVFAIL,
network trouble): the first makes a ``permerror`` (or SPF's "none"), the
second a ``temperror``.  ``LookupLimitExceeded`` says the per-message budget
refused the lookup.

Sources: a zone file (RFC 1035 master file with absolute owner names, for
tests, air-gapped checks and the example project) and live DNS through
dnspython (see ``LiveResolver``).
"""
from __future__ import annotations

import os
import re
from typing import Dict, List, Optional, Protocol, Set, Tuple, Union

import dns.exception
import dns.name
import dns.rdata
import dns.rdatatype
import dns.zonefile

# Resolvers give up on longer CNAME chains; BIND and Unbound stop at 8 to 16 links.
MAX_CNAME_CHAIN = 16


class DNSError(Exception):
    """A lookup that gave no usable answer."""


class NoRecord(DNSError):
    """Final: the name does not exist, or has no record of the type asked for."""


class NoSuchDomain(NoRecord):
    """Final: the name does not exist at all (NXDOMAIN), as opposed to existing without that type."""


class TemporaryDNSError(DNSError):
    """Not final: timeout, SERVFAIL or network trouble; ask again later."""


class LookupLimitExceeded(DNSError):
    """The per-message cap on lookups was reached; the lookup was not made."""


RdataType = Union[str, dns.rdatatype.RdataType]


class TXTResolver(Protocol):
    def txt(self, name: str) -> List[bytes]:
        """The TXT records at name, strings of each joined; raises NoRecord or TemporaryDNSError."""


class Resolver(TXTResolver, Protocol):
    def query(self, name: str, rdtype: RdataType) -> List[dns.rdata.Rdata]:
        """The records of rdtype at name (CNAMEs followed); raises NoRecord or TemporaryDNSError."""


def rdata_type(rdtype: RdataType) -> dns.rdatatype.RdataType:
    """"MX" or dns.rdatatype.MX as dns.rdatatype.MX; ValueError for a type that does not exist."""
    try:
        return dns.rdatatype.RdataType.make(rdtype)
    except (dns.rdatatype.UnknownRdatatype, ValueError):
        raise ValueError(f"{rdtype!r} is not a DNS record type") from None


def joined_txt(records: List[dns.rdata.Rdata]) -> List[bytes]:
    """Each TXT record's strings joined without separators (RFC 6376 section 3.6.2.2, RFC 7208 3.3)."""
    return [b"".join(r.strings) for r in records]


_PLAIN_NAME = re.compile(r"[A-Za-z0-9_-]{1,63}(?:\.[A-Za-z0-9_-]{1,63})*\.?")


def _key(name: str) -> str:
    """The name as dnspython writes it (special characters escaped), lower case, absolute."""
    if len(name) < 254 and _PLAIN_NAME.fullmatch(name):  # nothing to escape: a tenth of dnspython's cost
        return name.rstrip(".").lower() + "."
    return dns.name.from_text(name.rstrip(".") + ".").to_text().lower()


class ZoneResolver:
    """Answers from an RFC 1035 master file; a name not in the file does not exist.

    A, AAAA, MX, PTR, TXT and CNAME records (any type dnspython reads) are
    served; a CNAME is followed for the other types, and a chain that loops or
    runs past MAX_CNAME_CHAIN links is a final "no record" (the file will not change).
    """

    def __init__(self, path: "str | os.PathLike") -> None:
        self.path = str(path)
        try:
            with open(self.path, encoding="utf-8") as f:
                text = f.read()
        except (OSError, UnicodeDecodeError) as exc:
            raise DNSError(f"{self.path}: cannot be read as a zone file: {exc}") from None
        self._load(text)

    @classmethod
    def from_text(cls, text: str, source: str = "<zone text>") -> "ZoneResolver":
        """A ZoneResolver over zone-file text; ``source`` names it in errors."""
        resolver = cls.__new__(cls)
        resolver.path = source
        resolver._load(text)
        return resolver

    def _load(self, text: str) -> None:
        try:
            rrsets = dns.zonefile.read_rrsets(text, rdclass=None, default_ttl=3600, origin=dns.name.root,
                                              relativize=False)
        except dns.exception.DNSException as exc:
            raise DNSError(f"{self.path}: cannot be read as a zone file: {exc}") from None
        self._records: Dict[Tuple[str, int], List[dns.rdata.Rdata]] = {}
        self._names: Set[str] = set()  # every owner name and the names above it up to the root
        for rrset in rrsets:
            owner = rrset.name.to_text().lower()
            labels = owner.split(".")
            self._names.update(".".join(labels[i:]) for i in range(len(labels)))
            self._records.setdefault((owner, rrset.rdtype), []).extend(rrset)

    def query(self, name: str, rdtype: RdataType) -> List[dns.rdata.Rdata]:
        wanted = rdata_type(rdtype)
        shown = name.rstrip(".")
        try:
            key, seen = _key(name), set()
        except dns.exception.DNSException as exc:
            raise NoRecord(f"{shown}: not a valid DNS name ({exc})") from None
        while True:
            records = self._records.get((key, wanted))
            if records:
                return list(records)
            alias = self._records.get((key, dns.rdatatype.CNAME)) if wanted != dns.rdatatype.CNAME else None
            if not alias:
                break
            seen.add(key)
            key = alias[0].target.to_text().lower()
            if key in seen or len(seen) > MAX_CNAME_CHAIN:
                raise NoRecord(f"{shown}: its CNAME chain loops or is longer than {MAX_CNAME_CHAIN} "
                               f"in {self.path}")
        if key not in self._names:
            raise NoSuchDomain(f"{shown}: does not exist in {self.path}")
        raise NoRecord(f"{shown}: no {wanted.name} record in {self.path}")

    def txt(self, name: str) -> List[bytes]:
        return joined_txt(self.query(name, dns.rdatatype.TXT))


class BudgetedResolver:
    """Wraps a resolver for one message: at most ``limit`` lookups, then LookupLimitExceeded.

    One budget for every check of the message (DKIM, ARC, ADSP, SPF, DMARC):
    ``txt`` and ``query`` draw on the same count.
    """

    def __init__(self, resolver: Resolver, limit: int) -> None:
        self.resolver = resolver
        self.limit = limit
        self.remaining = limit

    def _spend(self, name: str) -> None:
        if self.remaining <= 0:
            raise LookupLimitExceeded(f"{name}: not looked up; the per-message DNS lookup limit "
                                      f"({self.limit}) was reached")
        self.remaining -= 1

    def txt(self, name: str) -> List[bytes]:
        self._spend(name)
        return self.resolver.txt(name)

    def query(self, name: str, rdtype: RdataType) -> List[dns.rdata.Rdata]:
        self._spend(name)
        return self.resolver.query(name, rdtype)


def resolver_from_settings(settings, zone_file: Optional[str] = None) -> Resolver:
    """The resolver a DNSSettings asks for: its zone file (or ``zone_file``) when set, else live DNS."""
    path = zone_file or settings.zone_file
    if path:
        return ZoneResolver(path)
    from salmon_dkim.dns.live import LiveResolver  # noqa: PLC0415 (live DNS only when asked for)
    return LiveResolver.from_settings(settings)
