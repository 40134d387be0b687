"""Authentication-Results: what we write reads back as written (by us and by authres); forged ones go."""
import random
import re

import authres
import authres.arc
import authres.dkim_adsp
import authres.dkim_b
import pytest
from conftest import message

from salmon_dkim.core.authres import (Clause, Property, auth_clause, authserv_id_of, header_for, parse,
                                      remove_ours, write)
from salmon_dkim.core.results import SignatureResult, VerificationReport

PEER = authres.FeatureContext(authres.dkim_b, authres.dkim_adsp, authres.arc)


def peer_parse(header: str):
    """authres, an independent reader, on one header."""
    return PEER.parse(re.sub(r"\r?\n(?=[ \t])", "", header).rstrip("\r\n"))

ID = "mx.example.net"


def sig(result, domain="example.com", selector="s1", algorithm="rsa-sha256", b="AbCd+/12", reason="why",
        testing=False):
    return SignatureResult("dkim", domain, selector, algorithm, result, reason, b, None, testing, 2048)


def header(*results, **fields) -> str:
    return header_for(ID, VerificationReport(tuple(results), **fields)).decode("ascii")


def test_pass_header_names_domain_selector_algorithm_and_b():
    written = header(sig("pass"))
    assert written.replace("\r\n ", " ") == (
        "Authentication-Results: mx.example.net; dkim=pass header.d=example.com"
        ' header.s=s1 header.a=rsa-sha256 header.b="AbCd+/12"\r\n')


def test_authres_reads_back_one_result_per_signature():
    written = header(sig("pass"), sig("fail", "example.org", "s2048", reason='body hash "mismatch"'),
                        sig("temperror", reason="timeout"))
    parsed = peer_parse(written)
    assert parsed.authserv_id == ID
    assert [(r.method, r.result) for r in parsed.results] == [
        ("dkim", "pass"), ("dkim", "fail"), ("dkim", "temperror")]
    assert "mismatch" in parsed.results[1].reason  # authres keeps the quoted-pairs; we read them back:
    assert parse(written)[1][1].reason == 'body hash "mismatch"'
    props = {(p.type, p.name): p.value for p in parsed.results[1].properties}
    assert props == {("header", "d"): "example.org", ("header", "s"): "s2048", ("header", "a"): "rsa-sha256",
                     ("header", "b"): "AbCd+/12"}


def test_unsigned_message_is_dkim_none():
    parsed = peer_parse(header())
    assert [(r.method, r.result) for r in parsed.results] == [("dkim", "none")]


def test_unverified_message_says_why_in_the_reason():
    parsed = peer_parse(header(unverified_reason="not verified: too big"))
    assert (parsed.results[0].result, parsed.results[0].reason) == ("none", "not verified: too big")


def test_adsp_result_uses_the_rfc_5617_method_name():
    from salmon_dkim.core.message import authors
    parsed = peer_parse(header(sig("fail"), authors=authors([b"a@example.com"]), adsp="discard",
                               adsp_reason="dkim=discardable"))
    adsp = parsed.results[-1]
    assert (adsp.method, adsp.result, adsp.header_from) == ("dkim-adsp", "discard", "example.com")


def test_testing_key_is_a_comment_on_the_result():
    assert "dkim=pass (test mode key)" in header(sig("pass", testing=True))


def test_domainkeys_result_uses_its_own_method():
    result = SignatureResult("domainkeys", "example.com", "s1", "rsa-sha1", "neutral", "not verified", "AAAA")
    parsed = peer_parse(header(result))
    assert (parsed.results[0].method, parsed.results[0].result) == ("domainkeys", "neutral")


def test_long_header_is_folded_under_78_characters_per_line():
    results = [sig("fail", f"sub{i}.a-rather-long-domain-name.example.com",
                   reason="signature mismatch: " + "x " * 60) for i in range(6)]
    written = header(*results)
    lines = written[:-2].split("\r\n")
    assert all(len(line) <= 78 for line in lines), max(lines, key=len)
    assert all(line.startswith(" ") for line in lines[1:])
    assert len(peer_parse(written).results) == 6


def test_unprintable_and_hostile_values_do_not_break_the_header():
    written = header(sig("neutral", domain="ex ample;com", selector="s\x01", b="",
                            reason="a\r\nb; c=d \x00"))
    assert "\r\n" not in written[:-2].replace("\r\n ", "")
    parsed = peer_parse(written)
    assert [(r.method, r.result) for r in parsed.results] == [("dkim", "neutral")]


HOSTILE = ['a;b@x.example', 'x"; arc=pass', "back\\slash", "semi;colon=x", "(paren)", "\r\nX-Inject: 1",
           "caf\u00e9", "@example.com", "alice@example.com", "", " ", "\x00\x7f", "a" * 300, "=?utf-8?q?x?="]


@pytest.mark.parametrize("text", HOSTILE)
def test_every_value_is_a_token_an_address_or_a_quoted_string(text):
    clause = Clause("dkim", "fail", text, None, (Property("header", "i", text or "x"), Property("header", "d", text or "y")))
    written = write(ID, [clause, Clause("arc", "none")]).decode("ascii")
    assert written.count("\r\n") == written.count("\r\n ") + 1  # one field, folded only
    server, clauses = parse(written)
    assert server == ID and [c.method for c in clauses] == ["dkim", "arc"]
    peer = peer_parse(written)
    assert [(r.method, r.result) for r in peer.results] == [("dkim", "fail"), ("arc", "none")]


def test_what_we_write_we_read_back_as_written():
    rng = random.Random(8601)
    alphabet = "ab.-@;=\"\\()/ \t\r\n\u00e9"
    for _ in range(2000):
        def text():
            return "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 20)))
        clauses = [Clause(rng.choice(["dkim", "spf", "dmarc", "arc"]), rng.choice(["pass", "fail", "none"]),
                          rng.choice([None, text()]), rng.choice([None, "test mode key"]),
                          tuple(Property("header", rng.choice(["d", "i", "from"]), text())
                                for _ in range(rng.randint(0, 3))))
                   for _ in range(rng.randint(1, 4))]
        server, read = parse(write(ID, clauses))
        expected = [Clause(c.method, c.result, printable_reason(c.reason), c.comment,
                           tuple(Property(p.ptype, p.name, printable_value(p.value)) for p in c.properties))
                    for c in clauses]
        assert (server, read) == (ID, expected)


def printable_reason(text):
    return None if not text else re.sub(r"[^\x20-\x7e]", "?", text[:120])


def printable_value(text):
    return re.sub(r"[^\x20-\x7e]", "?", text)


def test_authenticated_session_is_reported_with_its_user():
    written = write(ID, [auth_clause("alice;x@example.com")]).decode("ascii")
    assert 'auth=pass smtp.auth="alice;x@example.com"' in written
    assert parse(written)[1][0].prop("smtp", "auth") == "alice;x@example.com"


# --- removing forged headers -----------------------------------------------------

FORGED = (b"Authentication-Results: MX.Example.NET; dkim=pass header.d=bank.example\r\n"
          b"Received: from x by y\r\n"
          b"Authentication-Results: other.example; dkim=fail\r\n"
          b"Authentication-Results: (comment) mx.example.net;\r\n\tdkim=pass\r\n"
          b"Authentication-Results: mx.example.net.evil; dkim=pass\r\n"
          b"authentication-results:mx.example.net;dkim=pass\r\n")


def test_remove_ours_drops_only_headers_with_our_id_case_insensitively():
    data = FORGED + message("plain.eml")
    kept = remove_ours(data, ID)
    assert kept == (b"Received: from x by y\r\n"
                    b"Authentication-Results: other.example; dkim=fail\r\n"
                    b"Authentication-Results: mx.example.net.evil; dkim=pass\r\n" + message("plain.eml"))


@pytest.mark.parametrize("forged", [
    b"Authentication-Results: (a (nested) comment) mx.example.net; dkim=pass\r\n",
    b'Authentication-Results: "mx.example.net"; dkim=pass\r\n',
    b'Authentication-Results: (x\\) still a comment) MX.example.net 1; dkim=pass\r\n',
    b"Authentication-Results: (" + b"(" * 20000 + b") mx.example.net; dkim=pass\r\n",
    b"Authentication-Results: =?utf-8?q?mx.example.net?=; dkim=pass\r\n",
    b"Authentication-Results: =?us-ascii?b?bXguZXhhbXBsZS5uZXQ=?=; dkim=pass\r\n",
    b"Authentication-Results: mx.example.net.; dkim=pass\r\n",
    b"Authentication-Results: ((((\r\n",
    b"X-Innocent: x\rAuthentication-Results: mx.example.net; dkim=pass\r\n",
    b"X-Innocent: x\nAuthentication-Results: mx.example.net; dkim=pass\r\n",
    b"X-Innocent: x\r\n folded\rauthentication-results :mx.example.net; arc=pass\r\n",
])
def test_remove_ours_sees_our_id_behind_nested_comments_and_quotes(forged):
    kept = remove_ours(forged + message("plain.eml"), ID)
    assert kept.endswith(message("plain.eml")) and b"mx.example.net" not in kept.lower()


def test_remove_ours_leaves_the_body_alone():
    data = message("plain.eml") + b"Authentication-Results: mx.example.net; dkim=pass\r\n"
    assert remove_ours(data, ID) == data


def test_remove_ours_works_on_lf_only_messages():
    data = FORGED.replace(b"\r\n", b"\n") + message("lf-only.eml")
    assert remove_ours(data, ID).startswith(b"Received: from x by y\nAuthentication-Results: other.example")


@pytest.mark.parametrize("data", [
    b"", b"\r\n\r\nbody", b"Authentication-Results:\r\n\r\n", b"X-Note: a\rb\r\n\r\n",
    b"\x00\xff garbage without a colon\r\n\r\n", b" continuation first\r\n\r\n", b"no separator at all",
])
def test_remove_ours_is_robust_to_garbage(data):
    assert remove_ours(data, ID) == data


def test_remove_ours_drops_the_last_header_without_leaving_an_extra_blank_line():
    data = b"Subject: x\r\nAuthentication-Results: mx.example.net; none\r\n\r\nbody\r\n"
    assert remove_ours(data, ID) == b"Subject: x\r\n\r\nbody\r\n"


def test_score_header_goes_also_when_hidden_behind_a_bare_cr():
    data = b"X-DKIM-Score: -5\r\nX-Innocent: x\rX-DKIM-Score: -5\r\nSubject: s\r\n\r\nbody\r\n"
    assert remove_ours(data, ID, ["X-DKIM-Score"]) == b"Subject: s\r\n\r\nbody\r\n"


def test_authserv_id_is_read_as_a_mail_reader_sees_it():
    assert authserv_id_of(b" (comment) MX.Example.NET.; dkim=pass") == "mx.example.net"
    assert authserv_id_of(b" =?utf-8?q?mx=2Eexample=2Enet?=; x") == "mx.example.net"
    assert authserv_id_of(b"") == ""
    assert authserv_id_of(b" (unclosed") is None
