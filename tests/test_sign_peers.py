"""What we sign verifies with Mail::DKIM and OpenDKIM; a changed header or body byte does not.

Every message in tests/data/messages is dual-signed (RSA-2048 s1, Ed25519
ed1) with each canonicalization.  Mail::DKIM (RSA only in Debian 12) checks
them all in one perl run; OpenDKIM checks both signatures of each.
"""
from types import MappingProxyType

import pytest
from conftest import KEYS, MESSAGES, message, private_copy
from peers import (have_mail_dkim, have_opendkim, mail_dkim_sign, mail_dkim_verify_many, opendkim_results,
                   opendkim_sign)

from salmon_dkim.activity import ActivityLog
from salmon_dkim.core.message import to_crlf
from salmon_dkim.config import DomainKeys, Settings, SigningSettings
from salmon_dkim.core.signer import Signer

pytestmark = [pytest.mark.skipif(not have_mail_dkim(), reason="libmail-dkim-perl not installed"),
              pytest.mark.skipif(not have_opendkim(), reason="opendkim not installed")]

ZONE = KEYS / "keys.zone"
MESSAGE_NAMES = sorted(p.name for p in MESSAGES.glob("*.eml"))
CANONS = ["relaxed/relaxed", "relaxed/simple", "simple/relaxed", "simple/simple"]
CASES = [(name, c) for name in MESSAGE_NAMES for c in CANONS]


def example_com_keys(keys_dir):
    private_copy(KEYS / "example.com.rsa2048.key", keys_dir / "example.com/s1.key")
    private_copy(KEYS / "example.com.ed25519.key", keys_dir / "example.com/ed1.key")
    return keys_dir


def dual_signer(keys_dir, canon: str, **options) -> Signer:
    header, body = canon.split("/")
    files = (keys_dir / "example.com/s1.key", keys_dir / "example.com/ed1.key")
    entry = DomainKeys("example.com", ("s1", "ed1"), files)
    signing = SigningSettings(keys_dir=keys_dir, domains=MappingProxyType({"example.com": entry}),
                              header_canon=header, body_canon=body, **options)
    return Signer(Settings(signing=signing), activity=ActivityLog(None))


@pytest.fixture(scope="module")
def signed(tmp_path_factory) -> dict:
    """{(message name, canonicalization): signed bytes}."""
    keys_dir = example_com_keys(tmp_path_factory.mktemp("keys"))
    signers = {c: dual_signer(keys_dir, c) for c in CANONS}
    return {(name, c): signers[c].sign(message(name)).message for name, c in CASES}


@pytest.fixture(scope="module")
def mail_dkim(signed) -> dict:
    """Mail::DKIM's results for every signed message and two tampered ones, from one perl run."""
    cases = list(signed)
    tampered = {"header": tamper_header(signed[("plain.eml", "relaxed/relaxed")]),
                "body": tamper_body(signed[("plain.eml", "simple/simple")])}
    results = mail_dkim_verify_many([signed[c] for c in cases] + list(tampered.values()), ZONE)
    return dict(zip(cases + list(tampered), results))


def tamper_header(signed: bytes) -> bytes:
    return signed.replace(b"Subject: Lunch on Friday", b"Subject: Lunch on Monday", 1)


def tamper_body(signed: bytes) -> bytes:
    return signed.replace(b"meet at noon", b"meet at nooN", 1)


@pytest.mark.parametrize("name, canon", CASES)
def test_mail_dkim_passes_our_rsa_signature(mail_dkim, name, canon):
    by_algorithm = {r.algorithm: r.result for r in mail_dkim[(name, canon)]}
    assert by_algorithm["rsa-sha256"] == "pass", mail_dkim[(name, canon)]


@pytest.mark.parametrize("name, canon", CASES)
def test_opendkim_passes_our_rsa_and_ed25519_signatures(signed, name, canon):
    results = {(r.selector, r.algorithm): r.result for r in opendkim_results(signed[(name, canon)], ZONE)}
    assert results == {("ed1", "ed25519-sha256"): "pass", ("s1", "rsa-sha256"): "pass"}


@pytest.mark.parametrize("name", MESSAGE_NAMES)
def test_message_below_the_signatures_is_the_input_with_crlf(signed, name):
    original = to_crlf(message(name))
    out = signed[(name, "relaxed/relaxed")]
    assert out.endswith(original)
    top = out[:len(out) - len(original)]
    assert top.startswith(b"DKIM-Signature:") and top.count(b"\r\nDKIM-Signature:") == 1
    assert all(len(line) < 78 for line in top.split(b"\r\n"))


def test_changed_signed_header_fails_with_mail_dkim(mail_dkim):
    assert [r.result for r in mail_dkim["header"] if r.algorithm == "rsa-sha256"] == ["fail"]


def test_changed_body_byte_fails_with_mail_dkim(mail_dkim):
    assert [r.result for r in mail_dkim["body"] if r.algorithm == "rsa-sha256"] == ["fail"]


@pytest.mark.parametrize("tamper", [tamper_header, tamper_body])
def test_changed_signed_message_fails_with_opendkim(signed, tamper):
    results = opendkim_results(tamper(signed[("plain.eml", "relaxed/relaxed")]), ZONE)
    assert [r.result for r in results] == ["fail", "fail"]


# --- the peers' own signing, which the verifier's tests rely on -------------------------------------

@pytest.fixture(scope="module")
def peer_keys(tmp_path_factory):
    folder = tmp_path_factory.mktemp("peer-keys")
    return {"s1": private_copy(KEYS / "example.com.rsa2048.key", folder / "s1.key"),
            "ed1": private_copy(KEYS / "example.com.ed25519.key", folder / "ed1.key")}


def test_each_peer_passes_the_other_peers_rsa_signature(peer_keys):
    key = peer_keys["s1"]
    by_opendkim = opendkim_sign(message("utf8-folded.eml"), "example.com", "s1", key, "simple/simple")
    by_mail_dkim = mail_dkim_sign(message("multipart.eml"), "example.com", "s1", key, "relaxed/simple")
    assert [r.result for r in mail_dkim_verify_many([by_opendkim], ZONE)[0]] == ["pass"]
    assert [r.result for r in opendkim_results(by_mail_dkim, ZONE)] == ["pass"]


def test_opendkim_signs_ed25519_with_relaxed_headers(peer_keys):
    # OpenDKIM 2.11's own ed25519 signatures with simple header canonicalization do not verify anywhere
    signed = opendkim_sign(message("plain.eml"), "example.com", "ed1", peer_keys["ed1"], "relaxed/simple")
    assert signed.startswith(b"DKIM-Signature: v=1; a=ed25519-sha256;")
    assert [r.result for r in opendkim_results(signed, ZONE)] == ["pass"]


def test_signature_added_on_top_of_another_domains_signature_keeps_both_valid(peer_keys, tmp_path):
    org_key = private_copy(KEYS / "example.org.rsa2048.key", tmp_path / "s2048.key")
    first = mail_dkim_sign(message("plain.eml"), "example.org", "s2048", org_key, "simple/simple")
    both = dual_signer(example_com_keys(tmp_path / "keys"), "relaxed/relaxed").sign(first).message
    assert both.endswith(first)
    results = {(r.domain, r.selector): r.result for r in opendkim_results(both, ZONE)}
    assert results == {("example.com", "s1"): "pass", ("example.com", "ed1"): "pass",
                       ("example.org", "s2048"): "pass"}


@pytest.mark.parametrize("canon", ["simple/simple", "relaxed/relaxed"])
def test_long_h_list_with_every_header_oversigned_verifies(canon, tmp_path):
    signer = dual_signer(example_com_keys(tmp_path / "keys"), canon, oversign_headers=SigningSettings().headers)
    extra = (b"Reply-To: a@example.com\r\nSender: s@example.com\r\nCc: c@example.net\r\n"
             b"In-Reply-To: <x@y>\r\nReferences: <x@y>\r\n  <z@y>\r\n")
    signed = signer.sign(extra + message("utf8-folded.eml")).message
    top = signed[:signed.index(b"\r\nReply-To:")]
    assert all(len(line) < 78 for line in top.split(b"\r\n"))
    assert [r.result for r in opendkim_results(signed, ZONE)] == ["pass", "pass"]
