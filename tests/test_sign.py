"""Signer: which key signs which message, what the signature says, and when nothing is signed."""
import json
import os
import time
from types import MappingProxyType

import pytest
from conftest import KEYS, message, private_copy
from cryptography.hazmat.primitives.asymmetric import ec
from peers import have_opendkim, opendkim_results

from salmon_dkim.activity import ActivityLog, read_activity
from salmon_dkim.core.message import Message
from salmon_dkim.core.tags import parse_tags
from salmon_dkim.config import DomainKeys, Settings, SigningSettings
from salmon_dkim.core.keys import KeyStore, PrivateKey, load_private_key
from salmon_dkim.core.dkim import dkim_sign
from salmon_dkim.core.signer import SigningError, Signer

ZONE = KEYS / "keys.zone"
NOW = int(time.time()) - 60  # near now: peers refuse signatures from the future
PLAIN = message("plain.eml")


def entry(keys_dir, domain, *selectors, subdomains=False) -> DomainKeys:
    return DomainKeys(domain, selectors, tuple(keys_dir / domain / f"{s}.key" for s in selectors),
                      subdomains)


def make_signer(keys_dir, tmp_path=None, *, domains=(), default=None, **options) -> Signer:
    signing = SigningSettings(keys_dir=keys_dir, domains=MappingProxyType({d.domain: d for d in domains}),
                              default=default, **options)
    log = ActivityLog(tmp_path / "activity.jsonl" if tmp_path else None)
    return Signer(Settings(signing=signing), activity=log, clock=lambda: NOW)


def from_(address: str, msg: bytes = PLAIN) -> bytes:
    return msg.replace(b"From: Alice Example <alice@example.com>", b"From: " + address.encode(), 1)


def signature_tags(signed: bytes) -> list:
    return [parse_tags(v) for v in Message(signed).values(b"dkim-signature")]


@pytest.fixture
def signer(keys_dir, tmp_path):
    """example.com signs with s1 (RSA); example.org's key is reachable by sender selector only."""
    return make_signer(keys_dir, tmp_path, domains=[entry(keys_dir, "example.com", "s1")])


# --- choosing the key ---------------------------------------------------------------------------

def test_author_domain_in_table_signs_with_its_key(signer):
    result = signer.sign(PLAIN)
    assert [(s.domain, s.selector, s.algorithm) for s in result.signatures] == \
        [("example.com", "s1", "rsa-sha256")]
    assert result.unsigned_reason is None


def test_author_domain_is_matched_case_insensitively(signer):
    assert signer.sign(from_("Alice@EXAMPLE.Com")).signatures[0].domain == "example.com"


def test_subdomain_signed_by_parent_entry_that_includes_subdomains(keys_dir):
    signer = make_signer(keys_dir, domains=[entry(keys_dir, "example.com", "s1", subdomains=True)])
    result = signer.sign(from_("alice@mail.eu.example.com"))
    assert result.signatures[0].domain == "example.com"


def test_subdomain_not_signed_by_parent_entry_without_include_subdomains(signer):
    result = signer.sign(from_("alice@mail.example.com"))
    assert result.signatures == () and "mail.example.com" in result.unsigned_reason


def test_exact_entry_wins_over_parent(keys_dir):
    sub = DomainKeys("sub.example.com", ("s2048",), (keys_dir / "example.org/s2048.key",))
    signer = make_signer(keys_dir, domains=[entry(keys_dir, "example.com", "s1", subdomains=True), sub])
    assert signer.sign(from_("a@sub.example.com")).signatures[0].domain == "sub.example.com"


def test_sender_selector_by_full_address(keys_dir):
    signer = make_signer(keys_dir, sender_selectors={"bob@example.org": "s2048"})
    result = signer.sign(from_("bob@example.org"), sender="Bob@example.org")
    assert [(s.domain, s.selector) for s in result.signatures] == [("example.org", "s2048")]


def test_sender_selector_by_domain_for_the_author_address(keys_dir):
    signer = make_signer(keys_dir, sender_selectors={"example.org": "s2048"})
    assert signer.sign(from_("carol@example.org")).signatures[0].selector == "s2048"


def test_sender_address_selector_comes_before_the_domain_table(keys_dir):
    signer = make_signer(keys_dir, domains=[entry(keys_dir, "example.com", "s1")],
                         sender_selectors={"alice@example.com": "big"})
    assert signer.sign(PLAIN, sender="alice@example.com").signatures[0].selector == "big"
    assert signer.sign(PLAIN, sender="bob@example.com").signatures[0].selector == "s1"


def test_domain_table_comes_before_a_sender_domain_selector(keys_dir):
    signer = make_signer(keys_dir, domains=[entry(keys_dir, "example.com", "s1")],
                         sender_selectors={"example.com": "big"})
    assert signer.sign(PLAIN, sender="alice@example.com").signatures[0].selector == "s1"


def test_check_keys_loads_sender_selector_keys_too(keys_dir):
    signer = make_signer(keys_dir, sender_selectors={"alice@example.com": "missing"})
    assert [p.split(":")[0] for p in signer.check_keys()] == ["example.com"]


def test_default_key_signs_other_domains_as_the_default_domain(keys_dir):
    signer = make_signer(keys_dir, default=entry(keys_dir, "example.org", "s2048"))
    result = signer.sign(from_("dave@customer.example.net"))
    assert [(s.domain, s.selector) for s in result.signatures] == [("example.org", "s2048")]
    assert signature_tags(result.message)[0][b"d"] == b"example.org"


def test_shared_signature_always_adds_the_default_key_below_the_domains_own(keys_dir, tmp_path):
    signer = make_signer(keys_dir, tmp_path, domains=[entry(keys_dir, "example.com", "s1")],
                         default=entry(keys_dir, "example.org", "s2048"), shared_signature="always")
    result = signer.sign(PLAIN)
    assert [(s.domain, s.selector) for s in result.signatures] == [("example.com", "s1"), ("example.org", "s2048")]
    assert [t[b"d"] for t in signature_tags(result.message)] == [b"example.com", b"example.org"]
    [logged] = read_activity(tmp_path / "activity.jsonl")
    assert (logged["d"], logged["s"], logged["shared_d"], logged["shared_s"]) == (
        "example.com", "s1", "example.org", "s2048")


def test_shared_signature_always_signs_the_default_domains_own_mail_once(keys_dir):
    signer = make_signer(keys_dir, domains=[entry(keys_dir, "example.com", "s1")],
                         default=entry(keys_dir, "example.com", "s1"), shared_signature="always")
    assert [(s.domain, s.selector) for s in signer.sign(PLAIN).signatures] == [("example.com", "s1")]


def test_a_disabled_domain_is_signed_by_the_default_key_or_not_at_all(keys_dir):
    disabled = DomainKeys("example.com", ("s1",), (keys_dir / "example.com/s1.key",), enabled=False)
    shared = make_signer(keys_dir, domains=[disabled], default=entry(keys_dir, "example.org", "s2048"))
    assert [s.domain for s in shared.sign(PLAIN).signatures] == ["example.org"]
    alone = make_signer(keys_dir, domains=[disabled]).sign(PLAIN)
    assert alone.signatures == () and alone.unsigned_reason == (
        "example.com does not sign ([Domains] [[example.com]] Enabled = No); no default key")


def test_forced_domain_signs_as_that_domain(keys_dir):
    signer = make_signer(keys_dir, domains=[entry(keys_dir, "example.com", "s1"),
                                            entry(keys_dir, "example.org", "s2048")])
    assert signer.sign(PLAIN, domain="example.org").signatures[0].domain == "example.org"


def test_no_key_leaves_message_unchanged_and_logs_why(keys_dir, tmp_path):
    signer = make_signer(keys_dir, tmp_path)
    result = signer.sign(PLAIN)
    assert result.message == PLAIN and result.signatures == ()
    assert "no signing key for example.com" in result.unsigned_reason
    [logged] = read_activity(tmp_path / "activity.jsonl")
    assert logged["event"] == "unsigned" and logged["message_id"] == "<lunch-1@example.com>"
    assert logged["reason"] == result.unsigned_reason


@pytest.mark.parametrize("skip, sender", [("carol@example.com", "carol@example.com"),
                                          ("@example.com", "dave@example.com"),
                                          ("example.com", "erin@Example.com")])
def test_skip_senders_are_not_signed(keys_dir, skip, sender):
    signer = make_signer(keys_dir, domains=[entry(keys_dir, "example.com", "s1")], skip_senders=(skip,))
    result = signer.sign(PLAIN, sender=sender)
    assert result.signatures == () and "SkipSenders" in result.unsigned_reason


def test_skip_senders_match_the_author_when_no_sender_given(keys_dir):
    signer = make_signer(keys_dir, domains=[entry(keys_dir, "example.com", "s1")],
                         skip_senders=("alice@example.com",))
    assert signer.sign(PLAIN).unsigned_reason == "author alice@example.com is in SkipSenders"


# --- when nothing is signed -----------------------------------------------------------------------

@pytest.mark.parametrize("msg, reason", [
    (PLAIN.replace(b"From: Alice Example <alice@example.com>\r\n", b""), "the message has no From field"),
    (b"From: bob@example.com\r\n" + PLAIN, "2 From fields"),
    (from_("alice@example.com, bob@example.com"), "the From field holds 2 addresses"),
    (from_("undisclosed-recipients:;"), "the From field holds no address"),
    (from_("(" * 5000), "the From field cannot be parsed"),
    (from_(" " * 300_000 + "alice@example.com"), "the From field cannot be parsed"),
    (b"From: alice@example.com\r\nthis is not a header\r\n\r\nbody\r\n", "malformed message"),
])
def test_unusable_author_or_message_is_left_unsigned(signer, msg, reason):
    result = signer.sign(msg)
    assert result.message == msg and reason in result.unsigned_reason


def test_signing_disabled(keys_dir):
    signer = make_signer(keys_dir, domains=[entry(keys_dir, "example.com", "s1")], enabled=False)
    assert "disabled" in signer.sign(PLAIN).unsigned_reason


def test_message_over_max_size(keys_dir):
    signer = make_signer(keys_dir, domains=[entry(keys_dir, "example.com", "s1")], max_message_size=100)
    assert "over MaxMessageSize (100)" in signer.sign(PLAIN).unsigned_reason


def test_group_readable_key_fails_closed(keys_dir, tmp_path):
    os.chmod(keys_dir / "example.com/s1.key", 0o640)
    signer = make_signer(keys_dir, tmp_path, domains=[entry(keys_dir, "example.com", "s1")])
    with pytest.raises(SigningError, match="chmod 600"):
        signer.sign(PLAIN)
    [logged] = read_activity(tmp_path / "activity.jsonl")
    assert logged["event"] == "unsigned" and logged["action"] == "tempfail" and "s1" in logged["reason"]


def test_key_under_1024_bits_fails_closed(keys_dir):
    private_copy(KEYS / "example.com.rsa512.key", keys_dir / "example.com/weak512.key")
    with pytest.raises(SigningError, match="1024-bit minimum"):
        make_signer(keys_dir, domains=[entry(keys_dir, "example.com", "weak512")]).sign(PLAIN)


def test_dual_signing_fails_closed_when_one_key_is_refused(keys_dir):
    os.chmod(keys_dir / "example.com/ed1.key", 0o644)
    with pytest.raises(SigningError, match="ed1"):
        make_signer(keys_dir, domains=[entry(keys_dir, "example.com", "s1", "ed1")]).sign(PLAIN)


@pytest.mark.parametrize("damage", ["chmod", "delete", "corrupt"])
def test_a_key_broken_while_running_fails_closed_and_other_domains_still_sign(keys_dir, damage):
    signer = make_signer(keys_dir, domains=[entry(keys_dir, "example.com", "s1"),
                                            entry(keys_dir, "example.org", "s2048")])
    signer.keys.recheck_seconds = 0
    assert signer.sign(PLAIN).signatures
    path = keys_dir / "example.com/s1.key"
    if damage == "chmod":
        os.chmod(path, 0o644)
    elif damage == "delete":
        path.unlink()
    else:
        path.write_bytes(b"-----BEGIN PRIVATE KEY-----\ngarbage\n-----END PRIVATE KEY-----\n")
    with pytest.raises(SigningError):
        signer.sign(PLAIN)
    assert signer.sign(from_("bob@example.org")).signatures[0].domain == "example.org"


# --- the signatures -------------------------------------------------------------------------------

def test_dual_signing_adds_rsa_and_ed25519_signatures(keys_dir, tmp_path):
    signer = make_signer(keys_dir, tmp_path, domains=[entry(keys_dir, "example.com", "s1", "ed1")])
    result = signer.sign(PLAIN)
    assert [s.algorithm for s in result.signatures] == ["rsa-sha256", "ed25519-sha256"]
    assert [t[b"a"] for t in signature_tags(result.message)] == [b"rsa-sha256", b"ed25519-sha256"]
    [logged] = read_activity(tmp_path / "activity.jsonl", event="sign")
    assert (logged["d"], logged["s"], logged["algorithm"]) == ("example.com", "s1,ed1",
                                                               "rsa-sha256,ed25519-sha256")
    assert logged["size"] == len(result.message) and "from" in logged["headers"]


def test_signed_headers_are_those_present_and_the_trusted_ones_oversigned(signer):
    [tags] = signature_tags(signer.sign(PLAIN).message)
    assert tags[b"h"].replace(b" ", b"").replace(b"\r\n", b"") == (
        b"from:from:date:date:subject:subject:reply-to:to:to:cc:message-id:message-id:in-reply-to:references:"
        b"content-type:content-type:mime-version:mime-version")


@pytest.mark.parametrize("field", [b"Subject: Urgent: wire the money", b"To: mallory@example.net",
                                   b"Date: Mon, 1 Jan 2029 00:00:00 +0000", b"Reply-To: mallory@example.net"])
def test_a_field_added_above_a_signature_made_by_default_breaks_it(signer, field, zone_file):
    from salmon_dkim.core.verifier import Verifier
    from salmon_dkim.dns.resolver import ZoneResolver
    tampered = field + b"\r\n" + signer.sign(PLAIN).message
    [result] = Verifier(Settings(), ZoneResolver(zone_file), clock=lambda: NOW).verify(tampered).results
    assert result.result == "fail"


def test_oversigned_header_absent_from_message_is_listed_once(keys_dir):
    signer = make_signer(keys_dir, domains=[entry(keys_dir, "example.com", "s1")],
                         headers=("from", "subject"), oversign_headers=("from", "reply-to"))
    assert signer.sign(PLAIN).signatures[0].headers == ("from", "from", "subject", "reply-to")


@pytest.mark.skipif(not have_opendkim(), reason="opendkim not installed")
def test_from_added_after_signing_breaks_the_signature(signer):
    signed = signer.sign(PLAIN).message
    assert [r.result for r in opendkim_results(signed, ZONE)] == ["pass"]
    forged = signed.replace(b"From: Alice", b"From: Mallory <ceo@example.com>\r\nFrom: Alice", 1)
    assert [r.result for r in opendkim_results(forged, ZONE)] == ["fail"]


def test_t_is_the_clock_and_x_adds_expire_seconds(keys_dir):
    signer = make_signer(keys_dir, domains=[entry(keys_dir, "example.com", "s1")], expire_seconds=3600)
    [tags] = signature_tags(signer.sign(PLAIN).message)
    assert (tags[b"t"], tags[b"x"]) == (str(NOW).encode(), str(NOW + 3600).encode())
    assert b"l" not in tags


def test_no_x_when_expiry_is_zero_and_l_when_asked_for(keys_dir):
    signer = make_signer(keys_dir, domains=[entry(keys_dir, "example.com", "s1")], expire_seconds=0,
                         body_length_tag=True)
    [tags] = signature_tags(signer.sign(PLAIN).message)
    assert b"x" not in tags and tags[b"l"] == b"76"


def test_canonicalization_from_settings(keys_dir):
    signer = make_signer(keys_dir, domains=[entry(keys_dir, "example.com", "s1")],
                         header_canon="simple", body_canon="relaxed")
    assert signature_tags(signer.sign(PLAIN).message)[0][b"c"] == b"simple/relaxed"


def test_lf_input_is_signed_as_crlf(signer):
    signed = signer.sign(message("lf-only.eml")).message
    assert b"\n" not in signed.replace(b"\r\n", b"")
    assert signed.endswith(message("lf-only.eml").replace(b"\n", b"\r\n"))


def test_signature_header_lines_are_under_78_columns(keys_dir):
    signer = make_signer(keys_dir, domains=[entry(keys_dir, "example.com", "big", "ed1")])
    signed = signer.sign(message("utf8-folded.eml")).message
    top = signed[:signed.index(b"\r\nFrom:")]
    assert all(len(line) < 78 for line in top.split(b"\r\n"))


def test_dkim_sign_returns_one_header_for_one_key(keys_dir):
    key = load_private_key(keys_dir / "example.com/ed1.key")
    header = dkim_sign(PLAIN, "example.com", "ed1", key, headers=("from", "subject"), oversign=(),
                       canon=("simple", "simple"), expire=60, now=NOW)
    tags = parse_tags(header.split(b":", 1)[1])
    assert header.startswith(b"DKIM-Signature: ") and header.endswith(b"\r\n")
    assert header.count(b"\r\n") == header.count(b"\r\n ") + 1
    assert tags[b"h"] == b"from:subject"
    assert (tags[b"t"], tags[b"x"]) == (str(NOW).encode(), str(NOW + 60).encode())


# --- internal failure -------------------------------------------------------------------------------

class WrongKindKeyStore(KeyStore):
    """Hands out an EC key labelled RSA: OpenSSL refuses to sign with it."""

    def get(self, path):
        return PrivateKey("rsa", ec.generate_private_key(ec.SECP256R1()), 2048, path)


def test_failure_inside_signing_raises_signing_error(keys_dir, tmp_path):
    settings = make_signer(keys_dir, domains=[entry(keys_dir, "example.com", "s1")]).settings
    signer = Signer(settings, keys=WrongKindKeyStore(), activity=ActivityLog(tmp_path / "a.jsonl"))
    with pytest.raises(SigningError, match="signing failed"):
        signer.sign(PLAIN)
    assert read_activity(tmp_path / "a.jsonl") == []


def test_activity_sign_line_holds_no_key_material(signer, tmp_path):
    signer.sign(PLAIN)
    signer.activity.flush()  # the log is written off the signing thread
    text = (tmp_path / "activity.jsonl").read_text()
    assert "PRIVATE" not in text and json.loads(text)["event"] == "sign"


def test_sender_in_angle_brackets_finds_its_selector_and_null_sender_is_no_sender(keys_dir):
    signer = make_signer(keys_dir, sender_selectors={"bob@example.org": "s2048"})
    assert signer.sign(from_("bob@example.org"), sender="<bob@example.org>").signatures[0].selector == "s2048"
    assert signer.sign(from_("bob@example.org"), sender="<>").signatures[0].selector == "s2048"


def test_check_keys_loads_every_configured_key_and_names_each_problem(keys_dir):
    os.chmod(keys_dir / "example.com/ed1.key", 0o644)
    signer = make_signer(keys_dir, domains=[entry(keys_dir, "example.com", "s1", "ed1")],
                         default=entry(keys_dir, "example.org", "s2048"))
    [problem] = signer.check_keys()
    assert problem.startswith("example.com: ") and "ed1.key" in problem and "chmod 600" in problem


@pytest.mark.parametrize("author, domain", [
    ("alice@example.com", "example.com"),
    ('"Doe, John" <john@example.com>', "example.com"),
    ("=?utf-8?q?J=C3=BCrgen?= <juergen@example.com>", "example.com"),
    ("alice@example.com (Alice at work)", "example.com"),
    ("Alice <alice@example.com> (comment)", "example.com"),
    ('"bob@example.org" <alice@example.com>', "example.com"),
])
def test_author_domain_is_read_from_each_from_form(keys_dir, author, domain):
    signer = make_signer(keys_dir, domains=[entry(keys_dir, "example.com", "s1")])
    assert signer.sign(from_(author)).signatures[0].domain == domain


def test_rotated_key_file_is_used_once_rechecked(keys_dir):
    signer = make_signer(keys_dir, domains=[entry(keys_dir, "example.com", "s1")])
    signer.keys.recheck_seconds = 0
    before = signer.sign(PLAIN)
    private_copy(KEYS / "example.com.rsa4096.key", keys_dir / "example.com/s1.key")
    after = signer.sign(PLAIN)
    assert len(signature_tags(after.message)[0][b"b"]) > len(signature_tags(before.message)[0][b"b"])


def test_h_list_memo_does_not_keep_messages_with_very_many_fields():
    from salmon_dkim.core.dkim import _h_list, signed_names
    fields = [(b"Received", b" x\r\n")] * 5000 + [(b"From", b" a@example.com\r\n")]
    before = _h_list.cache_info().currsize
    assert signed_names(fields, ("from", "received")) == ("from", "from") + ("received",) * 5000
    assert _h_list.cache_info().currsize == before
