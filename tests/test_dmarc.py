"""DMARC (RFC 7489): record discovery and parsing, alignment, p/sp/pct, and what DNS failures become."""
from dataclasses import dataclass

import pytest

from salmon_dkim.core.dmarc import (DMARCRecord, DMARCRecordError, aligned, evaluate_dmarc, organizational_domain,
                                    parse_record)
from salmon_dkim.core.spf import SPFResult
from salmon_dkim.dns.resolver import BudgetedResolver, ZoneResolver

ZONE = """\
_dmarc.example.com.        IN TXT "v=DMARC1; p=reject; sp=quarantine; rua=mailto:dmarc@example.com"
_dmarc.own.example.com.    IN TXT "v=DMARC1; p=none"
_dmarc.strict.example.     IN TXT "v=DMARC1; p=reject; adkim=s; aspf=s"
_dmarc.quarantine.example. IN TXT "v=DMARC1; p=quarantine"
_dmarc.nosp.example.       IN TXT "v=DMARC1; p=reject"
_dmarc.half.example.       IN TXT "v=DMARC1; p=reject; pct=50"
_dmarc.zero.example.       IN TXT "v=DMARC1; p=reject; pct=0"
_dmarc.two.example.        IN TXT "v=DMARC1; p=reject"
_dmarc.two.example.        IN TXT "v=DMARC1; p=none"
_dmarc.notfirst.example.   IN TXT "p=reject; v=DMARC1"
_dmarc.nop.example.        IN TXT "v=DMARC1; sp=reject"
_dmarc.nopwithrua.example. IN TXT "v=DMARC1; p=bogus; rua=mailto:r@nopwithrua.example"
_dmarc.other.example.      IN TXT "some other TXT record"
_dmarc.other.example.      IN TXT "v=DMARC1; p=quarantine; pct=abc; adkim=x; future=1"
_dmarc.co.uk.              IN TXT "v=DMARC1; p=reject"
"""


@dataclass(frozen=True)
class Sig:
    """What DMARC reads of a signature result: type, d= and result word."""

    domain: str
    result: str = "pass"
    type: str = "dkim"


def spf(domain: str, result: str = "pass") -> SPFResult:
    return SPFResult(result, "mailfrom", domain, domain, "test")


@pytest.fixture
def zone():
    return ZoneResolver.from_text(ZONE)


def dmarc(zone, from_domain, dkim=(), spf_result=None, **kwargs):
    return evaluate_dmarc([from_domain], dkim, spf_result, zone, **kwargs)


# -- organizational domain and alignment ----------------------------------------

@pytest.mark.parametrize("domain, org", [
    ("mail.example.com", "example.com"), ("example.com", "example.com"), ("a.b.example.co.uk", "example.co.uk"),
    ("co.uk", "co.uk"), ("Mail.Example.COM.", "example.com"), ("x.xn--bcher-kva.example", "xn--bcher-kva.example"),
])
def test_organizational_domain_comes_from_the_public_suffix_list(domain, org):
    assert organizational_domain(domain) == org


def test_relaxed_alignment_compares_organizational_domains():
    assert aligned("mail.example.com", "news.example.com", "r")
    assert not aligned("example.net", "example.com", "r")


def test_strict_alignment_needs_the_same_domain():
    assert aligned("Example.COM", "example.com", "s")
    assert not aligned("mail.example.com", "example.com", "s")


# -- record parsing ---------------------------------------------------------------

def test_record_tags_are_read_with_their_defaults():
    assert parse_record(b"v=DMARC1; p=Reject; rua=mailto:a@example.com", "example.com") == DMARCRecord(
        domain="example.com", p="reject", sp="reject", adkim="r", aspf="r", pct=100,
        rua="mailto:a@example.com", ruf="", fo="0", ri=86400, rf="afrf")


def test_malformed_optional_tags_take_their_defaults_and_unknown_tags_are_ignored():
    record = parse_record(b"v=DMARC1; p=none; pct=150; adkim=x; aspf=S; ri=soon; future_tag=1", "example.com")
    assert (record.pct, record.adkim, record.aspf, record.ri) == (100, "r", "s", 86400)


@pytest.mark.parametrize("text, problem", [
    (b"v=DMARC1; sp=reject", "p= is missing"),
    (b"v=DMARC1; p=always", "p= is not none, quarantine or reject"),
    (b"v=DMARC1; p=reject; sp=maybe", "sp= is not none"),
    (b"v=DMARC1; p=reject; p=none", "tag list is malformed"),
    (b"v=DMARC2; p=reject", "does not start with v=DMARC1"),
])
def test_unusable_records_say_why(text, problem):
    with pytest.raises(DMARCRecordError, match=problem):
        parse_record(text, "example.com")


def test_invalid_p_with_a_reporting_uri_reads_as_p_none():
    record = parse_record(b"v=DMARC1; p=bogus; rua=mailto:r@example.com", "example.com")
    assert (record.p, record.sp) == ("none", "none")


# -- alignment and results ------------------------------------------------------

def test_aligned_dkim_pass_is_pass(zone):
    result = dmarc(zone, "example.com", [Sig("mail.example.com")])
    assert (result.result, result.dkim_aligned, result.dkim_domain, result.disposition) == (
        "pass", True, "mail.example.com", "none")
    assert result.policy == "reject" and result.record.domain == "example.com"


def test_aligned_spf_pass_is_pass(zone):
    result = dmarc(zone, "example.com", [], spf("bounces.example.com"))
    assert (result.result, result.spf_aligned, result.spf_domain, result.dkim_aligned) == (
        "pass", True, "bounces.example.com", False)


def test_pass_of_an_unaligned_domain_is_fail_with_the_policy(zone):
    result = dmarc(zone, "example.com", [Sig("example.net")], spf("example.net"))
    assert (result.result, result.disposition, result.policy) == ("fail", "reject", "reject")
    assert "no DKIM or SPF pass aligned with example.com" in result.reason


def test_aligned_signature_that_fails_does_not_count(zone):
    result = dmarc(zone, "example.com", [Sig("example.com", "fail"), Sig("example.com", "pass", type="domainkeys")])
    assert result.result == "fail"


def test_strict_modes_refuse_subdomains(zone):
    result = dmarc(zone, "strict.example", [Sig("mail.strict.example")], spf("mail.strict.example"))
    assert result.result == "fail"
    assert dmarc(zone, "strict.example", [Sig("strict.example")]).result == "pass"


def test_quarantine_policy_is_the_disposition_of_a_failure(zone):
    result = dmarc(zone, "quarantine.example")
    assert (result.result, result.disposition) == ("fail", "quarantine")


def test_subdomain_policy_applies_to_a_subdomain_found_through_the_organizational_record(zone):
    result = dmarc(zone, "news.example.com")
    assert (result.record.domain, result.org_domain, result.policy, result.disposition) == (
        "example.com", "example.com", "quarantine", "quarantine")


def test_subdomain_without_sp_gets_p(zone):
    assert dmarc(zone, "a.nosp.example").disposition == "reject"


def test_a_subdomains_own_record_wins_over_the_organizational_one(zone):
    result = dmarc(zone, "own.example.com")
    assert (result.record.domain, result.policy, result.disposition) == ("own.example.com", "none", "none")


@pytest.mark.parametrize("draw, disposition, override", [(0.3, "reject", ""), (0.7, "quarantine", "sampled_out")])
def test_pct_samples_which_failures_get_the_policy(zone, draw, disposition, override):
    result = dmarc(zone, "half.example", sample=lambda: draw)
    assert (result.result, result.disposition, result.override) == ("fail", disposition, override)


def test_pct_zero_lowers_reject_to_quarantine(zone):
    result = dmarc(zone, "zero.example")
    assert (result.disposition, result.override, result.override_comment) == ("quarantine", "sampled_out", "pct=0")


def test_no_record_is_none(zone):
    result = dmarc(zone, "nothing.example.org")
    assert (result.result, result.policy, result.disposition) == ("none", None, "none")
    assert result.reason == "no DMARC record at _dmarc.nothing.example.org or _dmarc.example.org"


def test_several_records_at_one_name_is_none(zone):
    result = dmarc(zone, "two.example")
    assert result.result == "none" and "2 DMARC records at _dmarc.two.example" in result.reason


def test_a_record_not_starting_with_v_dmarc1_is_ignored(zone):
    assert dmarc(zone, "notfirst.example").result == "none"


def test_other_txt_records_at_dmarc_are_ignored_and_bad_tags_default(zone):
    result = dmarc(zone, "other.example")
    assert (result.result, result.disposition, result.record.pct) == ("fail", "quarantine", 100)


def test_a_record_without_p_is_permerror(zone):
    result = dmarc(zone, "nop.example")
    assert (result.result, result.disposition) == ("permerror", "none")
    assert "_dmarc.nop.example is unusable: p= is missing" in result.reason


def test_a_record_with_bad_p_and_rua_acts_as_p_none(zone):
    result = dmarc(zone, "nopwithrua.example")
    assert (result.result, result.policy, result.disposition) == ("fail", "none", "none")


def test_a_public_suffix_as_author_domain_uses_its_own_record(zone):
    assert dmarc(zone, "co.uk").disposition == "reject"


# -- author domains (RFC 7489 section 6.6.1) ------------------------------------

@pytest.mark.parametrize("from_domains", [None, []])
def test_undeterminable_author_is_permerror(zone, from_domains):
    result = evaluate_dmarc(from_domains, [], None, zone)
    assert (result.result, result.disposition) == ("permerror", "none") and "6.6.1" in result.reason


def test_several_author_domains_take_the_strictest_disposition(zone):
    result = evaluate_dmarc(["own.example.com", "nosp.example", "quarantine.example"], [], None, zone)
    assert (result.domain, result.disposition) == ("nosp.example", "reject")
    assert [r.domain for r in result.per_domain] == ["own.example.com", "nosp.example", "quarantine.example"]


def test_one_author_domain_named_twice_is_evaluated_once(zone):
    result = evaluate_dmarc(["Example.com", "example.com."], [Sig("example.com")], None, zone)
    assert result.result == "pass" and result.per_domain == ()


def test_too_many_author_domains_is_permerror_without_lookups():
    class NoLookups:
        def txt(self, name):
            raise AssertionError(name)

    result = evaluate_dmarc([f"d{i}.example" for i in range(11)], [], None, NoLookups())
    assert result.result == "permerror" and "11 author domains" in result.reason


# -- DNS failures never reject ----------------------------------------------------

def test_servfail_fetching_the_record_is_temperror_without_disposition(dns_server):
    result = evaluate_dmarc(["key.servfail.test"], [], None, dns_server.resolver(timeout=1))
    assert (result.result, result.disposition) == ("temperror", "none")
    assert "answered SERVFAIL" in result.reason


def test_a_silent_nameserver_is_temperror(black_hole):
    result = evaluate_dmarc(["example.com"], [], None, black_hole.resolver(timeout=0.3))
    assert (result.result, result.disposition) == ("temperror", "none")


def test_an_aligned_signature_with_a_temporary_key_failure_makes_temperror(zone):
    result = dmarc(zone, "example.com", [Sig("example.com", "temperror")])
    assert (result.result, result.disposition) == ("temperror", "none")


def test_an_aligned_spf_temperror_makes_temperror(zone):
    result = dmarc(zone, "example.com", [], spf("example.com", "temperror"))
    assert (result.result, result.disposition) == ("temperror", "none")


def test_an_exhausted_lookup_budget_is_permerror(zone):
    budget = BudgetedResolver(zone, 0)
    result = evaluate_dmarc(["example.com"], [], None, budget)
    assert result.result == "permerror" and "lookup limit" in result.reason


# -- live DNS and the override hook ---------------------------------------------

LIVE_ZONE = """\
_dmarc.example.test. IN TXT "v=DMARC1; p=reject; sp=none"
"""


def test_organizational_record_is_found_over_live_dns(dns_server_factory):
    resolver = dns_server_factory(zone=LIVE_ZONE).resolver(timeout=1)
    result = evaluate_dmarc(["news.example.test"], [], None, resolver)
    assert (result.record.domain, result.policy, result.disposition) == ("example.test", "none", "none")
    assert evaluate_dmarc(["example.test"], [], None, resolver).disposition == "reject"


def test_override_keeps_the_result_and_changes_the_disposition(zone):
    result = dmarc(zone, "nosp.example").with_override("trusted_forwarder", "ARC sealed by lists.example.org")
    assert (result.result, result.disposition, result.override) == ("fail", "none", "trusted_forwarder")
