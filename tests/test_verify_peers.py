"""Interoperability: what Mail::DKIM and OpenDKIM sign we verify, and we agree with their verdicts.

Also the DNS results over a real server: temperror from a nameserver that
never answers and from SERVFAIL, permerror from NXDOMAIN, pass over live DNS.
"""
import pytest
from conftest import KEYS, MESSAGES
from dnsserver import SERVFAIL_DOMAIN
from peers import (crlf, have_mail_dkim, have_opendkim, mail_dkim_sign, mail_dkim_verify_many,
                   opendkim_results, opendkim_sign)

from salmon_dkim.config import Settings
from salmon_dkim.dns.resolver import ZoneResolver
from salmon_dkim.core.verifier import Verifier

ZONE = KEYS / "keys.zone"
MESSAGE_NAMES = sorted(p.name for p in MESSAGES.glob("*.eml"))
needs_mail_dkim = pytest.mark.skipif(not have_mail_dkim(), reason="Mail::DKIM is not installed")
needs_opendkim = pytest.mark.skipif(not have_opendkim(), reason="opendkim is not installed")


def verify(data: bytes, resolver=None):
    return Verifier(Settings(), resolver or ZoneResolver(ZONE)).verify(data)


def tamper_body(data: bytes) -> bytes:
    head, _, body = data.partition(b"\r\n\r\n")
    return head + b"\r\n\r\n" + body + b"P.S. added in transit\r\n"


def tamper_subject(data: bytes) -> bytes:
    return data.replace(b"\r\nSubject: ", b"\r\nSubject: [changed] ", 1)


@pytest.fixture(scope="module")
def mail_dkim_signed():
    """Every test message signed by Mail::DKIM, relaxed and simple."""
    return {(name, canon): mail_dkim_sign((MESSAGES / name).read_bytes(), "example.com", "s1",
                                          KEYS / "example.com.rsa2048.key", canon)
            for name in MESSAGE_NAMES for canon in ("relaxed/relaxed", "simple/simple")}


@pytest.fixture(scope="module")
def opendkim_signed():
    """Every test message signed by OpenDKIM with RSA and with Ed25519 (RFC 8463)."""
    keys = {"rsa": ("s1", "example.com.rsa2048.key"), "ed25519": ("ed1", "example.com.ed25519.key")}
    return {(name, kind): opendkim_sign((MESSAGES / name).read_bytes(), "example.com", sel, KEYS / key,
                                        "relaxed/simple")
            for name in MESSAGE_NAMES for kind, (sel, key) in keys.items()}


@needs_mail_dkim
def test_mail_dkim_signatures_pass(mail_dkim_signed):
    for key, data in mail_dkim_signed.items():
        assert [r.result for r in verify(data).results] == ["pass"], key


@needs_mail_dkim
def test_tampered_mail_dkim_messages_fail(mail_dkim_signed):
    for key, data in mail_dkim_signed.items():
        for tampered, why in ((tamper_body(data), "body hash mismatch"),
                              (tamper_subject(data), "signature mismatch")):
            [result] = verify(tampered).results
            assert result.result == "fail" and why in result.reason, key


@needs_mail_dkim
def test_we_agree_with_mail_dkim(mail_dkim_signed):
    messages = []
    for data in mail_dkim_signed.values():
        messages += [data, tamper_body(data), tamper_subject(data)]
    theirs = mail_dkim_verify_many(messages, ZONE)
    for data, peer in zip(messages, theirs):
        assert [r.result for r in verify(data).results] == [p.result for p in peer]


@needs_opendkim
@pytest.mark.parametrize("kind, algorithm", [("rsa", "rsa-sha256"), ("ed25519", "ed25519-sha256")])
def test_opendkim_signatures_pass(opendkim_signed, kind, algorithm):
    for (name, k), data in opendkim_signed.items():
        if k == kind:
            [result] = verify(data).results
            assert (result.result, result.algorithm) == ("pass", algorithm), (name, result.reason)


@needs_opendkim
def test_tampered_opendkim_messages_fail_and_opendkim_agrees(opendkim_signed):
    data = opendkim_signed[("plain.eml", "ed25519")]
    for tampered in (tamper_body(data), tamper_subject(data)):
        assert [r.result for r in verify(tampered).results] == ["fail"]
        assert [r.result for r in opendkim_results(tampered, ZONE)] == ["fail"]


@needs_opendkim
def test_dual_rsa_and_ed25519_signatures_each_pass(opendkim_signed):
    rsa = opendkim_signed[("multipart.eml", "rsa")]
    ed = opendkim_signed[("multipart.eml", "ed25519")]
    data = ed.split(b"\r\nFrom:", 1)[0] + b"\r\n" + rsa
    assert [(r.algorithm, r.result) for r in verify(data).results] == [
        ("ed25519-sha256", "pass"), ("rsa-sha256", "pass")]


@needs_opendkim
def test_ed25519_signature_with_the_wrong_key_length_in_b_fails(opendkim_signed):
    data = opendkim_signed[("plain.eml", "ed25519")]
    head, _, rest = data.partition(b"b=")
    [result] = verify(head + b"b=AAAA" + rest).results
    assert (result.result, result.reason) == ("fail", "b= is 67 bytes; an Ed25519 signature is 64")


# --- live DNS ------------------------------------------------------------------

@needs_opendkim
def test_pass_over_live_dns(opendkim_signed, keys_dns_server):  # noqa: F811
    resolver = keys_dns_server.resolver(timeout=2)
    assert [r.result for r in verify(opendkim_signed[("plain.eml", "rsa")], resolver).results] == ["pass"]


@needs_opendkim
def test_nxdomain_over_live_dns_is_permerror(opendkim_signed, keys_dns_server):  # noqa: F811
    data = opendkim_signed[("plain.eml", "rsa")].replace(b"s=s1;", b"s=gone;", 1)
    [result] = verify(data, keys_dns_server.resolver(timeout=2)).results
    assert result.result == "permerror" and "no key published at gone._domainkey.example.com" in result.reason


@needs_opendkim
def test_nameserver_that_never_answers_gives_temperror(opendkim_signed, black_hole):  # noqa: F811
    [result] = verify(opendkim_signed[("plain.eml", "rsa")], black_hole.resolver(timeout=0.3)).results
    assert result.result == "temperror" and result.reason.startswith(
        "key lookup s1._domainkey.example.com failed temporarily")


@needs_mail_dkim
def test_servfail_gives_temperror(keys_dns_server):  # noqa: F811
    data = mail_dkim_sign(crlf((MESSAGES / "plain.eml").read_bytes()), SERVFAIL_DOMAIN, "key",
                          KEYS / "example.com.rsa2048.key")
    [result] = verify(data, keys_dns_server.resolver(timeout=2)).results
    assert (result.result, result.domain) == ("temperror", SERVFAIL_DOMAIN)
