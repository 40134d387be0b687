"""Lookups over live DNS with dnspython, time-limited, cached and counted.

Salmon handles mail in one thread, so every lookup is bounded by ``timeout``
seconds in all (retries and the TCP retry of a truncated answer included).
Answers and final negative answers go through a ``DNSCache`` when one is
given (dnspython's own cache; see cache.py).  ``stats`` counts lookups, cache
hits and misses, timeouts, SERVFAIL and other failures for monitoring.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field, fields
from typing import Dict, List, Optional, Sequence

import dns.exception
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdatatype
import dns.resolver

from salmon_dkim.dns.cache import DNSCache
from salmon_dkim.dns.resolver import (NoRecord, NoSuchDomain, RdataType, TemporaryDNSError, joined_txt,
                                      rdata_type)

# Large enough for a 4096-bit key over UDP, small enough not to fragment (DNS flag day 2020).
EDNS_PAYLOAD = 1232
# dnspython pauses this long after a round of silent nameservers before it checks its lifetime.
RETRY_PAUSE = 0.1


@dataclass
class DNSStats:
    """Counters since start, for monitoring; ``as_dict()`` reads them all at once."""

    lookups: int = 0
    cache_hits: int = 0
    cache_misses: int = 0
    timeouts: int = 0
    servfails: int = 0
    failures: int = 0  # other temporary failures: REFUSED, network errors, malformed answers
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, counter: str) -> None:
        with self._lock:  # the Salmon face may look up from several threads
            setattr(self, counter, getattr(self, counter) + 1)

    def as_dict(self) -> Dict[str, int]:
        with self._lock:
            return {f.name: getattr(self, f.name) for f in fields(self) if not f.name.startswith("_")}


class LiveResolver:
    """Resolver over DNS: the given nameservers, or the system's (/etc/resolv.conf) when none."""

    def __init__(self, nameservers: Sequence[str] = (), port: int = 53, timeout: float = 3.0,
                 cache: Optional[DNSCache] = None) -> None:
        self.timeout = timeout
        self.cache = cache
        self.stats = DNSStats()
        self._setup_error: Optional[str] = None
        try:
            self._resolver = dns.resolver.Resolver(configure=not nameservers)
        except dns.resolver.NoResolverConfiguration as exc:
            self._resolver = dns.resolver.Resolver(configure=False)
            self._setup_error = f"no nameservers configured and none found in /etc/resolv.conf ({exc})"
        if nameservers:
            self._resolver.nameservers = list(nameservers)
        self._resolver.port = port
        self._resolver.lifetime = max(timeout - RETRY_PAUSE, timeout / 2)
        # Each of the first three nameservers gets its share, so a dead first one does not use it all.
        self._resolver.timeout = self._resolver.lifetime / max(1, min(3, len(self._resolver.nameservers)))
        self._resolver.use_edns(0, 0, EDNS_PAYLOAD)
        self._resolver.cache = cache

    @classmethod
    def from_settings(cls, settings) -> "LiveResolver":
        """Built from a salmon_dkim.config.DNSSettings ([DNS] section)."""
        cache = None
        if settings.cache_size > 0:
            cache = DNSCache(settings.cache_size, settings.max_cache_ttl, settings.negative_cache_ttl,
                             path=settings.cache_file)
        return cls(settings.nameservers, settings.port, settings.timeout, cache)

    @property
    def nameservers(self) -> List[str]:
        return [f"{ns}:{self._resolver.port}" for ns in self._resolver.nameservers]

    def txt(self, name: str) -> List[bytes]:
        """The TXT records at name, each record's strings joined; NoRecord or TemporaryDNSError."""
        return joined_txt(self.query(name, dns.rdatatype.TXT))

    def query(self, name: str, rdtype: RdataType) -> List[dns.rdata.Rdata]:
        """The records of rdtype at name, CNAMEs followed; NoRecord or TemporaryDNSError."""
        wanted = rdata_type(rdtype)
        name = name.rstrip(".")
        self.stats.add("lookups")
        try:
            qname = dns.name.from_text(name)
        except dns.exception.DNSException as exc:
            raise NoRecord(f"{name}: not a valid DNS name ({exc})") from None
        if self.cache is not None:
            answer = self.cache.lookup(qname, wanted)
            if answer is not None:
                self.stats.add("cache_hits")
                if answer.response.rcode() == dns.rcode.NXDOMAIN:
                    raise NoSuchDomain(f"{name}: does not exist (NXDOMAIN, cached answer)")
                if answer.rrset is None:
                    raise NoRecord(f"{name}: exists but has no {wanted.name} record (cached answer)")
                return list(answer.rrset)
            self.stats.add("cache_misses")
        return list(self._ask(name, qname, wanted))

    def close(self) -> None:
        if self.cache is not None:
            self.cache.close()

    def _ask(self, name: str, qname: dns.name.Name, wanted: dns.rdatatype.RdataType):
        if self._setup_error:
            self.stats.add("failures")
            raise TemporaryDNSError(f"{name}: not looked up: {self._setup_error}")
        try:
            return self._resolver.resolve(qname, wanted, search=False)
        except dns.resolver.NXDOMAIN:
            raise NoSuchDomain(f"{name}: does not exist (NXDOMAIN)") from None
        except dns.resolver.NoAnswer:
            raise NoRecord(f"{name}: exists but has no {wanted.name} record") from None
        except dns.exception.Timeout:
            self.stats.add("timeouts")
            raise TemporaryDNSError(f"{name}: no answer within {self.timeout:g} s from "
                                    f"{', '.join(self.nameservers) or 'any nameserver'}") from None
        except dns.resolver.NoNameservers as exc:
            errors = exc.kwargs.get("errors") or []
            self.stats.add("servfails" if any(e[3] == "SERVFAIL" for e in errors) else "failures")
            raise TemporaryDNSError(f"{name}: lookup failed: {_failures(errors)}") from None
        except (dns.exception.DNSException, OSError) as exc:
            self.stats.add("failures")
            raise TemporaryDNSError(f"{name}: lookup failed: {exc}") from None


def _failures(errors) -> str:
    """"127.0.0.1:53 answered SERVFAIL; ..." from dnspython's error trace."""
    texts = [f"{_address(server, port)}{' over TCP' if tcp else ''} answered {error}"
             for server, tcp, port, error, *_ in errors]
    return "; ".join(texts) or "no nameserver could be asked"


def _address(server: str, port: int) -> str:
    """dnspython's "Do53:127.0.0.1@53" as "127.0.0.1:53"."""
    host = server.split(":", 1)[1].rsplit("@", 1)[0] if server.startswith("Do53:") else server
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
