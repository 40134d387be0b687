"""decide(): every outcome of MDaemon's DKIM Verification screen, from literal reports."""
import ipaddress

import pytest

from salmon_dkim.config import Settings, VerificationSettings
from salmon_dkim.core.message import authors
from salmon_dkim.core.policy import Session, decide, exempt
from salmon_dkim.core.results import SignatureResult, VerificationReport

MX = Session(peer_ip="203.0.113.5", helo="mail.example.com")


def sig(result, domain="example.com", reason=None, testing=False):
    return SignatureResult("dkim", domain, "s1", "rsa-sha256", result, reason or f"{result} reason",
                           "abcdefgh", None, testing, 2048)


def report(*results, adsp=None, author="example.com", from_field=None):
    found = authors([from_field or f"a@{author}".encode()])
    return VerificationReport(tuple(results), 0, author, found, adsp, f"ADSP said {adsp}" if adsp else None)


def settings(**options):
    for name in ("trusted_ips", "white_list_ips", "authenticated_peers"):
        if name in options:
            options[name] = tuple(ipaddress.ip_network(n) for n in options[name])
    return Settings(verification=VerificationSettings(**options))


# --- skip ----------------------------------------------------------------------

@pytest.mark.parametrize("session, options, reason", [
    (MX, {"enabled": False}, "DKIM verification is off"),
    (Session(peer_ip="203.0.113.5", authenticated=True), {}, "authenticated session"),
    (MX, {"authenticated_peers": ["203.0.113.0/24"]}, "authenticated session"),
    (Session(peer_ip="127.0.0.1"), {"trusted_ips": ["127.0.0.0/8"]}, "trusted IP 127.0.0.1"),
    (Session(peer_ip="::ffff:10.1.2.3"), {"trusted_ips": ["10.0.0.0/8"]}, "trusted IP ::ffff:10.1.2.3"),
    (MX, {"white_list_ips": ["203.0.113.5/32"]}, "white-listed IP 203.0.113.5"),
])
def test_exempt_sessions_are_skipped(session, options, reason):
    outcome = decide(report(sig("fail")), session, settings(reject_on_fail=True, **options))
    assert (outcome.action, outcome.code, outcome.reason) == ("skip", None, reason)


@pytest.mark.parametrize("session, options", [
    (Session(peer_ip="203.0.113.5", authenticated=True), {"skip_authenticated": False}),
    (Session(peer_ip="203.0.113.5", role="submission"), {}),  # the port alone is not a login
    (Session(peer_ip="127.0.0.1"), {"trusted_ips": ["127.0.0.0/8"], "skip_trusted_ips": False}),
    (Session(peer_ip="not an ip"), {"trusted_ips": ["127.0.0.0/8"]}),
    (Session(peer_ip=None), {"trusted_ips": ["127.0.0.0/8"]}),
])
def test_not_exempt(session, options):
    assert exempt(session, settings(**options)) is None


def test_no_report_is_skip():
    assert decide(None, MX, settings()).action == "skip"


# --- accept and score -----------------------------------------------------------

def test_unsigned_message_is_accepted_with_score_zero():
    outcome = decide(report(), MX, settings())
    assert (outcome.action, outcome.code, outcome.score, outcome.reason) == ("accept", None, 0.0, "unsigned")


def test_pass_and_fail_scores_add_up_per_signature():
    outcome = decide(report(sig("pass"), sig("pass", "example.org"), sig("fail")), MX,
                     settings(pass_score=-1.0, fail_score=2.5))
    assert (outcome.action, outcome.score) == ("accept", 0.5)


def test_pass_from_an_approved_domain_adds_the_approved_score_once():
    outcome = decide(report(sig("pass"), sig("pass")), MX, settings(approved_domains=("example.com",)))
    assert outcome.score == -0.5


def test_fail_from_an_approved_domain_gets_no_approved_score():
    assert decide(report(sig("fail")), MX, settings(approved_domains=("example.com",))).score == 0.0


# --- reject ------------------------------------------------------------------------

def test_reject_on_fail_answers_550_with_the_reason():
    outcome = decide(report(sig("fail", reason="body hash mismatch")), MX, settings(reject_on_fail=True))
    assert (outcome.action, outcome.code, outcome.text, outcome.close_connection) == (
        "reject", 550, "5.7.20 DKIM signature of example.com failed: body hash mismatch", False)


def test_reject_on_fail_spares_a_message_with_another_passing_signature():
    outcome = decide(report(sig("fail"), sig("pass", "example.org")), MX, settings(reject_on_fail=True))
    assert outcome.action == "accept"


def test_policy_and_permerror_are_not_fail():
    outcome = decide(report(sig("policy"), sig("permerror"), sig("neutral")), MX,
                     settings(reject_on_fail=True))
    assert outcome.action == "accept"


def test_reject_closes_the_connection_when_configured():
    outcome = decide(report(sig("fail")), MX, settings(reject_on_fail=True, close_connection_on_reject=True))
    assert (outcome.code, outcome.close_connection) == (550, True)


def test_score_at_the_threshold_is_rejected():
    outcome = decide(report(sig("fail"), sig("fail", "example.org")), MX,
                     settings(fail_score=2.5, reject_score=5.0))
    assert (outcome.action, outcome.code, outcome.score) == ("reject", 550, 5.0)
    assert outcome.text == "5.7.1 DKIM score 5 reaches the reject threshold 5"


def test_score_under_the_threshold_is_accepted():
    assert decide(report(sig("fail")), MX, settings(fail_score=2.5, reject_score=5.0)).action == "accept"


def test_reject_score_zero_never_rejects():
    assert decide(report(sig("fail")), MX, settings(fail_score=100.0)).action == "accept"


# --- ADSP ----------------------------------------------------------------------------

@pytest.mark.parametrize("word, practice", [("fail", "all"), ("discard", "discardable")])
def test_adsp_failure_rejects_with_5_7_22(word, practice):
    outcome = decide(report(adsp=word), MX, settings(adsp=True, close_connection_on_reject=True))
    assert (outcome.action, outcome.code, outcome.close_connection) == ("reject", 550, True)
    assert outcome.text == (f"5.7.22 No valid DKIM signature of the author domain example.com, "
                            f"which signs all its mail (ADSP dkim={practice})")


def test_adsp_failure_adds_the_adsp_score_when_configured():
    outcome = decide(report(adsp="fail"), MX, settings(adsp=True, adsp_action="score", adsp_score=5.0))
    assert (outcome.action, outcome.score) == ("accept", 5.0)


def test_adsp_failure_score_can_reach_the_reject_threshold():
    outcome = decide(report(adsp="fail"), MX, settings(adsp=True, adsp_action="score", reject_score=5.0))
    assert (outcome.action, outcome.code) == ("reject", 550)


@pytest.mark.parametrize("word", ["pass", "none", "unknown"])
def test_adsp_other_results_are_accepted(word):
    assert decide(report(adsp=word), MX, settings(adsp=True)).action == "accept"


# --- temperror: 451 or accept, never 550 ------------------------------------------------

def test_temperror_without_a_pass_is_451():
    outcome = decide(report(sig("temperror")), MX, settings())
    assert (outcome.action, outcome.code) == ("tempfail", 451)
    assert outcome.text == "4.4.3 DKIM key lookup for example.com failed temporarily; try again later"


def test_temperror_is_accepted_when_configured():
    outcome = decide(report(sig("temperror")), MX, settings(temperror_action="accept"))
    assert (outcome.action, outcome.code) == ("accept", None)


def test_temperror_with_a_pass_is_accepted():
    assert decide(report(sig("temperror"), sig("pass", "example.org")), MX, settings()).action == "accept"


def test_temperror_and_fail_with_reject_on_fail_is_451_not_550():
    outcome = decide(report(sig("fail"), sig("temperror", "example.org")), MX,
                     settings(reject_on_fail=True, fail_score=10.0, reject_score=5.0))
    assert outcome.code == 451


def test_adsp_temperror_is_451_not_550():
    outcome = decide(report(adsp="temperror"), MX, settings(adsp=True))
    assert (outcome.action, outcome.code, outcome.text) == (
        "tempfail", 451, "4.4.3 ADSP lookup failed temporarily; try again later")


def test_author_signature_temperror_is_adsp_temperror_and_never_550_beside_another_pass():
    from salmon_dkim.core.adsp import evaluate

    class AllResolver:
        def txt(self, name):
            return [b"dkim=all"]
    results = (sig("temperror"), sig("pass", "lists.example.org"))
    word, reason = evaluate(authors([b"a@example.com"]), results, AllResolver())
    assert word == "temperror" and "temporary DNS failure" in reason
    outcome = decide(report(*results, adsp=word), MX, settings(adsp=True, reject_on_fail=True))
    assert (outcome.action, outcome.code) == ("accept", None)


# --- DomainKeys results are reported, but decide nothing ---------------------------

def domainkeys(result, domain="example.com"):
    return SignatureResult("domainkeys", domain, "s1", "rsa-sha1", result, f"{result} reason")


def test_a_domainkeys_failure_does_not_trigger_reject_on_fail_or_scores():
    outcome = decide(report(domainkeys("fail")), MX, settings(reject_on_fail=True, fail_score=5.0,
                                                               reject_score=5.0))
    assert (outcome.action, outcome.score) == ("accept", 0.0)


def test_a_domainkeys_pass_does_not_rescue_a_failed_dkim_signature():
    outcome = decide(report(sig("fail"), domainkeys("pass")), MX, settings(reject_on_fail=True))
    assert outcome.action == "reject"


def test_a_domainkeys_temperror_is_not_a_451():
    assert decide(report(domainkeys("temperror")), MX, settings()).action == "accept"


# --- the author cannot dodge ADSP ---------------------------------------------------------

class DomainsResolver:
    """ADSP records for the domains given; every other name exists without TXT."""

    def __init__(self, **practices):
        self.practices = {f"_adsp._domainkey.{d.replace('_', '.')}": p for d, p in practices.items()}

    def txt(self, name):
        from salmon_dkim.dns.resolver import NoRecord
        if name in self.practices:
            return [f"dkim={self.practices[name]}".encode()]
        raise NoRecord(name)


@pytest.mark.parametrize("from_fields, word", [
    ([b"a@bank.example", b"b@other.example"], "fail"),   # two From fields, one domain signs all
    ([b"b@other.example, a@bank.example"], "fail"),       # two addresses in one field
    ([b"(unbalanced a@bank.example"], "permerror"),       # a From that does not parse
    ([], "permerror"),                                     # no From at all
    ([b"undisclosed-recipients:;"], "permerror"),         # no address
])
def test_a_message_whose_author_is_unclear_does_not_escape_adsp(from_fields, word):
    from salmon_dkim.core.adsp import evaluate

    found = authors(from_fields)
    adsp, reason = evaluate(found, (), DomainsResolver(bank_example="all"))
    assert adsp == word, reason
    verdict = VerificationReport((), 0, None, found, adsp, reason)
    outcome = decide(verdict, MX, settings(adsp=True, adsp_action="reject"))
    assert (outcome.action, outcome.code) == ("reject", 550) and outcome.text.startswith("5.7.22")


def test_two_authors_without_adsp_records_are_not_rejected_for_adsp():
    from salmon_dkim.core.adsp import evaluate

    found = authors([b"a@x.example, b@y.example"])
    adsp, reason = evaluate(found, (), DomainsResolver())
    outcome = decide(VerificationReport((), 0, None, found, adsp, reason), MX, settings(adsp=True))
    assert (adsp, outcome.action) == ("none", "accept")
