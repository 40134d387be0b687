"""DomainKeys (RFC 4870): signatures made by Mail::DKIM, verified by us and by Mail::DKIM.

One perl run signs every message of the module; keys come from the test keys'
zone file plus records for the key tags under test.
"""
import json
import re
import random

import pytest
from click.testing import CliRunner
from conftest import KEYS, message
from peers import crlf, have_mail_dkim, mail_dkim_dk_sign, mail_dkim_dk_sign_many, mail_dkim_verify_many

from salmon_dkim.core.authres import header_for, parse
from salmon_dkim.cli import main
from salmon_dkim.config import DNSSettings, Settings, VerificationSettings
from salmon_dkim.core.canon import canon_body
from salmon_dkim.core.domainkeys import canon_headers, sign_domainkeys, signed_fields
from salmon_dkim.core.message import Message
from salmon_dkim.core.tags import parse_tags
from salmon_dkim.dns.resolver import ZoneResolver
from salmon_dkim.core.keys import load_private_key, zone_line
from salmon_dkim.core.verifier import RESULT_WORDS, Verifier

pytestmark = pytest.mark.skipif(not have_mail_dkim(),
                                reason="Mail::DKIM (libmail-dkim-perl) is not installed")

RSA2048 = KEYS / "example.com.rsa2048.key"
PLAIN = crlf(message("plain.eml"))
EMPTY_BODY = crlf(message("empty-body.eml"))
FOLDED = (b"From: Alice Example <alice@example.com>\r\n"
          b"To: Bob <bob@example.net>,\r\n  Carol <carol@example.net>\r\n"
          b"Subject:   Lunch\ton   Friday\r\nMessage-ID: <folded-1@example.com>\r\n\r\n"
          b"Hi  Bob,\r\n\r\n\tShall we meet at noon?   \r\n\r\n\r\n")


def _zone_p(selector, domain="example.com") -> str:
    return ZoneResolver(KEYS / "keys.zone").txt(f"{selector}._domainkey.{domain}")[0].decode().split("p=", 1)[1]


S1, ED1 = _zone_p("s1"), _zone_p("ed1")
RECORDS = {  # selector -> key record under example.com
    "dk": f"k=rsa; p={S1}",  # a DomainKeys record: no v=
    "galice": f"g=alice; k=rsa; p={S1}",
    "gbob": f"g=bob; k=rsa; p={S1}",
    "hsha256": f"v=DKIM1; k=rsa; h=sha256; p={S1}",
    "testing": f"k=rsa; t=y; p={S1}",
    "revoked": "k=rsa; p=",
    "edtype": f"v=DKIM1; k=ed25519; p={ED1}",
    "garbage": "k=rsa; p=!!notbase64!!",
}


@pytest.fixture(scope="module")
def zone(tmp_path_factory):
    path = tmp_path_factory.mktemp("zone") / "domainkeys.zone"
    lines = [zone_line(s, "example.com", txt) for s, txt in RECORDS.items()]
    lines += [zone_line("two", "example.com", f"k=rsa; p={p}") for p in (S1, "")]
    lines += ['_adsp._domainkey.example.com. IN TXT "dkim=all"']
    path.write_text((KEYS / "keys.zone").read_text() + "\n".join(lines) + "\n")
    return path


def _from(data: bytes, address: bytes) -> bytes:
    return data.replace(b"alice@example.com", address, 1)


JOBS = {
    "nofws": {},
    "simple": {"method": "simple"},
    "nofws no h": {"h": False},
    "simple no h": {"method": "simple", "h": False},
    "folded nofws": {"message": FOLDED},
    "folded simple": {"message": FOLDED, "method": "simple"},
    "empty body nofws": {"message": EMPTY_BODY},
    "empty body simple": {"message": EMPTY_BODY, "method": "simple"},
    "dk record": {"selector": "dk"},
    "rsa1024": {"selector": "weak1024", "key_path": KEYS / "example.com.rsa1024.key"},
    "rsa512": {"selector": "weak512", "key_path": KEYS / "example.com.rsa512.key"},
    "rsa4096": {"selector": "big", "key_path": KEYS / "example.com.rsa4096.key"},
    "org": {"domain": "example.org", "selector": "s2048", "key_path": KEYS / "example.org.rsa2048.key",
            "message": _from(PLAIN, b"alice@example.org")},
    "subdomain sender": {"message": _from(PLAIN, b"alice@mail.example.com")},
    "foreign sender": {"message": _from(PLAIN, b"alice@example.org")},
    "sender field": {"domain": "example.org", "selector": "s2048", "key_path": KEYS / "example.org.rsa2048.key",
                     "message": b"Sender: list@example.org\r\n" + PLAIN},
    "sender field, From's domain": {"message": b"Sender: list@example.org\r\n" + PLAIN},
    "galice": {"selector": "galice"},
    "gbob": {"selector": "gbob"},
    "hsha256": {"selector": "hsha256"},
    "testing": {"selector": "testing"},
    "revoked": {"selector": "revoked"},
    "edtype": {"selector": "edtype"},
    "garbage": {"selector": "garbage"},
    "two": {"selector": "two"},
    "nxdomain": {"selector": "nosuchkey"},
}


@pytest.fixture(scope="module")
def signed():
    jobs = [{"message": PLAIN, "domain": "example.com", "selector": "s1", "key_path": RSA2048, **j}
            for j in JOBS.values()]
    return dict(zip(JOBS, mail_dkim_dk_sign_many(jobs)))


def settings(**verification) -> Settings:
    dns = {k[4:]: verification.pop(k) for k in list(verification) if k.startswith("dns_")}
    return Settings(verification=VerificationSettings(**verification), dns=DNSSettings(**dns))


def verify(data, zone_path, **options):
    return Verifier(settings(**options), ZoneResolver(zone_path)).verify(data)


def only(report):
    assert len(report.results) == 1, report
    return report.results[0]


def _signature(data: bytes) -> bytes:
    """The DomainKey-Signature field on top of a signed message, with its CRLF."""
    return data.split(b"\r\n", 1)[0] + b"\r\n"


# --- pass ---------------------------------------------------------------------

@pytest.mark.parametrize("name", ["nofws", "simple", "nofws no h", "simple no h", "folded nofws", "folded simple",
                                  "empty body nofws", "empty body simple", "dk record", "rsa1024", "rsa4096",
                                  "org", "subdomain sender", "sender field", "galice"])
def test_mail_dkim_domainkeys_signature_passes(signed, zone, name):
    result = only(verify(signed[name], zone))
    assert (result.type, result.result, result.algorithm) == ("domainkeys", "pass", "rsa-sha1"), result.reason


def test_pass_reports_domain_selector_key_size_and_sending_address(signed, zone):
    result = only(verify(signed["nofws"], zone))
    assert (result.domain, result.selector, result.key_bits, result.identity, result.identity_source) == (
        "example.com", "s1", 2048, "alice@example.com", "from")
    assert result.reason == "good DomainKeys rsa-sha1 signature, 2048-bit key"


def test_rsa_sha1_is_not_refused_as_for_dkim(signed, zone):
    assert only(verify(signed["nofws"], zone, allow_sha1=False)).result == "pass"


def test_a_domainkeys_pass_passes_the_report(signed, zone):
    assert verify(signed["simple"], zone).passed


def test_lf_only_copy_passes(signed, zone):
    assert only(verify(signed["nofws"].replace(b"\r\n", b"\n"), zone)).result == "pass"


def test_nofws_ignores_whitespace_changes_that_simple_does_not(signed, zone):
    def respace(data):
        return data.replace(b"Subject:   Lunch\ton", b"Subject: Lunch\r\n on").replace(b"Hi  Bob", b"Hi Bob")

    assert only(verify(respace(signed["folded nofws"]), zone)).result == "pass"
    assert only(verify(respace(signed["folded simple"]), zone)).result == "fail"


def test_empty_lines_appended_to_the_body_are_ignored(signed, zone):
    for name in ("nofws", "simple", "empty body nofws", "empty body simple"):
        assert only(verify(signed[name] + b"\r\n\r\n\r\n", zone)).result == "pass", name


def test_headers_above_the_signature_are_not_signed(signed, zone):
    data = b"Received: from relay.example.net\r\nSubject: Dinner\r\n" + signed["nofws"]
    assert only(verify(data, zone)).result == "pass"


def test_header_added_below_is_signed_only_without_h(signed, zone):
    def add(data):
        return data.replace(b"\r\n\r\n", b"\r\nX-Spam: no\r\n\r\n", 1)

    assert only(verify(add(signed["nofws"]), zone)).result == "pass"  # h= lists the headers signed
    assert only(verify(add(signed["nofws no h"]), zone)).result == "fail"  # no h=: every header below


# --- fail ---------------------------------------------------------------------

@pytest.mark.parametrize("name", ["nofws", "simple", "simple no h"])
@pytest.mark.parametrize("old, new", [(b"noon", b"one"), (b"Subject: Lunch", b"Subject: Dinner"),
                                      (b"Alice Example", b"Mallory")])
def test_changed_body_or_signed_header_fails(signed, zone, name, old, new):
    result = only(verify(signed[name].replace(old, new), zone))
    assert (result.result, result.reason) == (
        "fail", "signature mismatch: the message was changed after signing, or the key does not match")


def test_b_value_of_the_wrong_length_for_the_key_fails(signed, zone):
    data = signed["nofws"].replace(b"s=s1;", b"s=weak1024;", 1)
    result = only(verify(data, zone))
    assert (result.result, result.reason) == ("fail", "b= is 256 bytes; a signature by this 1024-bit key is 128")


# --- permerror and temperror --------------------------------------------------------

@pytest.mark.parametrize("name, reason", [
    ("nxdomain", "no key published at nosuchkey._domainkey.example.com (NXDOMAIN or no TXT)"),
    ("revoked", "key revoked._domainkey.example.com has been revoked (empty p=)"),
    ("edtype", "key edtype._domainkey.example.com is k=ed25519; DomainKeys signatures are RSA"),
    ("garbage", "key record at garbage._domainkey.example.com is malformed: p= is not valid base64"),
    ("two", "2 TXT records at two._domainkey.example.com; a key needs exactly one"),
])
def test_missing_revoked_or_unusable_key_is_permerror(signed, zone, name, reason):
    result = only(verify(signed[name], zone))
    assert (result.result, result.reason) == ("permerror", reason)


def test_dns_timeout_is_temperror(signed, black_hole):
    report = Verifier(settings(), black_hole.resolver(timeout=0.3)).verify(signed["nofws"])
    result = only(report)
    assert result.result == "temperror"
    assert result.reason.startswith("key lookup s1._domainkey.example.com failed temporarily")


def test_lookups_beyond_the_per_message_limit_are_permerror(signed, zone):
    data = _signature(signed["nofws"]) + signed["simple"]
    results = verify(data, zone, dns_max_lookups_per_message=1).results
    assert [r.result for r in results] == ["pass", "permerror"]
    assert "(MaxLookupsPerMessage)" in results[1].reason


# --- policy -------------------------------------------------------------------------

@pytest.mark.parametrize("name, options, reason", [
    ("rsa512", {}, "512-bit RSA key is under the 1024-bit minimum (MinKeyBits)"),
    ("rsa1024", {"min_key_bits": 2048}, "1024-bit RSA key is under the 2048-bit minimum (MinKeyBits)"),
    ("gbob", {}, "key g=bob does not cover the sender alice@"),
    ("hsha256", {}, "key h=sha256 does not allow sha1"),
])
def test_verified_but_refused_is_policy(signed, zone, name, options, reason):
    result = only(verify(signed[name], zone, **options))
    assert (result.result, result.reason) == ("policy", reason)


def test_weak_key_that_also_fails_is_fail(signed, zone):
    assert only(verify(signed["rsa512"].replace(b"noon", b"one"), zone)).result == "fail"


def test_testing_key_is_recorded(signed, zone):
    result = only(verify(signed["testing"], zone))
    assert (result.result, result.testing) == ("pass", True) and result.reason.endswith("in testing mode (t=y)")


# --- the sending domain (RFC 4870 section 3.3) -------------------------------------

def test_sender_field_decides_the_sending_domain(signed, zone):
    result = only(verify(signed["sender field"], zone))
    assert (result.result, result.identity, result.identity_source) == ("pass", "list@example.org", "sender")


@pytest.mark.parametrize("name, reason", [
    ("foreign sender", "d=example.com is not the domain (or a parent) of the sending address "
                       "(From; RFC 4870 section 3.3)"),
    ("sender field, From's domain", "d=example.com is not the domain (or a parent) of the sending address "
                                    "(Sender; RFC 4870 section 3.3)"),
])
def test_signature_by_another_domain_than_the_senders_is_neutral(signed, zone, name, reason):
    result = only(verify(signed[name], zone))
    assert (result.result, result.reason) == ("neutral", reason)


def test_a_from_field_added_below_the_signature_is_signed_data_and_fails_it(signed, zone):
    data = signed["nofws"].replace(b"From: Alice", b"From: Mallory <m@example.com>\r\nFrom: Alice")
    assert only(verify(data, zone)).result == "fail"  # h= lists from once: every From below is signed data


def test_no_sender_or_from_signed_is_neutral(signed, zone):
    data = _signature(signed["nofws"]) + PLAIN.replace(b"From: Alice Example <alice@example.com>\r\n", b"")
    result = only(verify(data, zone))
    assert (result.result, result.reason) == (
        "neutral", "no sending address to check d=example.com against: the signature signs neither a Sender "
                   "nor a From field")


def test_signature_for_another_domain_costs_no_dns_lookup(signed, zone):
    asked = []

    class Recording(ZoneResolver):
        def txt(self, name):
            asked.append(name)
            return super().txt(name)

    Verifier(settings(), Recording(zone)).verify(signed["foreign sender"])
    assert asked == []


# --- we agree with Mail::DKIM -------------------------------------------------

def test_mail_dkim_and_we_agree(signed, zone):
    names = ["nofws", "simple", "nofws no h", "folded nofws", "folded simple", "empty body nofws", "org",
             "subdomain sender", "sender field", "foreign sender", "revoked", "nxdomain", "edtype"]
    data = [signed[n] for n in names] + [signed["nofws"].replace(b"noon", b"one"),
                                          signed["simple"].replace(b"Lunch", b"Dinner"),
                                          signed["folded nofws"].replace(b"Hi  Bob", b"Hi Bob")]
    theirs = [[r.result for r in sigs] for sigs in mail_dkim_verify_many(data, zone)]
    ours = [[r.result for r in verify(d, zone).results] for d in data]
    same = {"pass": "pass", "fail": "fail", "neutral": "invalid", "permerror": "invalid"}
    assert [[same[r] for r in rs] for rs in ours] == theirs


def test_mail_dkim_verifies_what_it_signed_with_the_helper(zone):
    data = mail_dkim_dk_sign(PLAIN, "example.com", "s1", RSA2048, "simple")
    assert data.startswith(b"DomainKey-Signature: a=rsa-sha1; c=simple; d=example.com;")
    assert only(verify(data, zone)).result == "pass"


# --- broken signatures are neutral -----------------------------------------------

@pytest.mark.parametrize("old, new, reason", [
    (b"a=rsa-sha1", b"a=rsa-sha256", "a=rsa-sha256 is not a DomainKeys algorithm (rsa-sha1)"),
    (b"c=nofws", b"c=relaxed", "c=relaxed is not a DomainKeys canonicalization (simple or nofws)"),
    (b"q=dns", b"q=dns/txt", "q=dns/txt is not a DomainKeys query method (dns)"),
    (b"d=example.com; ", b"", "required tag missing: d="),
    (b"s=s1; ", b"", "required tag missing: s="),
    (b"b=", b"x=", "required tag missing: b="),
    (b"b=", b"b=!!", "b= is not valid base64"),
    (b"d=example.com", b"d=com", "d=com is not a domain name"),
    (b"s=s1", b"s=s 1", "s=s 1 is not a selector"),
    (b"d=example.com;", b"d=example.com; d=example.org;", "malformed tag list: duplicate tag d="),
    (b"q=dns;", b"q=dns; nonsense;", "malformed tag list: tag list element"),
])
def test_syntactically_broken_signature_is_neutral(signed, zone, old, new, reason):
    sig = _signature(signed["nofws"])
    assert old in sig, old
    result = only(verify(sig.replace(old, new, 1) + PLAIN, zone))
    assert result.result == "neutral" and result.reason.startswith(reason), result.reason


def test_missing_a_c_q_and_h_take_their_defaults(signed, zone):
    sig = _signature(signed["simple no h"])
    for tag in (b"a=rsa-sha1; ", b"c=simple; ", b"q=dns; "):
        assert tag in sig
        sig = sig.replace(tag, b"")
    assert only(verify(sig + PLAIN, zone)).result == "pass"


# --- canonicalization (RFC 4870 section 3.4) -----------------------------------------

def test_nofws_removes_all_whitespace_from_headers_and_body_lines():
    headers = [(b"Subject", b"  Lunch\r\n\ton Friday \r\n"), (b"To ", b" bob@example.net\r\n")]
    assert canon_headers(headers, "nofws") == b"Subject:LunchonFriday\r\nTo:bob@example.net\r\n"
    assert canon_body(b" a b\t\r\n \r\nc\rd\r\n \t\r\n\r\n", "nofws") == b"ab\r\n\r\ncd\r\n"  # body: test_canon


def test_simple_keeps_headers_and_body_as_they_are():
    headers = [(b"Subject", b"  Lunch\r\n\ton Friday \r\n")]
    assert canon_headers(headers, "simple") == b"Subject:  Lunch\r\n\ton Friday \r\n"
    assert canon_body(b" a \r\n\r\n \r\n\r\n\r\n", "dk-simple") == b" a \r\n\r\n \r\n"


HEADERS = [(b"Received", b" x\r\n"), (b"To", b" a\r\n"), (b"Received", b" y\r\n"), (b"From", b" b\r\n")]


@pytest.mark.parametrize("h, order", [
    (None, [b" x", b" a", b" y", b" b"]),  # no h=: every field below, in message order
    ((b"received", b"to", b"received", b"from"), [b" x", b" a", b" y", b" b"]),  # h= in message order
    ((b"received", b"from"), [b" x", b" y", b" b"]),  # a name listed once takes every instance
    ((b"from", b"received"), [b" b", b" x", b" y"]),  # fields are hashed in h= order
    ((b"received", b"received", b"from"), [b" x", b" y", b" b"]),  # listed twice: the last two, in turn
    ((b"from", b"from", b"to"), [b" b", b" a"]),  # listed more often than present: the rest is nothing
    ((b"cc",), []),
])
def test_h_chooses_the_signed_fields_and_their_order_as_mail_dkim_does(h, order):
    assert [v.rstrip(b"\r\n") for _, v in signed_fields(HEADERS, h)] == order


@pytest.mark.parametrize("body", [b"", b"\r\n", b"\r\n\r\n\r\n"])
def test_a_body_of_empty_lines_is_empty(body):
    assert canon_body(body, "dk-simple") == canon_body(body, "nofws") == b""


# --- with other signatures ------------------------------------------------------

def test_domainkeys_signatures_count_within_max_signatures(signed, zone):
    report = verify(_signature(signed["nofws"]) * 7 + PLAIN, zone, max_signatures=5,
                    dns_max_lookups_per_message=10)
    assert (len(report.results), report.not_checked, report.passed) == (5, 2, True)


def test_adsp_does_not_count_a_domainkeys_pass(signed, zone):
    report = verify(signed["nofws"], zone, adsp=True)
    assert only(report).result == "pass"
    assert report.adsp == "fail", report.adsp_reason


def test_domainkeys_is_checked_when_no_dkim_signature_passes(signed, zone):
    from peers import mail_dkim_sign

    data = mail_dkim_sign(signed["nofws"], "example.com", "s1", RSA2048).replace(b"s=s1;", b"s=nosuchkey;", 1)
    assert [(r.type, r.result) for r in verify(data, zone).results] == [("dkim", "permerror"),
                                                                         ("domainkeys", "pass")]


# --- Authentication-Results ------------------------------------------------------

@pytest.mark.parametrize("name, prop, address", [("nofws", "from", "alice@example.com"),
                                                  ("sender field", "sender", "list@example.org")])
def test_authentication_results_has_a_domainkeys_clause_that_reads_back(signed, zone, name, prop, address):
    header = header_for("mx.example.net", verify(signed[name], zone))
    clause = parse(header)[1][0]
    assert (clause.method, clause.result, clause.prop("header", "d"), clause.prop("header", prop)) == (
        "domainkeys", "pass", only(verify(signed[name], zone)).domain, address)


def test_authentication_results_of_a_failed_domainkeys_signature_gives_the_reason(signed, zone):
    header = header_for("mx.example.net", verify(signed["nofws"].replace(b"noon", b"one"), zone))
    clause = parse(header)[1][0]
    assert (clause.method, clause.result) == ("domainkeys", "fail")
    assert clause.reason.startswith("signature mismatch")


# --- the command line ------------------------------------------------------------------

def test_verify_json_shows_a_domainkeys_pass(signed, zone, tmp_path):
    path = tmp_path / "dk.eml"
    path.write_bytes(signed["nofws"])
    result = CliRunner().invoke(main, ["verify", "--zone", str(zone), "--json", str(path)])
    assert result.exit_code == 0
    assert json.loads(result.output) == [{"type": "domainkeys", "domain": "example.com", "selector": "s1",
                                          "algorithm": "rsa-sha1", "result": "pass",
                                          "reason": "good DomainKeys rsa-sha1 signature, 2048-bit key"}]


# --- hostile input: never an exception, always a word and a reason -----------------

def _hostile(signed):
    sig = _signature(signed["nofws"])
    rng = random.Random(7)
    return {
        "random bytes after a signature": (sig + rng.randbytes(5000), None),
        "only a signature": (sig, ["neutral"]),
        "empty signature": (b"DomainKey-Signature:\r\n" + PLAIN, ["neutral"]),
        "1000 signatures": (sig * 1000 + PLAIN, ["pass"] * 5),
        "100k tags": (b"DomainKey-Signature: " + b"".join(b"t%d=1; " % i for i in range(100_000)) + b"\r\n"
                      + PLAIN, ["neutral"]),
        "50k h= entries": (sig.replace(b"h=from:", b"h=" + b"from:" * 50_000) + PLAIN, ["pass"]),
        "1 MB b=": (sig.replace(b"b=", b"b=" + b"A" * 1_000_000) + PLAIN, ["fail"]),
        "8-bit d=": (sig.replace(b"d=example.com", "d=exämple.com".encode()) + PLAIN, ["neutral"]),
        "NUL in selector": (sig.replace(b"s=s1", b"s=s\x001") + PLAIN, ["neutral"]),
        "From of 2000 parentheses": (sig + PLAIN.replace(b"Alice Example <alice@example.com>", b"(" * 1990),
                                     ["neutral"]),
        "8-bit From": (sig + PLAIN.replace(b"Alice Example", "Älice €".encode()), ["fail"]),
        "binary body": (signed["nofws"] + bytes(range(256)) * 40, ["fail"]),
        "1 MB of empty lines": (signed["nofws"] + b"\r\n" * 500_000, ["pass"]),
        "1 MB of whitespace": (signed["nofws"] + b" \t" * 500_000 + b"\r\n", ["pass"]),
        "lone CRs in the trailing lines": (signed["nofws"] + b"\r\r\n\r\n" * 1000, ["pass"]),
        "bare CRs": (signed["nofws"].replace(b"\r\n", b"\r"), ["neutral"]),
    }


HOSTILE_NAMES = [
    "random bytes after a signature", "only a signature", "empty signature", "1000 signatures", "100k tags",
    "50k h= entries", "1 MB b=", "8-bit d=", "NUL in selector", "From of 2000 parentheses", "8-bit From",
    "binary body", "1 MB of empty lines", "1 MB of whitespace", "lone CRs in the trailing lines", "bare CRs"]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_hostile_message_gets_result_words_and_reasons(signed, zone, name):
    data, expected = _hostile(signed)[name]
    report = verify(data, zone)
    assert report.internal_error is None, report.internal_error
    for result in report.results:
        assert result.result in RESULT_WORDS and result.reason
    if expected is not None:
        assert [r.result for r in report.results] == expected, [r.reason for r in report.results]


# --- MDaemon's switches: VerifyDomainKeys, and no DomainKeys check once DKIM passes -----------------------

@pytest.fixture(scope="module")
def both(signed):
    """A message with a passing DKIM signature (Mail::DKIM's) above a passing DomainKey-Signature."""
    from peers import mail_dkim_sign
    return mail_dkim_sign(signed["nofws"], "example.com", "s1", RSA2048)


def test_domainkeys_is_not_checked_when_a_dkim_signature_passes(both, zone):
    asked = []

    class Recording(ZoneResolver):
        def txt(self, name):
            asked.append(name)
            return super().txt(name)

    results = Verifier(settings(), Recording(zone)).verify(both).results
    assert [(r.type, r.result) for r in results] == [("dkim", "pass"), ("domainkeys", "none")]
    assert results[1].reason == ("not checked: the DKIM signature of example.com passed (DomainKeys is checked "
                                 "only when no DKIM signature passes)")
    assert asked == ["s1._domainkey.example.com"]  # the DKIM key, once; no DomainKeys lookup


def test_a_domainkeys_signature_not_checked_is_listed_by_verify_json_but_not_in_authentication_results(
        both, zone, tmp_path):
    path = tmp_path / "both.eml"
    path.write_bytes(both)
    result = CliRunner().invoke(main, ["verify", "--zone", str(zone), "--json", str(path)])
    assert result.exit_code == 0
    assert [(r["type"], r["result"], r["domain"], r["algorithm"]) for r in json.loads(result.output)] == [
        ("dkim", "pass", "example.com", "rsa-sha256"), ("domainkeys", "none", "example.com", "rsa-sha1")]
    header = header_for("mx.example.net", verify(both, zone))
    assert [(c.method, c.result) for c in parse(header)[1]] == [("dkim", "pass")]


def test_verify_domainkeys_no_checks_no_domainkeys_signature(signed, zone):
    asked = []

    class Recording(ZoneResolver):
        def txt(self, name):
            asked.append(name)
            return super().txt(name)

    report = Verifier(settings(verify_domainkeys=False), Recording(zone)).verify(signed["nofws"])
    assert (only(report).result, only(report).reason) == ("none", "not checked: [Verification] VerifyDomainKeys = No")
    assert asked == [] and not report.passed
    assert [(c.method, c.result) for c in parse(header_for("mx.example.net", report))[1]] == [("dkim", "none")]


def test_verify_domainkeys_is_read_from_the_ini(tmp_path):
    from salmon_dkim.config import load_settings
    path = tmp_path / "dk.ini"
    path.write_text("[Verification]\nVerifyDomainKeys = No\n")
    assert load_settings(path).verification.verify_domainkeys is False
    assert load_settings().verification.verify_domainkeys is True


def test_a_domainkeys_pass_from_an_approved_domain_earns_the_approved_score(signed, zone):
    from salmon_dkim.core.policy import decide
    from salmon_dkim.core.results import Session
    options = settings(approved_domains=("example.com",), approved_score=-2.0)
    report = Verifier(options, ZoneResolver(zone)).verify(signed["nofws"])
    mx = Session(peer_ip="203.0.113.5", helo="mail.example.net")
    assert decide(report, mx, options).score == -2.0
    failed = Verifier(options, ZoneResolver(zone)).verify(signed["nofws"].replace(b"noon", b"one"))
    assert decide(failed, mx, options).score == 0.0


# --- where RFC 4870 leaves room, we read a signature as Mail::DKIM does ----------------------------------

ORG = {"domain": "example.org", "selector": "s2048", "key_path": KEYS / "example.org.rsa2048.key"}
TWO_TO = PLAIN.replace(b"To:", b"To: x@example.net\r\nTo:", 1)
TO_ABOVE_FROM = PLAIN.replace(b"From:", b"To: y@example.net\r\nFrom:", 1)
SHAPES = {  # name: (job for Mail::DKIM's signer, its verdict, ours)
    "Sender with two addresses, the signer's first": (
        {**ORG, "message": b"Sender: a@example.org, b@example.net\r\n" + PLAIN}, "pass", "pass"),
    "Sender with two addresses, the signer's second": (
        {**ORG, "message": b"Sender: b@example.net, a@example.org\r\n" + PLAIN}, "invalid", "neutral"),
    "empty Sender: From decides": ({"message": b"Sender: \r\n" + PLAIN}, "pass", "pass"),
    "Sender with no address": ({"message": b"Sender: undisclosed:;\r\n" + PLAIN}, "invalid", "neutral"),
    "Sender that is no address": ({"message": b"Sender: not an address\r\n" + PLAIN}, "invalid", "neutral"),
    "two Sender fields, the signer's last": (
        {**ORG, "message": b"Sender: x@example.net\r\nSender: a@example.org\r\n" + PLAIN}, "pass", "pass"),
    "two Sender fields, the signer's first": (
        {**ORG, "message": b"Sender: a@example.org\r\nSender: x@example.net\r\n" + PLAIN}, "invalid", "neutral"),
    "From with two addresses, the signer's first": (
        {"message": PLAIN.replace(b"Alice Example <alice@example.com>", b"alice@example.com, bob@example.net")},
        "pass", "pass"),
    "From with two addresses, the signer's second": (
        {"message": PLAIN.replace(b"Alice Example <alice@example.com>", b"bob@example.net, alice@example.com")},
        "invalid", "neutral"),
    "Sender not in h=: From decides": (
        {**ORG, "message": b"Sender: a@example.org\r\n" + PLAIN.replace(b"alice@example.com", b"alice@example.net"),
         "headers": "from:to:subject"}, "invalid", "neutral"),
    "h= out of message order": ({"headers": "subject:from"}, "pass", "pass"),
    "h= names To once per instance": ({"message": TWO_TO, "headers": "from:to:to"}, "pass", "pass"),
    "h= names To once for two, apart": ({"message": TO_ABOVE_FROM, "headers": "to:from"}, "pass", "pass"),
    "h= names To twice, in message order": ({"message": TO_ABOVE_FROM, "headers": "to:from:to"}, "pass", "pass"),
    "h= names To more often than present": ({"headers": "from:to:to:to"}, "pass", "pass"),
}


@pytest.fixture(scope="module")
def shapes():
    jobs = [{"message": PLAIN, "domain": "example.com", "selector": "s1", "key_path": RSA2048, **job}
            for job, _, _ in SHAPES.values()]
    return dict(zip(SHAPES, mail_dkim_dk_sign_many(jobs)))


@pytest.mark.parametrize("name", list(SHAPES))
def test_sending_address_and_h_are_read_as_mail_dkim_reads_them(shapes, zone, name):
    _, theirs, ours = SHAPES[name]
    assert [r.result for r in mail_dkim_verify_many([shapes[name]], zone)[0]] == [theirs]
    result = only(verify(shapes[name], zone))
    assert result.result == ours, result.reason


def test_the_sending_address_is_the_first_of_a_sender_field_that_holds_two(shapes, zone):
    result = only(verify(shapes["Sender with two addresses, the signer's first"], zone))
    assert (result.identity, result.identity_source) == ("a@example.org", "sender")
    result = only(verify(shapes["Sender with two addresses, the signer's second"], zone))
    assert result.reason == ("d=example.org is not the domain (or a parent) of the sending address (Sender; "
                             "RFC 4870 section 3.3)") and result.identity == "b@example.net"


def test_a_sender_field_that_does_not_parse_is_neutral_where_mail_dkim_guesses_an_address(zone):
    """Mail::Address reads `"unclosed <a@example.org>` as a@example.org and passes it; a sending address
    from a field RFC 5322 cannot read is no identity we vouch for, so we say neutral."""
    data = mail_dkim_dk_sign_many([{**ORG, "message": b'Sender: "unclosed <a@example.org>\r\n' + PLAIN}])[0]
    assert only(verify(data, zone)).reason == ("no sending address to check d=example.org against: the Sender "
                                               "field cannot be parsed: a quoted string is not closed")


@pytest.fixture(scope="module")
def relayed():
    """Two DomainKey-Signatures by two domains, each over its own Sender: example.com's list server signed
    the post (Sender news@), example.org's forwarder added its Sender and signed everything below it."""
    def nest(inner_sender: bytes):
        inner = mail_dkim_dk_sign_many([{"message": inner_sender + PLAIN, "domain": "example.com",
                                         "selector": "s1", "key_path": RSA2048}])[0]
        return mail_dkim_dk_sign_many([{**ORG, "message": b"Sender: fwd@example.org\r\n" + inner}])[0]
    return {"inner From only": nest(b""), "inner Sender too": nest(b"Sender: news@example.com\r\n")}


def test_each_domainkeys_signature_takes_the_sending_address_below_it(relayed, zone):
    data = relayed["inner From only"]
    assert [r.result for r in mail_dkim_verify_many([data], zone)[0]] == ["pass", "pass"]
    results = verify(data, zone).results
    assert [(r.domain, r.result, r.identity) for r in results] == [
        ("example.org", "pass", "fwd@example.org"), ("example.com", "pass", "alice@example.com")]


def test_with_a_sender_below_each_the_outer_signature_takes_the_last_sender_it_signs(relayed, zone):
    """The outer signature signs both Sender fields; Mail::DKIM takes the last one it signs (the inner
    signer's), which is not in example.org: invalid.  We agree; the inner signature is untouched by the
    Sender above it."""
    data = relayed["inner Sender too"]
    assert [r.result for r in mail_dkim_verify_many([data], zone)[0]] == ["invalid", "pass"]
    results = verify(data, zone).results
    assert [(r.domain, r.result, r.identity) for r in results] == [
        ("example.org", "neutral", "news@example.com"), ("example.com", "pass", "news@example.com")]


# --- signing (Mailtraq's DomainKeys option) -------------------------------------------------------------


SIGNED_SHAPES = {
    "plain": PLAIN, "folded": crlf(FOLDED), "empty body": EMPTY_BODY,
    "sender": b"Sender: list@example.com\r\n" + PLAIN.replace(b"alice@example.com", b"alice@example.net"),
    "two To": TWO_TO, "To above From": TO_ABOVE_FROM,
}


@pytest.fixture(scope="module")
def rsa_key(tmp_path_factory):
    from conftest import private_copy
    return load_private_key(private_copy(RSA2048, tmp_path_factory.mktemp("keys") / "s1.key"))


@pytest.fixture(scope="module")
def ours_signed(rsa_key):
    return {(name, canon, h): sign_domainkeys(Message.parse(data), "example.com", "s1", rsa_key, canon, h) + data
            for name, data in SIGNED_SHAPES.items() for canon in ("nofws", "simple")
            for h in (None, ("from", "to", "subject", "date"))}


def test_mail_dkim_verifies_every_domainkeys_signature_we_make(ours_signed, zone):
    keys = list(ours_signed)
    theirs = mail_dkim_verify_many([ours_signed[k] for k in keys], zone)
    assert {k: [r.result for r in t] for k, t in zip(keys, theirs)} == {k: ["pass"] for k in keys}
    assert {k: [r.result for r in verify(ours_signed[k], zone).results] for k in keys} == {k: ["pass"] for k in keys}


def _dk_tags(data: bytes) -> dict:
    """The tags of the DomainKey-Signature on top of ``data``, folding removed."""
    value = Message.parse(data).values(b"domainkey-signature")[0]
    return {k: v.replace(b"\r\n ", b"") for k, v in parse_tags(value).items()}


def test_our_signature_reads_as_mailtraqs_does(ours_signed):
    data = ours_signed[("plain", "nofws", ("from", "to", "subject", "date"))]
    assert data.startswith(b"DomainKey-Signature: a=rsa-sha1; c=nofws; d=example.com; s=s1; q=dns;")
    assert list(_dk_tags(data)) == [b"a", b"c", b"d", b"s", b"q", b"h", b"b"]
    head = data[:data.index(b"\r\nFrom:")]
    assert all(len(line) <= 77 for line in head.split(b"\r\n"))


def test_h_lists_each_instance_in_message_order_and_always_the_sending_field(ours_signed):
    wanted = ("from", "to", "subject", "date")
    assert _dk_tags(ours_signed[("two To", "nofws", wanted)])[b"h"] == b"from:to:to:subject:date"
    assert _dk_tags(ours_signed[("To above From", "nofws", wanted)])[b"h"] == b"to:from:to:subject:date"
    assert _dk_tags(ours_signed[("sender", "simple", wanted)])[b"h"] == b"sender:from:to:subject:date"


def test_without_h_every_field_below_is_signed(ours_signed, zone):
    data = ours_signed[("plain", "nofws", None)]
    assert b"h=" not in _signature(data)
    added = data.replace(b"\r\n\r\n", b"\r\nX-Added: later\r\n\r\n", 1)
    assert only(verify(added, zone)).result == "fail"


@pytest.mark.parametrize("problem, call", [
    ("DomainKeys signs with RSA only", lambda key, ed: sign_domainkeys(Message.parse(PLAIN), "example.com", "ed1",
                                                                       ed)),
    ("the sending address alice@example.com (From) is not in example.org",
     lambda key, ed: sign_domainkeys(Message.parse(PLAIN), "example.org", "s2048", key)),
    ("'relaxed' is not a DomainKeys canonicalization",
     lambda key, ed: sign_domainkeys(Message.parse(PLAIN), "example.com", "s1", key, "relaxed")),
])
def test_what_cannot_be_signed_is_refused_with_the_reason(rsa_key, tmp_path, problem, call):
    from conftest import private_copy
    ed = load_private_key(private_copy(KEYS / "example.com.ed25519.key", tmp_path / "ed1.key"))
    with pytest.raises(ValueError, match=re.escape(problem)):
        call(rsa_key, ed)


# --- the Signer adds it in the same pass as DKIM: [Signing] SignDomainKeys, [[domain]] SignDomainKeys ---------

def _signer(keys_dir, selectors=("s1",), dkim_headers=None, **entry):
    from types import MappingProxyType

    from salmon_dkim.config import DomainKeys, LoggingSettings, SigningSettings
    from salmon_dkim.core.signer import Signer
    domain = DomainKeys("example.com", selectors, tuple(keys_dir / "example.com" / f"{s}.key" for s in selectors),
                        **entry)
    signing = SigningSettings(keys_dir=keys_dir, domains=MappingProxyType({"example.com": domain}))
    if dkim_headers:
        from dataclasses import replace
        signing = replace(signing, headers=dkim_headers)
    return Signer(Settings(signing=signing, logging=LoggingSettings(activity_log=None)))


def _without_domainkeys(data: bytes) -> bytes:
    from salmon_dkim.core.message import remove_fields
    return remove_fields(data, lambda name, _value: name == b"domainkey-signature")


def test_domainkeys_signing_is_off_by_default(keys_dir):
    result = _signer(keys_dir).sign(PLAIN)
    assert b"DomainKey-Signature" not in result.message
    assert [i.algorithm for i in result.signatures] == ["rsa-sha256"]


@pytest.mark.parametrize("canon", ["nofws", "simple"])
def test_the_domainkey_signature_goes_below_the_dkim_signature_and_both_verify(keys_dir, zone, canon):
    result = _signer(keys_dir, sign_domainkeys=True, domainkeys_canon=canon).sign(PLAIN)
    fields = [n for n, _ in Message.parse(result.message).fields]
    assert fields[:3] == [b"DKIM-Signature", b"DomainKey-Signature", b"From"]
    assert result.message.endswith(PLAIN)
    assert [(i.algorithm, i.selector) for i in result.signatures] == [("rsa-sha256", "s1"), ("rsa-sha1", "s1")]
    assert _dk_tags(result.message[result.message.index(b"DomainKey-Signature:"):])[b"c"] == canon.encode()
    assert [r.result for r in mail_dkim_verify_many([result.message], zone)[0]] == ["pass", "pass"]
    checked = verify(result.message, zone, verify_domainkeys=True)
    assert [(r.type, r.result) for r in checked.results] == [("dkim", "pass"), ("domainkeys", "none")]


def test_the_dkim_signature_does_not_cover_it_so_stripping_it_leaves_dkim_intact(keys_dir, zone):
    from salmon_dkim.core.listmail import strip_signatures
    signed_both = _signer(keys_dir, sign_domainkeys=True).sign(PLAIN).message
    dkim_only = _without_domainkeys(signed_both)
    assert b"domainkey-signature" not in dkim_only.lower()
    assert [r.result for r in verify(dkim_only, zone).results] == ["pass"]
    assert [r.result for r in mail_dkim_verify_many([dkim_only], zone)[0]] == ["pass"]
    assert strip_signatures(signed_both) == PLAIN


def test_listing_domainkey_signature_in_headers_makes_dkim_cover_it(keys_dir, zone):
    headers = ("from", "to", "subject", "date", "domainkey-signature")
    signed_both = _signer(keys_dir, dkim_headers=headers, sign_domainkeys=True).sign(PLAIN).message
    dkim = Message.parse(signed_both).values(b"dkim-signature")[0]
    assert b"domainkey-signature" in parse_tags(dkim)[b"h"].replace(b"\r\n ", b"")
    assert [r.result for r in mail_dkim_verify_many([signed_both], zone)[0]] == ["pass", "pass"]
    assert [r.result for r in verify(_without_domainkeys(signed_both), zone).results] == ["fail"]


def test_domainkeys_signs_with_the_domains_rsa_key_beside_an_ed25519_one(keys_dir, zone):
    result = _signer(keys_dir, ("ed1", "s1"), sign_domainkeys=True).sign(PLAIN)
    assert [(i.algorithm, i.selector) for i in result.signatures] == [
        ("ed25519-sha256", "ed1"), ("rsa-sha256", "s1"), ("rsa-sha1", "s1")]


def test_domainkeys_for_a_domain_with_only_an_ed25519_key_fails_closed(keys_dir):
    from salmon_dkim.core.signer import SigningError
    with pytest.raises(SigningError, match=r"SignDomainKeys is on for example.com but none of its selectors \(ed1\) "
                                           r"is an RSA key"):
        _signer(keys_dir, ("ed1",), sign_domainkeys=True).sign(PLAIN)


def test_mail_signed_as_another_domain_than_the_senders_gets_no_domainkey_signature(keys_dir, zone):
    post = PLAIN.replace(b"alice@example.com", b"alice@example.net")  # a list post re-signed as the list
    result = _signer(keys_dir, sign_domainkeys=True).sign(post, domain="example.com")
    assert b"DomainKey-Signature" not in result.message
    assert [r.result for r in verify(result.message, zone).results] == ["pass"]


def test_sign_domainkeys_is_read_from_signing_with_a_domain_override(tmp_path, keys_dir):
    from salmon_dkim.config import load_settings
    path = tmp_path / "dk.ini"
    path.write_text(f"[Signing]\nKeysDir = {keys_dir}\nSignDomainKeys = Yes\nDomainKeysCanonicalization = simple\n"
                    "DomainKeysHeaders = From, To\n[Domains]\n[[example.com]]\nSelectors = s1\n"
                    "[[example.org]]\nSelectors = s2048\nSignDomainKeys = No\n")
    signing = load_settings(path).signing
    com, org = signing.domains["example.com"], signing.domains["example.org"]
    assert (com.sign_domainkeys, com.domainkeys_canon, org.sign_domainkeys) == (True, "simple", False)
    assert signing.domainkeys_headers == ("from", "to")
    assert load_settings().signing.sign_domainkeys is False
