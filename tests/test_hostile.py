"""Hostile shapes (issue 8): what the linear-time fixes must still get right, at sizes where a
quadratic or per-character loop would take minutes.  bench/hostile.py measures the times."""
import base64
import hashlib
import re
from dataclasses import replace
from types import MappingProxyType

import dkim
import pytest
from conftest import KEYS

from salmon_dkim.config import DomainKeys, Settings
from salmon_dkim.core import listmail
from salmon_dkim.core.arc import arc_result
from salmon_dkim.core.authres import authserv_id_of, remove_ours
from salmon_dkim.core.keys import KeyStore
from salmon_dkim.core.message import Message, MessageFormatError
from salmon_dkim.core.signer import Signer
from salmon_dkim.core.verifier import Verifier
from salmon_dkim.dns.resolver import ZoneResolver

ID = "mx.example.net"
HEAD = (b"From: Alice <alice@example.com>\r\nTo: bob@example.net\r\nSubject: hostile\r\n"
        b"Date: Mon, 23 Nov 2026 10:00:00 +0000\r\nMessage-ID: <hostile@example.com>\r\n")
RSA_KEY = (KEYS / "example.com.rsa2048.key").read_bytes()


@pytest.fixture
def resolver():
    return ZoneResolver(KEYS / "keys.zone")


@pytest.fixture
def signer(keys_dir):
    entry = DomainKeys("example.com", ("s1",), (keys_dir / "example.com/s1.key",))
    settings = Settings()
    return Signer(replace(settings, signing=replace(settings.signing, domains=MappingProxyType({"example.com": entry}))),
                  KeyStore())


def dkimpy_signed(message: bytes) -> bytes:
    return dkim.sign(message, b"s1", b"example.com", RSA_KEY, canonicalize=(b"relaxed", b"relaxed"),
                     include_headers=[b"from", b"to", b"subject"]) + message


def dkimpy_verifies(message: bytes, resolver) -> bool:
    return dkim.verify(message, dnsfunc=lambda name, timeout=5: resolver.txt(name.decode().rstrip("."))[0])


def relaxed_reference(body: bytes) -> bytes:
    """RFC 6376 section 3.4.4 as written, one rule after the other."""
    body = body if body.endswith(b"\r\n") else body + b"\r\n"
    body = re.sub(rb"[ \t]+", b" ", body).replace(b" \r\n", b"\r\n")
    end = len(body)
    while end >= 4 and body[end - 4:end] == b"\r\n\r\n":  # empty lines at the end go
        end -= 2
    return body[:end] if body[:end] != b"\r\n" else b""


HOSTILE_BODIES = [
    pytest.param(b" \t \r\n" * 200000, id="white-space-only lines"),
    pytest.param((b" \t" * 5000 + b"x \r\n") * 100, id="runs of spaces and tabs"),
    pytest.param(b"x" + b" " * 1000001 + b"y\r\n", id="one run of a million spaces"),
    pytest.param(b"a  b   c    d\t\t e \r\n" * 50000, id="short runs"),
    pytest.param(b"x\r" + b"\r\n" * 500000, id="bare CR then empty lines"),
]


@pytest.mark.parametrize("body", HOSTILE_BODIES)
def test_relaxed_bodies_of_white_space_hash_as_the_rfc_says(body, resolver, signer):
    signed = signer.sign(HEAD + b"\r\n" + body, sender="alice@example.com").message
    bh = base64.b64encode(hashlib.sha256(relaxed_reference(body)).digest())
    assert b"bh=" + bh + b";" in signed.replace(b"\r\n ", b"")
    [result] = Verifier(Settings(), resolver).verify(signed).results
    assert result.result == "pass", result.reason


@pytest.mark.parametrize("body", [b" \t \r\n" * 20000, (b" \t" * 50 + b"x \r\n") * 1000,
                                  b"a  b   c    d\t\t e \r\n" * 5000, b"x\r" + b"\r\n" * 50000])
def test_relaxed_bodies_of_white_space_verify_both_ways_with_dkimpy(body, resolver, signer):
    """Smaller than above: dkimpy takes 30 s for one run of 100k spaces (its own loop is quadratic)."""
    message = HEAD + b"\r\n" + body
    [result] = Verifier(Settings(), resolver).verify(dkimpy_signed(message)).results
    assert result.result == "pass", result.reason
    assert dkimpy_verifies(signer.sign(message, sender="alice@example.com").message, resolver)


@pytest.mark.parametrize("author, address", [
    (b'"a\\"b\\\\c" <alice@example.com>', "alice@example.com"),
    (b'"' + b'\\"' * 8000 + b'"@example.com', '"' * 8000 + "@example.com"),
    (b"(" * 60 + b"a" * 8000 + b"\\)" + b")" * 60 + b" alice@example.com", "alice@example.com"),
    (b"Alice (" + b"(c) " * 3000 + b") <alice@example.com>", "alice@example.com"),
])
def test_authors_behind_long_quoted_pairs_and_comments_are_read(author, address):
    assert Message(b"From: " + author + b"\r\n\r\n").authors.single.address == address


@pytest.mark.parametrize("author", [b"(" * 65 + b")" * 65 + b" alice@example.com", b"(comment\\",
                                    b"(" + b"a" * 10000 + b" alice@example.com"])
def test_comments_too_deep_or_unclosed_leave_no_author(author):
    authors = Message(b"From: " + author + b"\r\n\r\n").authors
    assert authors.single is None and "cannot be parsed" in authors.problem


def test_a_forged_result_behind_one_of_many_bare_crs_is_removed():
    hidden = b"X-Note: " + b"a\rb" * 300000 + b"\rAuthentication-Results: " + ID.encode() + b"; dkim=pass\r\n"
    innocent = b"X-Other: " + b"a\rb" * 300000 + b"\r\n"
    kept = remove_ours(hidden + innocent + HEAD + b"\r\nHi\r\n", ID)
    assert kept == innocent + HEAD + b"\r\nHi\r\n"


def test_a_hidden_score_header_in_any_case_is_removed_and_a_lookalike_kept():
    hidden = b"X-Note: a\rx-dkim-SCORE : -100\r\n"
    lookalike = b"X-Note: a\rX-DKIM-Scores: 1\r\n"
    kept = remove_ours(hidden + lookalike + HEAD + b"\r\n", ID, ["X-DKIM-Score"])
    assert kept == lookalike + HEAD + b"\r\n"


def test_our_id_behind_thousands_of_comments_is_ours():
    assert authserv_id_of(b" " + b"(c) " * 3000 + ID.encode() + b"; dkim=pass") == ID
    assert authserv_id_of(b" " + b"(a (b) \\) c) " * 1000 + b"other.example; dkim=pass") == "other.example"


@pytest.mark.parametrize("word", [b"=?utf-8?b?a?=", b"=?utf-8?b?Q?=", b"=?x-unknown?q?a?=", b"=?utf-8?q?=ZZ?="])
def test_an_encoded_word_that_cannot_be_decoded_is_unreadable_and_removed(word):
    """Found by bench/fuzz.py: bad base64 raised email.errors.HeaderParseError out of remove_ours."""
    field = b"Authentication-Results: " + word + b"; dkim=pass\r\n"
    assert remove_ours(field + HEAD + b"\r\n", ID) in (HEAD + b"\r\n", field + HEAD + b"\r\n")
    assert authserv_id_of(field.partition(b":")[2]) in (None, "a", "=zz")


def test_past_fifty_fields_with_encoded_words_each_is_removed_unread():
    ours = b"Authentication-Results: =?utf-8?q?" + ID.encode() + b"?=; dkim=pass\r\n"
    theirs = b"Authentication-Results: =?utf-8?q?other.example?=; dkim=pass\r\n"
    plain = b"Authentication-Results: other.example; dkim=pass\r\n"
    message = (ours + theirs) * 20 + theirs * 11 + plain * 3 + HEAD + b"\r\n"
    assert remove_ours(message, ID) == theirs * 30 + plain * 3 + HEAD + b"\r\n"


def test_many_signatures_are_checked_top_first_up_to_the_cap_and_stripped(resolver):
    message = dkimpy_signed(HEAD + b"\r\nHello.\r\n")
    signature, rest = message.split(b"From: ", 1)
    many = signature * 2000 + b"From: " + rest
    report = Verifier(Settings(), resolver).verify(many)
    assert [r.result for r in report.results] == ["pass"] * 5 and report.not_checked == 1995
    assert listmail.strip_signatures(many) == b"From: " + rest


@pytest.mark.parametrize("post", [b"From: a@example.com\r\n\rbroken line\r\n\r\nHi\r\n", b"--b1\r\nFrom: x\r\n\r\n",
                                  b"Authentication-Results: mx.example.net; arc=pass\r\n\rTo: b\r\n\r\n"])
def test_a_list_post_that_is_no_message_goes_out_unsigned_and_unsealed_without_an_exception(post, keys_dir,
                                                                                             resolver, signer):
    """Found by bench/fuzz.py: the arrival check read our A-R with a strict parse that raised."""
    from salmon_dkim.core.arc import ARCSealer
    from salmon_dkim.core.keys import load_private_key
    sealer = ARCSealer("example.com", "s1", load_private_key(keys_dir / "example.com/s1.key"), ID)
    settings = replace(signer.settings, lists=replace(signer.settings.lists, arc_seal=True))
    assert listmail.prepare_list_post(post, settings, "example.com", signer, sealer, resolver=resolver) == post


@pytest.fixture
def chain_of_50(keys_dir):
    """50 ARC sets (RFC 8617's most), each sealed over the ones below, with 20 KB in each AAR."""
    from salmon_dkim.core.arc import ARCSealer
    from salmon_dkim.core.keys import load_private_key
    sealer = ARCSealer("example.com", "s1", load_private_key(keys_dir / "example.com/s1.key"), ID)
    message = HEAD + b"\r\nHello.\r\n"
    for instance in range(1, 51):
        message = sealer.seal(message, "pass" if instance > 1 else None, results="dkim=pass; x=" + "y" * 20000)
    return message


def test_a_chain_of_fifty_sets_verifies_as_dkimpy_says(chain_of_50, resolver):
    """Each seal's input is now hashed as a running digest, not rebuilt whole for every seal."""
    settings = replace(Settings(), lists=replace(Settings().lists, max_arc_instances=50))
    assert arc_result(chain_of_50, resolver, settings) == ("pass", "50 ARC sets verified, last sealed by example.com")
    cv, _, _ = dkim.arc_verify(chain_of_50, dnsfunc=lambda n, timeout=5: resolver.txt(n.decode().rstrip("."))[0])
    assert cv == dkim.CV_Pass


def test_a_changed_set_deep_in_a_chain_of_fifty_breaks_the_newest_seal(chain_of_50, resolver):
    settings = replace(Settings(), lists=replace(Settings().lists, max_arc_instances=50))
    changed = chain_of_50.replace(b"i=25; mx.example.net;", b"i=25; mx.example.org;", 1)
    assert changed != chain_of_50
    assert arc_result(changed, resolver, settings) == (
        "fail", "ARC-Seal i=50 does not verify (d=example.com, s=s1)")


def test_thousands_of_arc_fields_fail_without_a_lookup():
    fields = b"".join(b"ARC-Seal: i=%d; cv=none; a=rsa-sha256; d=x; s=y; b=x\r\n" % i for i in range(1, 20001))
    result, reason = arc_result(fields + HEAD + b"\r\nHi\r\n", None, Settings())
    assert result == "fail" and "more than MaxARCInstances" in reason


@pytest.mark.parametrize("head, fields", [
    (b"A: 1\r\nB : 2\r\n\tfolded\r\n", [(b"A", b" 1\r\n"), (b"B ", b" 2\r\n\tfolded\r\n")]),
    (b"A: 1\rx\r\nB:\n2\r\n", [(b"A", b" 1\rx\r\n"), (b"B", b"\n2\r\n")]),
])
def test_header_fields_are_split_as_written(head, fields):
    assert Message(head + b"\r\nbody").fields == fields


@pytest.mark.parametrize("bad", [b"X-Filler: v\r\n" * 50000 + b"no colon here\r\n",
                                 b"X-Filler: v\r\n" * 50000 + b"a b: c\r\n", b": empty name\r\n"])
def test_one_line_that_is_no_field_among_many_is_an_error_and_lenient_skips_it(bad):
    with pytest.raises(MessageFormatError):
        Message(bad + HEAD + b"\r\nHi\r\n")
    lenient = Message(bad + HEAD + b"\r\nHi\r\n", lenient=True)
    assert lenient.authors.single.address == "alice@example.com"
    assert len(lenient.fields) == bad.count(b"\r\n") - 1 + 5


def test_a_blank_line_of_lf_cr_lf_ends_the_header_for_stripping():
    message = b"DKIM-Signature: v=1\nFrom: a@example.com\n\r\nDKIM-Signature: in the body\n"
    assert listmail.strip_signatures(message) == b"From: a@example.com\r\n\r\nDKIM-Signature: in the body\r\n"


def test_base64_bodies_are_untouched_by_relaxed_rules(resolver):
    body = base64.encodebytes(bytes(range(256)) * 4000).replace(b"\n", b"\r\n")
    [result] = Verifier(Settings(), resolver).verify(dkimpy_signed(HEAD + b"\r\n" + body)).results
    assert result.result == "pass"
