"""SPF (RFC 7208) through pyspf over our resolver: the RFC 7208 test suite, then our own cases.

The suite (tests/data/spf/rfc7208-tests.yml, from pyspf 2.0.14's sdist, with
its LICENSE) gives each scenario's DNS as YAML.  Each scenario becomes an RFC
1035 zone read by ZoneResolver, as its driver in pyspf does: SPF (type 99)
records stand in for TXT where a name has no TXT of its own (RFC 7208 no longer
looks at type SPF), and TIMEOUT makes every type without records at that name
time out.  We check the result only: explanations (exp= text) are not part of
our result, so ``explanation`` in the suite is not compared.
"""
import time
from pathlib import Path

import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TXT
import dns.rrset
import pytest
import spf
import yaml

from salmon_dkim.core.spf import SPFResult, check_spf
from salmon_dkim.dns.resolver import (BudgetedResolver, NoRecord, TemporaryDNSError, ZoneResolver,
                                      joined_txt)

SUITE = Path(__file__).with_name("data") / "spf" / "rfc7208-tests.yml"


# -- the RFC 7208 test suite ----------------------------------------------------

class SuiteResolver:
    """A scenario's zone; names marked TIMEOUT time out for every type they have no records of."""

    def __init__(self, zone: ZoneResolver, timeouts: set) -> None:
        self.zone = zone
        self.timeouts = timeouts

    def query(self, name, rdtype):
        try:
            return self.zone.query(name, rdtype)
        except NoRecord:
            if name.lower().rstrip(".") in self.timeouts:
                raise TemporaryDNSError(f"{name}: no answer (TIMEOUT in the test suite)") from None
            raise

    def txt(self, name):
        return joined_txt(self.query(name, "TXT"))


def _txt_rdata(value) -> dns.rdtypes.ANY.TXT.TXT:
    strings = [value] if isinstance(value, str) else list(value)
    data = [s.encode("utf-8") for s in strings]
    return dns.rdtypes.ANY.TXT.TXT(dns.rdataclass.IN, dns.rdatatype.TXT, data)


def _name(text) -> str:
    """A name as zone-file text, special characters escaped."""
    return dns.name.from_text(str(text).rstrip(".") + ".").to_text()


def scenario_resolver(zonedata: dict) -> SuiteResolver:
    """The scenario's DNS as zone-file text read by ZoneResolver, plus its TIMEOUT names."""
    lines, timeouts = [], set()
    for name, entries in zonedata.items():
        owner = _name(name)
        has_txt = any(isinstance(e, dict) and "TXT" in e for e in entries)
        for entry in entries:
            if entry == "TIMEOUT":
                timeouts.add(name.lower().rstrip("."))
                continue
            [(rdtype, value)] = entry.items()
            if value == "NONE" or (rdtype == "SPF" and has_txt):
                continue
            if rdtype in ("SPF", "TXT"):
                if value == [] or value == ():
                    continue  # a TXT record without strings cannot be written in a zone file
                rdata = _txt_rdata(value)
                lines.append(f"{owner} 300 IN TXT {rdata.to_text()}")
            elif rdtype == "MX":
                lines.append(f"{owner} 300 IN MX {value[0]} {_name(value[1])}")
            elif rdtype in ("PTR", "CNAME"):
                lines.append(f"{owner} 300 IN {rdtype} {_name(value)}")
            else:
                for address in value if isinstance(value, list) else [value]:
                    lines.append(f"{owner} 300 IN {rdtype} {address}")
    return SuiteResolver(ZoneResolver.from_text("\n".join(lines) + "\n", source="the suite scenario"), timeouts)


def suite_cases():
    return [pytest.param(scenario, test, id=test_id)
            for scenario in yaml.safe_load_all(SUITE.read_text("utf-8"))
            for test_id, test in scenario["tests"].items()]


@pytest.mark.parametrize("scenario, case", suite_cases())
def test_rfc7208_suite(scenario, case):
    resolver = scenario_resolver(scenario["zonedata"])
    expected = case["result"] if isinstance(case["result"], list) else [case["result"]]
    result = check_spf(str(case["host"]), case["mailfrom"], case["helo"], resolver)
    assert result.result in expected, f"{case.get('spec')}: {result.reason}"


# -- our own cases --------------------------------------------------------------

ZONE = """\
example.com.            IN TXT  "v=spf1 mx a:relay.example.com ip6:2001:db8::/32 -all"
example.com.            IN MX   10 mail.example.com.
mail.example.com.       IN A    192.0.2.1
relay.example.com.      IN A    192.0.2.2
soft.example.com.       IN TXT  "v=spf1 ~all"
neutral.example.com.    IN TXT  "v=spf1 ?all"
helo.example.com.       IN TXT  "v=spf1 a -all"
helo.example.com.       IN A    192.0.2.9
broken.example.com.     IN TXT  "v=spf1 moo -all"
two.example.com.        IN TXT  "v=spf1 -all"
two.example.com.        IN TXT  "v=spf1 +all"
voids.example.com.      IN TXT  "v=spf1 a:nx1.example.com a:nx2.example.com a:nx3.example.com -all"
many.example.com.       IN TXT  "v=spf1 a:a1.example.com a:a2.example.com a:a3.example.com a:a4.example.com a:a5.example.com a:a6.example.com a:a7.example.com a:a8.example.com a:a9.example.com a:a10.example.com a:a11.example.com -all"
plain.example.org.      IN A    192.0.2.50
"""
ZONE += "".join(f"a{i}.example.com. IN A 198.51.100.{i}\n" for i in range(1, 12))


@pytest.fixture
def zone():
    return ZoneResolver.from_text(ZONE)


@pytest.mark.parametrize("ip, sender, expected", [
    ("192.0.2.1", "alice@example.com", "pass"),  # mx
    ("192.0.2.2", "alice@example.com", "pass"),  # a:relay
    ("2001:db8::25", "alice@example.com", "pass"),  # ip6
    ("198.51.100.7", "alice@example.com", "fail"),
    ("198.51.100.7", "alice@soft.example.com", "softfail"),
    ("198.51.100.7", "alice@neutral.example.com", "neutral"),
    ("198.51.100.7", "alice@plain.example.org", "none"),
    ("198.51.100.7", "alice@nowhere.example.net", "none"),
    ("198.51.100.7", "alice@broken.example.com", "permerror"),
    ("198.51.100.7", "alice@two.example.com", "permerror"),
])
def test_result_words(zone, ip, sender, expected):
    assert check_spf(ip, sender, "mx.client.example", zone).result == expected


def test_the_mail_from_domain_is_checked_and_shown_with_its_address(zone):
    result = check_spf("192.0.2.1", "<Alice.Smith@Example.COM>", "anything", zone)
    assert result == SPFResult("pass", "mailfrom", "example.com", "Alice.Smith@example.com",
                               "192.0.2.1 is allowed to send for example.com by its SPF record")


def test_null_sender_checks_the_helo_name(zone):
    result = check_spf("192.0.2.9", "", "helo.example.com", zone)
    assert (result.result, result.identity, result.domain, result.address) == (
        "pass", "helo", "helo.example.com", "helo.example.com")


def test_a_local_part_that_is_not_a_dot_atom_is_left_out_of_the_address(zone):
    result = check_spf("198.51.100.7", '"evil\\" x=y"@example.com', "h.example", zone)
    assert result.address == "example.com" and "evil" not in result.reason


@pytest.mark.parametrize("sender, helo", [("", "[192.0.2.1]"), ("", "localhost"), ("bob@", "h.example"),
                                          ("bob@exa mple.com", "h.example")])
def test_no_checkable_domain_is_none_without_a_lookup(sender, helo):
    class NoLookups:
        def query(self, name, rdtype):
            raise AssertionError(f"looked up {name}")

    result = check_spf("192.0.2.1", sender, helo, NoLookups())
    assert result.result == "none" and result.domain == "" and result.address == ""


def test_more_than_ten_dns_mechanisms_is_permerror(zone):
    result = check_spf("198.51.100.11", "a@many.example.com", "h.example", zone)
    assert result.result == "permerror" and "Too many DNS lookups" in result.reason


def test_more_than_two_void_lookups_is_permerror(zone):
    result = check_spf("198.51.100.7", "a@voids.example.com", "h.example", zone)
    assert result.result == "permerror" and "void lookup limit" in result.reason


def test_the_per_message_budget_stops_the_check_as_permerror(zone):
    result = check_spf("192.0.2.2", "a@example.com", "h.example", BudgetedResolver(zone, 2))
    assert result.result == "permerror" and "MaxLookupsPerMessage" in result.reason


def test_lookups_are_drawn_from_the_message_budget(zone):
    budget = BudgetedResolver(zone, 30)
    check_spf("192.0.2.2", "a@example.com", "h.example", budget)
    assert budget.remaining == 30 - 4  # TXT, MX, A of the MX host, A of relay


def test_pyspfs_own_dns_lookup_is_never_called(zone, monkeypatch):
    def module_lookup(*args, **kwargs):
        raise AssertionError("pyspf's module-global DNSLookup was called")

    monkeypatch.setattr(spf, "DNSLookup", module_lookup)
    assert check_spf("192.0.2.1", "alice@example.com", "h.example", zone).result == "pass"


def test_an_ip_that_is_not_an_address_is_the_callers_mistake(zone):
    with pytest.raises(ValueError, match="'mail.example' is not an IP address"):
        check_spf("mail.example", "a@example.com", "h", zone)


# -- live DNS (dnsmasq) ---------------------------------------------------------

LIVE_ZONE = """\
spf.example.test.       IN TXT  "v=spf1 mx -all"
spf.example.test.       IN MX   10 mx.spf.example.test.
mx.spf.example.test.    IN A    192.0.2.10
"""


def test_pass_and_fail_over_live_dns(dns_server_factory):
    resolver = dns_server_factory(zone=LIVE_ZONE).resolver(timeout=1)
    assert check_spf("192.0.2.10", "a@spf.example.test", "h.example", resolver).result == "pass"
    assert check_spf("192.0.2.11", "a@spf.example.test", "h.example", resolver).result == "fail"


def test_servfail_is_temperror_naming_the_failure(dns_server):
    result = check_spf("192.0.2.1", "a@key.servfail.test", "h.example", dns_server.resolver(timeout=1))
    assert result.result == "temperror" and "answered SERVFAIL" in result.reason


def test_a_silent_nameserver_is_temperror_within_the_time_limit(black_hole):
    started = time.monotonic()
    result = check_spf("192.0.2.1", "a@example.test", "h.example", black_hole.resolver(timeout=0.3),
                       time_limit=1)
    assert result.result == "temperror" and "no answer within 0.3 s" in result.reason
    assert time.monotonic() - started < 3  # a bound on correctness, not a benchmark


def test_the_time_limit_stops_a_slow_check_as_temperror(zone):
    class Slow:
        def query(self, name, rdtype):
            time.sleep(0.2)
            return zone.query(name, rdtype)

    result = check_spf("192.0.2.2", "a@example.com", "h.example", Slow(), time_limit=0.3)
    assert result.result == "temperror" and "longer than 0.3 s" in result.reason
