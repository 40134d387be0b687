"""Authentication-Results: what we write authres reads back; forged headers with our id go."""
import pytest
from conftest import message

from salmon_dkim.core.authres import add_header_on_top, authentication_results, fold, parse, remove_ours
from salmon_dkim.core.verifier import SignatureResult, VerificationReport

ID = "mx.example.net"


def sig(result, domain="example.com", selector="s1", algorithm="rsa-sha256", b="AbCd+/12", reason="why",
        testing=False):
    return SignatureResult("dkim", domain, selector, algorithm, result, reason, b, None, testing, 2048)


def header_for(*results, **fields):
    return authentication_results(ID, VerificationReport(tuple(results), **fields))


def test_pass_header_names_domain_selector_algorithm_and_b():
    header = header_for(sig("pass"))
    assert header.replace("\r\n ", " ") == (
        "Authentication-Results: mx.example.net; dkim=pass header.d=example.com"
        ' header.s=s1 header.a=rsa-sha256 header.b="AbCd+/12"\r\n')


def test_authres_reads_back_one_result_per_signature():
    header = header_for(sig("pass"), sig("fail", "example.org", "s2048", reason='body hash "mismatch"'),
                        sig("temperror", reason="timeout"))
    parsed = parse(header)
    assert parsed.authserv_id == ID
    assert [(r.method, r.result) for r in parsed.results] == [
        ("dkim", "pass"), ("dkim", "fail"), ("dkim", "temperror")]
    assert parsed.results[1].reason == "body hash 'mismatch'"
    props = {(p.type, p.name): p.value for p in parsed.results[1].properties}
    assert props == {("header", "d"): "example.org", ("header", "s"): "s2048", ("header", "a"): "rsa-sha256",
                     ("header", "b"): "AbCd+/12"}


def test_unsigned_message_is_dkim_none():
    parsed = parse(header_for())
    assert [(r.method, r.result) for r in parsed.results] == [("dkim", "none")]


def test_unverified_message_says_why_in_the_reason():
    parsed = parse(header_for(unverified_reason="not verified: too big"))
    assert (parsed.results[0].result, parsed.results[0].reason) == ("none", "not verified: too big")


def test_adsp_result_uses_the_rfc_5617_method_name():
    parsed = parse(header_for(sig("fail"), author_domain="example.com", adsp="discard",
                              adsp_reason="dkim=discardable"))
    adsp = parsed.results[-1]
    assert (adsp.method, adsp.result, adsp.header_from) == ("dkim-adsp", "discard", "example.com")


def test_testing_key_is_a_comment_on_the_result():
    assert "dkim=pass (test mode key)" in header_for(sig("pass", testing=True))


def test_domainkeys_result_uses_its_own_method():
    result = SignatureResult("domainkeys", "example.com", "s1", "rsa-sha1", "neutral", "not verified", "AAAA")
    parsed = parse(header_for(result))
    assert (parsed.results[0].method, parsed.results[0].result) == ("domainkeys", "neutral")


def test_long_header_is_folded_under_78_characters_per_line():
    results = [sig("fail", f"sub{i}.a-rather-long-domain-name.example.com",
                   reason="signature mismatch: " + "x " * 60) for i in range(6)]
    header = header_for(*results)
    lines = header[:-2].split("\r\n")
    assert all(len(line) <= 78 for line in lines), max(lines, key=len)
    assert all(line.startswith(" ") for line in lines[1:])
    assert len(parse(header).results) == 6


def test_unprintable_and_hostile_values_do_not_break_the_header():
    header = header_for(sig("neutral", domain="ex ample;com", selector="s\x01", b="",
                            reason="a\r\nb; c=d \x00"))
    assert "\r\n" not in header[:-2].replace("\r\n ", "")
    parsed = parse(header)
    assert [(r.method, r.result) for r in parsed.results] == [("dkim", "neutral")]


def test_fold_keeps_the_unfolded_text():
    line = "word " * 40
    assert fold(line).replace("\r\n", "") == line


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
])
def test_remove_ours_sees_our_id_behind_nested_comments_and_quotes(forged):
    assert remove_ours(forged + message("plain.eml"), ID) == message("plain.eml")


def test_remove_ours_leaves_the_body_alone():
    data = message("plain.eml") + b"Authentication-Results: mx.example.net; dkim=pass\r\n"
    assert remove_ours(data, ID) == data


def test_remove_ours_works_on_lf_only_messages():
    data = FORGED.replace(b"\r\n", b"\n") + message("lf-only.eml")
    assert remove_ours(data, ID).startswith(b"Received: from x by y\nAuthentication-Results: other.example")


@pytest.mark.parametrize("data", [
    b"", b"\r\n\r\nbody", b"Authentication-Results:\r\n\r\n", b"Authentication-Results: ((((\r\n\r\n",
    b"\x00\xff garbage without a colon\r\n\r\n", b" continuation first\r\n\r\n", b"no separator at all",
])
def test_remove_ours_is_robust_to_garbage(data):
    assert remove_ours(data, ID) == data


def test_remove_ours_drops_the_last_header_without_leaving_an_extra_blank_line():
    data = b"Subject: x\r\nAuthentication-Results: mx.example.net; none\r\n\r\nbody\r\n"
    assert remove_ours(data, ID) == b"Subject: x\r\n\r\nbody\r\n"


def test_header_goes_on_top_in_the_message_line_ending_style():
    header = header_for(sig("pass"))
    crlf_message, lf_message = b"Subject: x\r\n\r\nbody\r\n", b"Subject: x\n\nbody\n"
    assert add_header_on_top(crlf_message, header) == header.encode() + crlf_message
    assert add_header_on_top(lf_message, header) == header.replace("\r\n", "\n").encode() + lf_message
