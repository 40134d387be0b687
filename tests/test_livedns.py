"""LiveResolver against a real dnsmasq on 127.0.0.1 (see dnsserver.py): answers, errors, time limit, cache, counters."""
import time

import pytest

from dnsserver import (LONG, LONG_TEXT, MISSING, MULTI, NO_TXT, PLAIN, REFUSED, SERVFAIL, SOA_MISSING,
                       SOA_NEGATIVE_TTL, BlackHole)
from salmon_dkim.dns.cache import DNSCache
from salmon_dkim.dns.resolver import NoSuchDomain, NoRecord, TemporaryDNSError, ZoneResolver
from salmon_dkim.dns.live import LiveResolver

SPF_ZONE = """\
example.test.           IN TXT   "v=spf1 mx a:alias.example.test -all"
example.test.           IN MX    10 mail.example.test.
example.test.           IN MX    20 backup.example.test.
mail.example.test.      IN A     192.0.2.1
mail.example.test.      IN AAAA  2001:db8::1
backup.example.test.    IN A     192.0.2.2
alias.example.test.     IN CNAME mail.example.test.
9.2.0.192.in-addr.arpa. IN PTR   relay.example.test.
"""


def cached_resolver(server, *, max_size=100, max_ttl=86400, negative_ttl=300):
    return server.resolver(timeout=0.5, cache=DNSCache(max_size, max_ttl, negative_ttl))


def texts(records):
    return sorted(r.to_text() for r in records)


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


@pytest.fixture
def spf_dns_server(dns_server_factory):
    return dns_server_factory(zone=SPF_ZONE)


@pytest.mark.parametrize("name, rdtype, expected", [
    ("example.test", "MX", ["10 mail.example.test.", "20 backup.example.test."]),
    ("mail.example.test", "A", ["192.0.2.1"]),
    ("mail.example.test", "AAAA", ["2001:db8::1"]),
    ("9.2.0.192.in-addr.arpa", "PTR", ["relay.example.test."]),
    ("example.test", "TXT", ['"v=spf1 mx a:alias.example.test -all"']),
])
def test_each_record_type_comes_back_as_served(spf_dns_server, name, rdtype, expected):
    assert texts(spf_dns_server.resolver().query(name, rdtype)) == expected


def test_a_cname_is_followed_to_the_records_it_names(spf_dns_server):
    assert texts(spf_dns_server.resolver().query("alias.example.test", "A")) == ["192.0.2.1"]


def test_live_and_zone_answers_agree_for_every_type(spf_dns_server):
    live, zone = spf_dns_server.resolver(), ZoneResolver.from_text(SPF_ZONE)
    for name, rdtype in [("example.test", "MX"), ("mail.example.test", "AAAA"), ("alias.example.test", "A"),
                         ("9.2.0.192.in-addr.arpa", "PTR"), ("example.test", "TXT")]:
        assert texts(live.query(name, rdtype)) == texts(zone.query(name, rdtype))


def test_name_without_records_of_the_type_asked_is_no_record(spf_dns_server):
    with pytest.raises(NoRecord, match="backup.example.test: exists but has no AAAA record") as info:
        spf_dns_server.resolver().query("backup.example.test", "AAAA")
    assert not isinstance(info.value, NoSuchDomain)


def test_unknown_record_type_is_a_programming_error(dns_server):
    with pytest.raises(ValueError, match="'BOGUS' is not a DNS record type"):
        dns_server.resolver().query(PLAIN, "BOGUS")


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


# -- cache (dnspython's, with the [DNS] caps) ------------------------------------

def test_cached_answer_is_served_without_asking_again(dns_server):
    resolver = cached_resolver(dns_server)
    first = resolver.txt(PLAIN)
    dns_server.stop()
    assert resolver.txt(PLAIN) == first


def test_cache_serves_every_record_type(spf_dns_server):
    resolver = cached_resolver(spf_dns_server)
    first = texts(resolver.query("example.test", "MX")), texts(resolver.query("alias.example.test", "A"))
    spf_dns_server.stop()
    assert (texts(resolver.query("example.test", "MX")), texts(resolver.query("alias.example.test", "A"))) == first


def test_answer_is_asked_again_after_its_ttl(dns_server_factory):
    resolver = cached_resolver(dns_server_factory(ttl=1))
    resolver.txt(PLAIN)
    resolver.txt(PLAIN)
    assert resolver.stats.as_dict()["cache_hits"] == 1
    time.sleep(1.05)
    resolver.txt(PLAIN)
    assert resolver.stats.as_dict()["cache_misses"] == 2


def test_ttl_is_capped_at_max_cache_ttl(dns_server):
    resolver = cached_resolver(dns_server, max_ttl=1)
    resolver.txt(PLAIN)
    time.sleep(1.05)
    resolver.txt(PLAIN)
    assert resolver.stats.as_dict()["cache_misses"] == 2


def test_missing_name_is_cached_for_negative_ttl(dns_server):
    resolver = cached_resolver(dns_server, negative_ttl=1)
    for _ in range(2):
        with pytest.raises(NoSuchDomain):
            resolver.txt(MISSING)
    assert resolver.stats.as_dict()["cache_hits"] == 1
    time.sleep(1.05)
    with pytest.raises(NoSuchDomain, match=r"\(NXDOMAIN\)$"):
        resolver.txt(MISSING)


def test_missing_name_is_cached_for_the_soa_minimum_when_shorter(dns_server):
    resolver = cached_resolver(dns_server, negative_ttl=300)
    for _ in range(2):
        with pytest.raises(NoRecord):
            resolver.txt(SOA_MISSING)
    assert resolver.stats.as_dict()["cache_hits"] == 1
    time.sleep(SOA_NEGATIVE_TTL + 0.05)
    with pytest.raises(NoRecord):
        resolver.txt(SOA_MISSING)
    assert resolver.stats.as_dict()["cache_misses"] == 2


def test_zero_negative_cache_ttl_turns_negative_caching_off(dns_server):
    resolver = cached_resolver(dns_server, negative_ttl=0)
    resolver.txt(PLAIN)
    dns_server.stop()
    assert resolver.txt(PLAIN)
    with pytest.raises(TemporaryDNSError):
        resolver.txt(MISSING)


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


# -- counters -------------------------------------------------------------------

def test_counters_tell_lookups_hits_misses_and_failures_apart(dns_server):
    resolver = cached_resolver(dns_server)
    resolver.txt(PLAIN)
    resolver.txt(PLAIN)
    for name in (SERVFAIL, REFUSED):
        with pytest.raises(TemporaryDNSError):
            resolver.txt(name)
    assert resolver.stats.as_dict() == {"lookups": 4, "cache_hits": 1, "cache_misses": 3, "timeouts": 0,
                                        "servfails": 1, "failures": 1}


def test_counters_count_timeouts(black_hole):
    resolver = black_hole.resolver(timeout=0.3)
    with pytest.raises(TemporaryDNSError):
        resolver.txt(PLAIN)
    assert resolver.stats.as_dict()["timeouts"] == 1


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
