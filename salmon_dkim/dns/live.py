"""TXT lookups over live DNS with dnspython, time-limited and cached.

Salmon handles mail in one thread, so every lookup is bounded by ``timeout``
seconds in all (retries and the TCP retry of a truncated answer included).
Answers and final negative answers go through a ``TTLCache`` when one is given.
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import dns.exception
import dns.message
import dns.name
import dns.rdatatype
import dns.resolver

from salmon_dkim.dns.cache import TTLCache
from salmon_dkim.dns.resolver import NoRecord, NoSuchDomain, TemporaryDNSError

# Large enough for a 4096-bit key over UDP, small enough not to fragment (DNS flag day 2020).
EDNS_PAYLOAD = 1232
# dnspython pauses this long after a round of silent nameservers before it checks its lifetime.
RETRY_PAUSE = 0.1


class LiveResolver:
    """TXTResolver over DNS: the given nameservers, or the system's (/etc/resolv.conf) when none."""

    def __init__(self, nameservers: Sequence[str] = (), port: int = 53, timeout: float = 3.0,
                 cache: Optional[TTLCache] = None) -> None:
        self.timeout = timeout
        self.cache = cache
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

    @classmethod
    def from_settings(cls, settings) -> "LiveResolver":
        """Built from a salmon_dkim.config.DNSSettings ([DNS] section)."""
        cache = None
        if settings.cache_size > 0:
            cache = TTLCache(settings.cache_size, settings.max_cache_ttl, settings.negative_cache_ttl,
                             path=settings.cache_file)
        return cls(settings.nameservers, settings.port, settings.timeout, cache)

    @property
    def nameservers(self) -> List[str]:
        return [f"{ns}:{self._resolver.port}" for ns in self._resolver.nameservers]

    def txt(self, name: str) -> List[bytes]:
        """The TXT records at name, each record's strings joined; NoRecord or TemporaryDNSError."""
        name = name.rstrip(".")
        if self.cache is not None:
            cached = self.cache.get(name)
            if cached is not None:
                if cached.records is None:
                    raise NoSuchDomain(f"{name}: does not exist (NXDOMAIN, cached answer)")
                if not cached.records:
                    raise NoRecord(f"{name}: exists but has no TXT record (cached answer)")
                return list(cached.records)
        records, ttl = self._ask(name)
        if self.cache is not None:
            self.cache.put(name, records, ttl)
        return records

    def close(self) -> None:
        if self.cache is not None:
            self.cache.close()

    def _ask(self, name: str):
        if self._setup_error:
            raise TemporaryDNSError(f"{name}: not looked up: {self._setup_error}")
        try:
            qname = dns.name.from_text(name)
        except dns.exception.DNSException as exc:
            raise NoRecord(f"{name}: not a valid DNS name ({exc})") from None
        try:
            answer = self._resolver.resolve(qname, dns.rdatatype.TXT, search=False)
        except dns.resolver.NXDOMAIN as exc:
            self._cache_negative(name, exc.responses().get(qname))
            raise NoSuchDomain(f"{name}: does not exist (NXDOMAIN)") from None
        except dns.resolver.NoAnswer as exc:
            self._cache_negative(name, exc.response(), exists=True)
            raise NoRecord(f"{name}: exists but has no TXT record") from None
        except dns.exception.Timeout:
            raise TemporaryDNSError(f"{name}: no answer within {self.timeout:g} s from "
                                    f"{', '.join(self.nameservers) or 'any nameserver'}") from None
        except dns.resolver.NoNameservers as exc:
            raise TemporaryDNSError(f"{name}: lookup failed: {_failures(exc)}") from None
        except (dns.exception.DNSException, OSError) as exc:
            raise TemporaryDNSError(f"{name}: lookup failed: {exc}") from None
        records = [b"".join(rdata.strings) for rdata in answer]
        return records, answer.chaining_result.minimum_ttl

    def _cache_negative(self, name: str, response: Optional[dns.message.Message], *,
                        exists: bool = False) -> None:
        if self.cache is not None:
            self.cache.put_negative(name, negative_ttl(response), exists=exists)


def negative_ttl(response: Optional[dns.message.Message]) -> Optional[int]:
    """How long a negative answer may be cached (RFC 2308 section 5): its SOA's TTL and MINIMUM, or None."""
    if response is None:
        return None
    for rrset in response.authority:
        if rrset.rdtype == dns.rdatatype.SOA and len(rrset):
            return min(rrset.ttl, rrset[0].minimum)
    return None


def _failures(exc: dns.resolver.NoNameservers) -> str:
    """"127.0.0.1:53 answered SERVFAIL; ..." from dnspython's error trace."""
    texts = [f"{_address(server, port)}{' over TCP' if tcp else ''} answered {error}"
             for server, tcp, port, error, *_ in exc.kwargs.get("errors") or []]
    return "; ".join(texts) or "no nameserver could be asked"


def _address(server: str, port: int) -> str:
    """dnspython's "Do53:127.0.0.1@53" as "127.0.0.1:53"."""
    host = server.split(":", 1)[1].rsplit("@", 1)[0] if server.startswith("Do53:") else server
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
