"""LiveResolver against a real dnsmasq on 127.0.0.1 (see dnsserver.py): answers, errors, time limit, cache."""
import time

import dns.message
import pytest

from dnsserver import (LONG, LONG_TEXT, MISSING, MULTI, NO_TXT, PLAIN, REFUSED, SERVFAIL, SOA_MISSING,
                       SOA_NEGATIVE_TTL, BlackHole)
from salmon_dkim.dns.cache import TTLCache
from salmon_dkim.dns.resolver import NoSuchDomain, NoRecord, TemporaryDNSError, ZoneResolver
from salmon_dkim.dns.live import LiveResolver, negative_ttl


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def cached_resolver(server, clock=None, *, max_size=100, max_ttl=86400, negative_ttl=300):
    cache = TTLCache(max_size, max_ttl, negative_ttl, clock=clock or Clock())
    return server.resolver(timeout=0.5, cache=cache)


# -- answers --------------------------------------------------------------------

def test_record_too_long_for_udp_comes_back_whole_over_tcp(dns_server):
    assert dns_server.resolver().txt(LONG) == [LONG_TEXT.encode()]


def test_strings_of_a_record_are_joined_without_separator(dns_server):
    assert dns_server.resolver().txt(MULTI) == [b"v=DKIM1; k=rsa; p=multi"]


def test_every_test_key_is_served_as_in_the_zone_file(keys_dns_server, zone_file):
    live, zone = keys_dns_server.resolver(), ZoneResolver(zone_file)
    for name in ["s1._domainkey.example.com", "big._domainkey.example.com", "ed1._domainkey.example.com",
                 "s2048._domainkey.example.org"]:
        assert live.txt(name) == zone.txt(name)


def test_several_records_at_one_name_all_come_back(dns_server_factory):
    server = dns_server_factory({"two.example.test": ["v=DKIM1; p=one", "v=DKIM1; p=two"]})
    assert sorted(server.resolver().txt("two.example.test")) == [b"v=DKIM1; p=one", b"v=DKIM1; p=two"]


# -- final and temporary errors -------------------------------------------------

def test_name_that_does_not_exist_is_no_such_domain(dns_server):
    with pytest.raises(NoSuchDomain, match=f"{MISSING}: does not exist"):
        dns_server.resolver().txt(MISSING)


def test_name_without_txt_record_is_no_record_but_exists(dns_server):
    with pytest.raises(NoRecord, match=f"{NO_TXT}: exists but has no TXT record") as info:
        dns_server.resolver().txt(NO_TXT)
    assert not isinstance(info.value, NoSuchDomain)


def test_cached_negative_answers_keep_their_kind(dns_server):
    resolver = cached_resolver(dns_server)
    for name in (MISSING, NO_TXT):
        with pytest.raises(NoRecord):
            resolver.txt(name)
    dns_server.stop()
    with pytest.raises(NoSuchDomain, match="cached"):
        resolver.txt(MISSING)
    with pytest.raises(NoRecord, match="exists but has no TXT record .cached") as info:
        resolver.txt(NO_TXT)
    assert not isinstance(info.value, NoSuchDomain)


def test_invalid_name_is_no_record(dns_server):
    with pytest.raises(NoRecord, match="not a valid DNS name"):
        dns_server.resolver().txt("s1.._domainkey.example.test")


def test_servfail_is_a_temporary_error(dns_server):
    expected = f"{SERVFAIL}: .*127.0.0.1:{dns_server.port} answered SERVFAIL"
    with pytest.raises(TemporaryDNSError, match=expected):
        dns_server.resolver().txt(SERVFAIL)


def test_refused_is_a_temporary_error(dns_server):
    with pytest.raises(TemporaryDNSError, match=f"{REFUSED}: .*answered REFUSED"):
        dns_server.resolver().txt(REFUSED)


def test_silent_server_gives_a_temporary_error_within_the_timeout(black_hole):
    started = time.monotonic()
    with pytest.raises(TemporaryDNSError, match=f"{PLAIN}: no answer within 0.5 s"):
        black_hole.resolver(timeout=0.5).txt(PLAIN)
    assert time.monotonic() - started < 3  # a bound on correctness, not a benchmark


def test_next_nameserver_is_asked_when_the_first_is_silent(dns_server):
    with BlackHole("127.0.0.2", dns_server.port):
        resolver = LiveResolver(["127.0.0.2", "127.0.0.1"], dns_server.port, timeout=1)
        assert resolver.txt(PLAIN) == [b"v=DKIM1; k=rsa; p=plain"]


def test_nameserver_not_running_gives_a_temporary_error(dns_server):
    resolver = dns_server.resolver(timeout=0.3)
    dns_server.stop()
    with pytest.raises(TemporaryDNSError):
        resolver.txt(PLAIN)


# -- cache ----------------------------------------------------------------------

def test_cached_answer_is_served_without_asking_again(dns_server):
    resolver = cached_resolver(dns_server)
    first = resolver.txt(PLAIN)
    dns_server.stop()
    assert resolver.txt(PLAIN) == first


def test_answer_is_asked_again_after_its_ttl(dns_server_factory):
    clock = Clock()
    server = dns_server_factory(ttl=60)
    resolver = cached_resolver(server, clock)
    resolver.txt(PLAIN)
    server.stop()
    clock.advance(59)
    resolver.txt(PLAIN)
    clock.advance(1)
    with pytest.raises(TemporaryDNSError):
        resolver.txt(PLAIN)


def test_ttl_is_capped_at_max_cache_ttl(dns_server):
    clock = Clock()
    resolver = cached_resolver(dns_server, clock, max_ttl=10)
    resolver.txt(PLAIN)
    dns_server.stop()
    clock.advance(10)
    with pytest.raises(TemporaryDNSError):
        resolver.txt(PLAIN)


def test_missing_name_is_cached_for_negative_ttl(dns_server):
    clock = Clock()
    resolver = cached_resolver(dns_server, clock, negative_ttl=60)
    with pytest.raises(NoRecord):
        resolver.txt(MISSING)
    dns_server.stop()
    with pytest.raises(NoRecord, match="cached"):
        resolver.txt(MISSING)
    clock.advance(60)
    with pytest.raises(TemporaryDNSError):
        resolver.txt(MISSING)


def test_missing_name_is_cached_for_the_soa_minimum_when_shorter(dns_server):
    clock = Clock()
    resolver = cached_resolver(dns_server, clock, negative_ttl=300)
    with pytest.raises(NoRecord):
        resolver.txt(SOA_MISSING)
    dns_server.stop()
    clock.advance(SOA_NEGATIVE_TTL / 2)
    with pytest.raises(NoRecord, match="cached"):
        resolver.txt(SOA_MISSING)
    clock.advance(SOA_NEGATIVE_TTL / 2)
    with pytest.raises(TemporaryDNSError):
        resolver.txt(SOA_MISSING)


def test_temporary_error_is_not_cached(dns_server):
    resolver = cached_resolver(dns_server)
    with pytest.raises(TemporaryDNSError):
        resolver.txt(REFUSED)
    dns_server.add(REFUSED, "v=DKIM1; p=now")
    assert resolver.txt(REFUSED) == [b"v=DKIM1; p=now"]


def test_cache_keeps_the_most_recently_used_answers(dns_server):
    resolver = cached_resolver(dns_server, max_size=2)
    resolver.txt(PLAIN)
    resolver.txt(MULTI)
    resolver.txt(PLAIN)
    resolver.txt(LONG)
    dns_server.stop()
    assert resolver.txt(PLAIN) and resolver.txt(LONG)
    with pytest.raises(TemporaryDNSError):
        resolver.txt(MULTI)


def test_negative_ttl_comes_from_the_soa_of_the_answer():
    response = dns.message.from_text(
        "id 1\nopcode QUERY\nrcode NXDOMAIN\nflags QR AA\n;QUESTION\nnx.example.com. IN TXT\n;ANSWER\n"
        ";AUTHORITY\nexample.com. 3600 IN SOA ns.example.com. root.example.com. 1 7200 900 1209600 120\n")
    assert negative_ttl(response) == 120
    assert negative_ttl(None) is None


# -- settings -------------------------------------------------------------------

def test_from_settings_uses_nameservers_timeout_and_cache(dns_server, tmp_path):
    settings = dns_server.dns_settings(timeout=1.5, cache_size=5, max_cache_ttl=60, negative_cache_ttl=30,
                                       cache_file=tmp_path / "cache.json")
    resolver = LiveResolver.from_settings(settings)
    assert resolver.nameservers == [f"127.0.0.1:{dns_server.port}"] and resolver.timeout == 1.5
    assert (resolver.cache.max_size, resolver.cache.max_ttl, resolver.cache.negative_ttl) == (5, 60, 30)
    resolver.txt(PLAIN)
    resolver.close()
    assert PLAIN in (tmp_path / "cache.json").read_text()


def test_from_settings_without_cache_size_does_not_cache(dns_server):
    assert LiveResolver.from_settings(dns_server.dns_settings(cache_size=0)).cache is None
