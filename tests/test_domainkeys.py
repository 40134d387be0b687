"""DomainKeys (RFC 4870): signatures made by Mail::DKIM, verified by us and by Mail::DKIM.

One perl run signs every message of the module; keys come from the test keys'
zone file plus records for the key tags under test.
"""
import json
import random

import pytest
from click.testing import CliRunner
from conftest import KEYS, message
from peers import crlf, have_mail_dkim, mail_dkim_dk_sign, mail_dkim_dk_sign_many, mail_dkim_verify_many

from salmon_dkim.core.authres import header_for, parse
from salmon_dkim.cli import main
from salmon_dkim.config import DNSSettings, Settings, VerificationSettings
from salmon_dkim.core.canon import canon_body
from salmon_dkim.core.domainkeys import canon_headers
from salmon_dkim.dns.resolver import ZoneResolver
from salmon_dkim.core.keys import zone_line
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


@pytest.mark.parametrize("edit, reason", [
    ((b"From: Alice", b"From: Mallory <m@example.com>\r\nFrom: Alice"), "the message has 2 From fields"),
    ((b"From: Alice Example <alice@example.com>", b"From: a@example.com, b@example.com"),
     "the From field does not hold exactly one address"),
    ((b"From: Alice Example <alice@example.com>\r\n", b""), "the message has neither a Sender nor a From field"),
])
def test_no_single_sending_address_is_neutral(signed, zone, edit, reason):
    result = only(verify(signed["nofws"].replace(*edit), zone))
    assert result.result == "neutral" and result.reason.endswith(reason), result.reason


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
    assert canon_headers(headers, None, "nofws") == b"Subject:LunchonFriday\r\nTo:bob@example.net\r\n"
    assert canon_body(b" a b\t\r\n \r\nc\rd\r\n \t\r\n\r\n", "nofws") == b"ab\r\n\r\ncd\r\n"  # body: test_canon


def test_simple_keeps_headers_and_body_as_they_are():
    headers = [(b"Subject", b"  Lunch\r\n\ton Friday \r\n")]
    assert canon_headers(headers, None, "simple") == b"Subject:  Lunch\r\n\ton Friday \r\n"
    assert canon_body(b" a \r\n\r\n \r\n\r\n\r\n", "dk-simple") == b" a \r\n\r\n \r\n"


def test_h_selects_headers_in_message_order_every_instance():
    headers = [(b"Received", b" x\r\n"), (b"To", b" a\r\n"), (b"Received", b" y\r\n"), (b"From", b" b\r\n")]
    assert canon_headers(headers, frozenset({b"from", b"received"}), "simple") == (
        b"Received: x\r\nReceived: y\r\nFrom: b\r\n")


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


def test_domainkeys_and_dkim_signatures_are_checked_side_by_side(signed, zone):
    from peers import mail_dkim_sign

    data = mail_dkim_sign(signed["nofws"], "example.com", "s1", RSA2048)
    assert [(r.type, r.result) for r in verify(data, zone).results] == [("dkim", "pass"), ("domainkeys", "pass")]


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
