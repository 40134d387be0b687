"""The verifier: every result word and every rule, on messages signed by Mail::DKIM.

Signatures come from Mail::DKIM (one perl run per module, with the tags each
rule needs: t=, x=, i=, l=, rsa-sha1); key records come from a zone file that
republishes the test keys with the key tags under test.  The clock is fixed.
"""
import base64
import json
import random
import subprocess

import pytest
from conftest import KEYS, message
from peers import crlf, have_mail_dkim

from salmon_dkim.config import DNSSettings, Settings, VerificationSettings
from salmon_dkim.dns.resolver import ZoneResolver
from salmon_dkim.core.keys import zone_line
from salmon_dkim.core.verifier import RESULT_WORDS, Verifier

pytestmark = pytest.mark.skipif(not have_mail_dkim(),
                                reason="Mail::DKIM (libmail-dkim-perl) is not installed")

NOW = 1795000000  # 2026-11-18
RSA2048 = KEYS / "example.com.rsa2048.key"
PLAIN = crlf(message("plain.eml"))

# One perl run signs every job: {message, key, domain, selector, algorithm, canon, tags}, base64 in and out.
_SIGNER = r"""
use strict; use warnings; use JSON::PP; use MIME::Base64;
use Mail::DKIM::Signer; use Mail::DKIM::Signature;
my $jobs = decode_json(do { local $/; <STDIN> });
my @out;
for my $job (@$jobs) {
    my %t = %{$job->{tags}};
    my $s = Mail::DKIM::Signer->new(KeyFile => $job->{key}, Policy => sub {
        my $signer = shift;
        my $sig = Mail::DKIM::Signature->new(Algorithm => $job->{algorithm}, Method => $job->{canon},
            Headers => $signer->headers, Domain => $job->{domain}, Selector => $job->{selector},
            (exists $t{t} ? (Timestamp => $t{t}) : ()), (exists $t{x} ? (Expiration => $t{x}) : ()),
            (exists $t{i} ? (Identity => $t{i}) : ()));
        $sig->body_count($t{l}) if exists $t{l};
        $signer->add_signature($sig);
        return;
    });
    $s->PRINT(decode_base64($job->{message})); $s->CLOSE;
    push @out, $s->signature->as_string;
}
print encode_json(\@out);
"""


def mail_dkim_sign_all(jobs):
    """Each job's message with a Mail::DKIM signature on top."""
    payload = [{"message": base64.b64encode(j.get("message", PLAIN)).decode(),
                "key": str(j.get("key", RSA2048)),
                "domain": j.get("domain", "example.com"), "selector": j.get("selector", "s1"),
                "algorithm": j.get("algorithm", "rsa-sha256"), "canon": j.get("canon", "relaxed/relaxed"),
                "tags": {k: str(v) for k, v in j.get("tags", {}).items()}} for j in jobs]
    proc = subprocess.run(["perl", "-e", _SIGNER], input=json.dumps(payload).encode(),
                          capture_output=True, check=True)
    return [crlf(sig.encode() + b"\n") + j.get("message", PLAIN)
            for sig, j in zip(json.loads(proc.stdout), jobs)]


def published_p(selector, domain="example.com") -> str:
    txt = ZoneResolver(KEYS / "keys.zone").txt(f"{selector}._domainkey.{domain}")[0].decode()
    return txt.split("p=", 1)[1]


def extra_zone(tmp_path_factory, lines):
    path = tmp_path_factory.mktemp("zone") / "verify.zone"
    path.write_text((KEYS / "keys.zone").read_text() + "\n".join(lines) + "\n")
    return path


S1, ED1, WEAK1024 = published_p("s1"), published_p("ed1"), published_p("weak1024")
ORG = published_p("s2048", "example.org")
RECORDS = {  # selector -> key record, all under example.com
    "hsha1": f"v=DKIM1; k=rsa; h=sha1; p={S1}",
    "hboth": f"v=DKIM1; k=rsa; h=sha1:sha256; p={S1}",
    "tlsonly": f"v=DKIM1; k=rsa; s=tlsrpt; p={S1}",
    "anysvc": f"v=DKIM1; k=rsa; s=email:tlsrpt; p={S1}",
    "strict": f"v=DKIM1; k=rsa; t=s; p={S1}",
    "testing": f"v=DKIM1; k=rsa; t=y; p={S1}",
    "edtype": f"v=DKIM1; k=ed25519; p={ED1}",
    "revoked": "v=DKIM1; k=rsa; p=",
    "garbage": "v=DKIM1; k=rsa; p=!!notbase64!!",
    "badtags": "v=DKIM1; k",
    "otherkey": f"v=DKIM1; k=rsa; p={ORG}",
    "shortkey": f"v=DKIM1; k=rsa; p={WEAK1024}",
}


@pytest.fixture(scope="module")
def zone(tmp_path_factory):
    lines = [zone_line(s, "example.com", txt) for s, txt in RECORDS.items()]
    lines += [zone_line("two", "example.com", f"v=DKIM1; p={p}") for p in (S1, ORG)]
    return extra_zone(tmp_path_factory, lines)


JOBS = {
    "good": {},
    "simple": {"canon": "simple/simple"},
    "sha1": {"algorithm": "rsa-sha1"},
    "sha1 simple": {"algorithm": "rsa-sha1", "canon": "simple/simple"},
    "rsa512": {"selector": "weak512", "key": KEYS / "example.com.rsa512.key"},
    "rsa1024": {"selector": "weak1024", "key": KEYS / "example.com.rsa1024.key"},
    "rsa4096": {"selector": "big", "key": KEYS / "example.com.rsa4096.key"},
    "l=10": {"tags": {"l": 10}},
    "l=whole": {"tags": {"l": 76}},
    "expired": {"tags": {"t": NOW - 2 * 86400, "x": NOW - 86400}},
    "x within drift": {"tags": {"t": NOW - 86400, "x": NOW - 200}},
    "x ahead": {"tags": {"t": NOW - 60, "x": NOW + 86400}},
    "x before t": {"tags": {"t": NOW, "x": NOW - 10}},
    "t future": {"tags": {"t": NOW + 3600}},
    "t future within drift": {"tags": {"t": NOW + 200}},
    "hsha1": {"selector": "hsha1"},
    "hsha1 rsa-sha1": {"selector": "hsha1", "algorithm": "rsa-sha1"},
    "hboth": {"selector": "hboth"},
    "tlsonly": {"selector": "tlsonly"},
    "anysvc": {"selector": "anysvc"},
    "strict subdomain": {"selector": "strict", "tags": {"i": "alice@mail.example.com"}},
    "strict same": {"selector": "strict", "tags": {"i": "alice@example.com"}},
    "subdomain identity": {"tags": {"i": "@mail.example.com"}},
    "testing": {"selector": "testing"},
    "edtype": {"selector": "edtype"},
    "revoked": {"selector": "revoked"},
    "garbage": {"selector": "garbage"},
    "badtags": {"selector": "badtags"},
    "nxdomain": {"selector": "nosuchkey"},
    "two": {"selector": "two"},
    "otherkey": {"selector": "otherkey"},
    "shortkey": {"selector": "shortkey"},
    "org": {"domain": "example.org", "selector": "s2048", "key": KEYS / "example.org.rsa2048.key"},
}


@pytest.fixture(scope="module")
def signed():
    return dict(zip(JOBS, mail_dkim_sign_all(list(JOBS.values()))))


def settings(**verification) -> Settings:
    dns = {k[4:]: verification.pop(k) for k in list(verification) if k.startswith("dns_")}
    return Settings(verification=VerificationSettings(**verification), dns=DNSSettings(**dns))


def verify(data, zone_path, **options):
    return Verifier(settings(**options), ZoneResolver(zone_path), clock=lambda: NOW).verify(data)


def only(report):
    assert len(report.results) == 1, report
    return report.results[0]


# --- pass --------------------------------------------------------------------

@pytest.mark.parametrize("name", ["good", "simple", "rsa1024", "rsa4096", "x within drift", "x ahead",
                                  "t future within drift", "hboth", "anysvc", "strict same",
                                  "subdomain identity", "l=whole", "org"])
def test_mail_dkim_signature_passes(signed, zone, name):
    result = only(verify(signed[name], zone))
    assert (result.result, result.type) == ("pass", "dkim"), result.reason


def test_pass_reports_domain_selector_algorithm_b_and_key_size(signed, zone):
    result = only(verify(signed["good"], zone))
    b = signed["good"].split(b"b=")[-1][:8].decode()
    assert (result.domain, result.selector, result.algorithm, result.b, result.key_bits, result.testing) == (
        "example.com", "s1", "rsa-sha256", b, 2048, False)
    assert result.as_json() == {"type": "dkim", "domain": "example.com", "selector": "s1",
                                "algorithm": "rsa-sha256", "result": "pass", "reason": result.reason}


def test_lf_only_copy_of_a_signed_message_passes(signed, zone):
    assert only(verify(signed["good"].replace(b"\r\n", b"\n"), zone)).result == "pass"


# --- fail --------------------------------------------------------------------

def test_changed_body_fails_with_body_hash_mismatch(signed, zone):
    result = only(verify(signed["good"].replace(b"noon", b"one"), zone))
    assert result.result == "fail" and "body hash mismatch" in result.reason


def test_changed_signed_header_fails_with_signature_mismatch(signed, zone):
    result = only(verify(signed["good"].replace(b"Subject: Lunch", b"Subject: Dinner"), zone))
    assert result.result == "fail" and "signature mismatch" in result.reason


def test_added_unsigned_header_still_passes(signed, zone):
    data = signed["good"].replace(b"\r\n\r\n", b"\r\nX-Spam: no\r\n\r\n", 1)
    assert only(verify(data, zone)).result == "pass"


def test_from_added_above_a_signature_that_signs_one_from_is_refused_by_policy(signed, zone):
    data = signed["good"].replace(b"From: Alice", b"From: Mallory <ceo@example.com>\r\nFrom: Alice", 1)
    result = only(verify(data, zone))
    assert (result.result, result.reason) == ("policy", "the message has 2 From fields (RFC 5322 allows one)")


def test_key_that_did_not_sign_fails(signed, zone):
    result = only(verify(signed["otherkey"], zone))
    assert result.result == "fail" and "signature mismatch" in result.reason


def test_b_value_of_the_wrong_length_for_the_key_fails(signed, zone):
    result = only(verify(signed["shortkey"], zone))
    assert result.result == "fail"
    assert result.reason == "b= is 256 bytes; a signature by this 1024-bit key is 128"


def test_l_longer_than_the_body_fails(signed, zone):
    data = signed["l=10"].split(b"\r\n\r\n")[0] + b"\r\n\r\nHi\r\n"
    result = only(verify(data, zone))
    assert result.result == "fail" and "l=10 is longer than the body" in result.reason


def test_refused_signature_that_also_fails_is_fail(signed, zone):
    result = only(verify(signed["sha1"].replace(b"noon", b"one"), zone))
    assert result.result == "fail"


# --- policy ------------------------------------------------------------------

@pytest.mark.parametrize("name, reason", [
    ("sha1", "rsa-sha1 is not accepted (RFC 8301)"),
    ("sha1 simple", "rsa-sha1 is not accepted (RFC 8301)"),
    ("rsa512", "512-bit RSA key is under the 1024-bit minimum (RFC 8301)"),
    ("l=10", "l=10 leaves 66 body bytes unsigned"),
    ("t future", "t= is 3600 s in the future"),
    ("hsha1", "key h=sha1 does not allow sha256"),
    ("tlsonly", "key s=tlsrpt is not for email"),
    ("strict subdomain", "key t=s requires the i= domain to equal d=example.com"),
])
def test_verified_but_refused_is_policy(signed, zone, name, reason):
    result = only(verify(signed[name], zone))
    assert (result.result, result.reason) == ("policy", reason)


def test_allow_sha1_accepts_rsa_sha1(signed, zone):
    assert only(verify(signed["sha1"], zone, allow_sha1=True)).result == "pass"
    assert only(verify(signed["hsha1 rsa-sha1"], zone, allow_sha1=True)).result == "pass"


def test_min_key_bits_raised_refuses_1024_bit_key(signed, zone):
    result = only(verify(signed["rsa1024"], zone, min_key_bits=2048))
    assert result.result == "policy" and "1024-bit RSA key is under the 2048-bit minimum" in result.reason


def test_honor_body_length_accepts_l(signed, zone):
    assert only(verify(signed["l=10"], zone, honor_body_length=True)).result == "pass"


def test_honored_l_ignores_text_appended_after_signing(signed, zone):
    data = signed["l=10"] + b"Appended by a list\r\n"
    assert only(verify(data, zone, honor_body_length=True)).result == "pass"
    assert only(verify(data, zone)).result == "policy"


# --- testing keys ------------------------------------------------------------

def test_testing_key_is_recorded_on_a_pass(signed, zone):
    result = only(verify(signed["testing"], zone))
    assert (result.result, result.testing) == ("pass", True)
    assert "testing mode" in result.reason


def test_testing_key_is_recorded_on_a_fail(signed, zone):
    result = only(verify(signed["testing"].replace(b"noon", b"one"), zone))
    assert (result.result, result.testing) == ("fail", True)


# --- permerror ---------------------------------------------------------------

@pytest.mark.parametrize("name, reason", [
    ("nxdomain", "no key published at nosuchkey._domainkey.example.com (NXDOMAIN or no TXT)"),
    ("revoked", "key revoked._domainkey.example.com has been revoked (empty p=)"),
    ("edtype", "key edtype._domainkey.example.com is k=ed25519, which cannot check a=rsa-sha256"),
    ("garbage", "key record at garbage._domainkey.example.com is malformed: p= is not valid base64"),
    ("badtags", "key record at badtags._domainkey.example.com is malformed"),
    ("two", "2 TXT records at two._domainkey.example.com; a key needs exactly one"),
    ("expired", "signature expired 86400 s ago"),
])
def test_unusable_key_or_expired_signature_is_permerror(signed, zone, name, reason):
    result = only(verify(signed[name], zone))
    assert result.result == "permerror" and result.reason.startswith(reason), result.reason


def test_expiry_allows_only_the_clock_drift(signed, zone):
    assert only(verify(signed["x within drift"], zone)).result == "pass"
    assert only(verify(signed["x within drift"], zone, clock_drift=100)).result == "permerror"


def test_lookups_beyond_the_per_message_limit_are_permerror(signed, zone):
    first, second = signed["good"], signed["org"]
    data = first.split(b"\r\n", 1)[0] + b"\r\n" + second.split(b"\r\n", 1)[0] + b"\r\n" + PLAIN
    results = verify(data, zone, dns_max_lookups_per_message=1).results
    assert [r.result for r in results] == ["pass", "permerror"]
    assert "more than 1 DNS lookups for this message (MaxLookupsPerMessage)" in results[1].reason


# --- neutral: broken signatures ----------------------------------------------

def _edit(data: bytes, old: bytes, new: bytes) -> bytes:
    head, _, rest = data.partition(b"\r\n\r\n")
    sig_end = head.index(b"\r\nFrom:")
    assert old in head[:sig_end], old
    return head[:sig_end].replace(old, new, 1) + head[sig_end:] + b"\r\n\r\n" + rest


@pytest.mark.parametrize("old, new, reason", [
    (b"v=1; ", b"", "required tag missing: v="),
    (b"v=1", b"v=2", "v= is not the DKIM version (v=1)"),
    (b"a=rsa-sha256", b"a=rsa-md5", "a= is not a known algorithm"),
    (b"bh=", b"xh=", "required tag missing: bh="),
    (b" s=s1;", b"", "required tag missing: s="),
    (b"d=example.com", b"d=exa mple.com", "d= is not a domain name"),
    (b"d=example.com", b"d=com", "d= is not a domain name"),
    (b"c=relaxed/relaxed", b"c=loose/relaxed", "c= is not a canonicalization"),
    (b"h=from:", b"h=", "h= does not include From (RFC 6376 section 5.4)"),
    (b"d=example.com;", b"d=example.com; i=a@example.net;", "the i= domain is not d=example.com or a subdomain of it"),
    (b"d=example.com;", b"d=example.com; q=http/well-known;", "q= does not offer dns/txt"),
    (b"d=example.com;", b"d=example.com; t=soon;", "t= is not a number"),
    (b"d=example.com;", b"d=example.com; l=-1;", "l= is not a number"),
    (b"bh=", b"bh=!!", "bh= is not valid base64"),
    (b"b=", b"b=*", "b= is not valid base64"),
    (b"d=example.com;", b"d=example.com; d=example.org;", "malformed tag list: duplicate tag d="),
    (b"d=example.com;", b"d=example.com; nonsense;", "malformed tag list: tag list element"),
])
def test_syntactically_broken_signature_is_neutral(signed, zone, old, new, reason):
    result = only(verify(_edit(signed["good"], old, new), zone))
    assert result.result == "neutral" and result.reason.startswith(reason), result.reason


def test_expiry_before_signing_time_is_neutral(signed, zone):
    result = only(verify(signed["x before t"], zone))
    assert (result.result, result.reason) == ("neutral", "x= (expiry) is not later than t= (signing time)")


def test_broken_signature_still_shows_what_could_be_read(signed, zone):
    result = only(verify(_edit(signed["good"], b"v=1", b"v=2"), zone))
    assert (result.domain, result.selector, result.algorithm) == ("example.com", "s1", "rsa-sha256")


# --- many signatures ---------------------------------------------------------

def test_every_signature_gets_its_own_result(signed, zone):
    sigs = [signed[n].split(b"\r\nFrom:", 1)[0] + b"\r\n" for n in ("good", "sha1", "nxdomain")]
    results = verify(b"".join(sigs) + PLAIN, zone).results
    assert [r.result for r in results] == ["pass", "policy", "permerror"]


def test_signatures_beyond_max_signatures_are_counted_not_checked(signed, zone):
    sig = signed["good"].split(b"\r\nFrom:", 1)[0] + b"\r\n"
    report = verify(sig * 7 + PLAIN, zone, max_signatures=5, dns_max_lookups_per_message=10)
    assert (len(report.results), report.not_checked, report.passed) == (5, 2, True)


# --- author domain and ADSP ----------------------------------------------------

@pytest.mark.parametrize("from_line, domain", [
    (b"From: Alice Example <alice@Example.COM>", "example.com"),
    (b"From: alice@example.com", "example.com"),
    (b'From: "Example, Inc." <news@Example.com.>', "example.com"),
    (b"From: Alice\r\n <alice@example.com>", "example.com"),
    (b"From: a@example.com, b@example.org", None),
    (b"From: undisclosed", None),
    (b"From: " + b"(" * 1990, None),  # email.utils recurses per "(": RecursionError, not None, before
])
def test_author_domain_comes_from_the_single_from_address(zone, from_line, domain):
    data = PLAIN.replace(b"From: Alice Example <alice@example.com>", from_line)
    assert verify(data, zone).author_domain == domain


def test_author_domain_is_none_with_two_from_fields(zone):
    data = b"From: a@example.com\r\n" + PLAIN
    assert verify(data, zone).author_domain is None


@pytest.fixture(scope="module")
def adsp_zone(tmp_path_factory):
    lines = [zone_line("testing", "example.com", RECORDS["testing"]),
             '_adsp._domainkey.example.com. IN TXT "dkim=all"',
             '_adsp._domainkey.example.org. IN TXT "dkim=discardable"',
             '_adsp._domainkey.example.net. IN TXT "dkim=unknown"',
             'example.biz. IN TXT "v=spf1 -all"']
    return extra_zone(tmp_path_factory, lines)


def _from(data: bytes, domain: bytes) -> bytes:
    return data.replace(b"alice@example.com", b"alice@" + domain)


@pytest.mark.parametrize("data_name, author, word", [
    ("good", b"example.com", "pass"),
    ("unsigned", b"example.com", "fail"),
    ("unsigned", b"example.org", "discard"),
    ("unsigned", b"example.net", "unknown"),
    ("unsigned", b"example.biz", "none"),
    ("unsigned", b"example.info", "nxdomain"),
    ("tampered", b"example.com", "fail"),
    ("tampered testing", b"example.com", "unknown"),
])
def test_adsp_result(signed, adsp_zone, data_name, author, word):
    data = {"good": signed["good"], "unsigned": PLAIN,
            "tampered": signed["good"].replace(b"noon", b"one"),
            "tampered testing": signed["testing"].replace(b"noon", b"one")}[data_name]
    if author != b"example.com":
        data = _from(data, author)
    report = verify(data, adsp_zone, adsp=True)
    assert report.adsp == word, report.adsp_reason


def test_adsp_nxdomain_goes_into_authentication_results(adsp_zone):
    from salmon_dkim.core.authres import header_for, parse
    report = verify(_from(PLAIN, b"example.info"), adsp_zone, adsp=True)
    results = parse(header_for("mx.example.org", report))[1]
    assert [(r.method, r.result) for r in results] == [("dkim", "none"), ("dkim-adsp", "nxdomain")]


def test_adsp_is_not_looked_up_when_off(adsp_zone):
    assert verify(PLAIN, adsp_zone).adsp is None


# --- hostile input: never an exception, always a word and a reason -----------

def _hostile(signed):
    sig = signed["good"].split(b"\r\nFrom:", 1)[0] + b"\r\n"
    rng = random.Random(4)
    return {
        "empty": (b"", []),
        "random bytes": (rng.randbytes(5000), None),
        "random bytes after a signature": (sig + rng.randbytes(5000), None),
        "binary body": (signed["good"] + bytes(range(256)) * 40, ["fail"]),
        "no header/body separator": (signed["good"].split(b"\r\n\r\n")[0], ["fail"]),
        "only a signature": (sig, ["fail"]),
        "2 MB header": (b"X-Big: " + b"a" * 2_000_000 + b"\r\n" + signed["good"], ["pass"]),
        "1000 signatures": (sig * 1000 + PLAIN, ["pass"] * 5),
        "100k tags": (b"DKIM-Signature: " + b"".join(b"t%d=1; " % i for i in range(100_000)) + b"\r\n"
                      + PLAIN, ["neutral"]),
        "50k h= entries": (sig.replace(b"h=from:", b"h=" + b"from:" * 50_000) + PLAIN, ["fail"]),
        "empty signature": (b"DKIM-Signature:\r\n" + PLAIN, ["neutral"]),
        "only v=1": (b"DKIM-Signature: v=1\r\n" + PLAIN, ["neutral"]),
        "huge t=": (sig.replace(b"d=example.com;", b"d=example.com; t=" + b"9" * 5000 + b";") + PLAIN,
                    ["neutral"]),
        "8-bit d=": (sig.replace(b"d=example.com", "d=exämple.com".encode()) + PLAIN, ["neutral"]),
        "300-char d=": (sig.replace(b"d=example.com", b"d=" + b"a." * 150 + b"com") + PLAIN, ["neutral"]),
        "NUL in signature": (sig.replace(b"s=s1", b"s=s\x001") + PLAIN, ["neutral"]),
        "line that is not a header": (sig + b"this is not a header\r\n" + PLAIN, ["permerror"]),
        "starts with continuation": (b" folded\r\n" + sig + PLAIN, ["permerror"]),
        "bare CRs": (signed["good"].replace(b"\r\n", b"\r"), ["neutral"]),
        "lone CR in body": (signed["good"] + b"a\rb\r\n", ["fail"]),
    }


HOSTILE_NAMES = ["empty", "random bytes", "random bytes after a signature", "binary body",
                 "no header/body separator", "only a signature", "2 MB header", "1000 signatures",
                 "100k tags", "50k h= entries",
                 "empty signature", "only v=1", "huge t=", "8-bit d=", "300-char d=", "NUL in signature",
                 "line that is not a header", "starts with continuation", "bare CRs", "lone CR in body"]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_hostile_message_gets_result_words_and_reasons(signed, zone, name):
    data, expected = _hostile(signed)[name]
    report = verify(data, zone)
    assert report.internal_error is None  # a bug of ours would still be a result word and a reason
    for result in report.results:
        assert result.result in RESULT_WORDS and result.reason
    if expected is not None:
        assert [r.result for r in report.results] == expected, [r.reason for r in report.results]


def test_message_format_error_is_given_as_the_reason(signed, zone):
    data, _ = _hostile(signed)["line that is not a header"]
    result = only(verify(data, zone))
    assert result.reason.startswith("message format: header line 'this is not a header'")


def test_message_over_max_message_size_is_not_verified(signed, zone):
    report = verify(signed["good"], zone, max_message_size=100)
    result = only(report)
    assert result.result == "neutral" and result.reason.startswith("not verified: the message is")
    assert "over MaxMessageSize 100" in report.unverified_reason


def test_internal_error_costs_one_signature_not_the_message(signed, zone):
    class BrokenResolver:
        def txt(self, name):
            raise RuntimeError("resolver bug")

    report = Verifier(settings(), BrokenResolver(), clock=lambda: NOW).verify(signed["good"])
    result = only(report)
    assert (result.result, result.reason) == ("permerror", "internal error: RuntimeError: resolver bug")
    assert report.internal_error == "internal error: RuntimeError: resolver bug"


def test_a_clean_report_has_no_internal_error(signed, zone):
    assert Verifier(settings(), ZoneResolver(zone), clock=lambda: NOW).verify(signed["good"]).internal_error is None


# --- keys are parsed once ------------------------------------------------------

def test_key_records_are_parsed_once_per_selector_domain_and_text(signed, zone):
    verifier = Verifier(settings(), ZoneResolver(zone), clock=lambda: NOW)
    verifier.verify(signed["good"])
    first = verifier.keys.parse("s1", "example.com", ZoneResolver(zone).txt("s1._domainkey.example.com")[0])
    verifier.verify(signed["good"])
    assert verifier.keys.parse("s1", "example.com",
                               ZoneResolver(zone).txt("s1._domainkey.example.com")[0]) is first
