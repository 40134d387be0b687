"""Why a signature failed: each explanation reached by a real message altered as lists and gateways alter them.

Messages are signed by our Signer (relaxed/relaxed, From, Subject, Reply-To and
the other fields a reader trusts oversigned, as configured by default) or by
Mail::DKIM, then altered: by the example project's own mailing list (a copy
run with StripSigsFromListMail = No, its list "news" given a footer), by
Python's email package, or as a list or gateway does by hand.  Keys come from
tests/data/keys/keys.zone, a copy of it, or live DNS (a black hole).
"""
import email
import email.policy
import re
import shutil
import time
from email.message import EmailMessage
from pathlib import Path
from types import MappingProxyType, SimpleNamespace

import pytest
from click.testing import CliRunner
from conftest import KEYS, message, private_copy
from peers import crlf, have_mail_dkim, mail_dkim_sign
from test_example_project import PROJECT, STATE, RunningExample

from salmon_dkim.activity import ActivityLog, read_activity
from salmon_dkim.cli import main
from salmon_dkim.config import DomainKeys, Settings, SigningSettings, load_settings
from salmon_dkim.core import authres, crypto
from salmon_dkim.core import explain as explain_module
from salmon_dkim.core.canon import body_hash, canon_body
from salmon_dkim.core.dkim import dkim_sign, header_data, make_signature
from salmon_dkim.core.explain import (EXPLAIN_MAX_BYTES, MAX_CHECKS, MAX_PREFIX_LINES, MAX_SIGNED_FIELDS,
                                      SHORT_LIMIT, decode_encoded_words, explain)
from salmon_dkim.core.keys import load_private_key
from salmon_dkim.core.message import Message
from salmon_dkim.core.signer import Signer
from salmon_dkim.core.verifier import Verifier
from salmon_dkim.dns.resolver import ZoneResolver

ZONE = KEYS / "keys.zone"
RSA2048 = KEYS / "example.com.rsa2048.key"
PLAIN = message("plain.eml")  # From: Alice Example <alice@example.com>, Subject: Lunch on Friday
NAME = "s1._domainkey.example.com"
PRINTABLE = re.compile(r"[\x20-\x7e]*")
needs_mail_dkim = pytest.mark.skipif(not have_mail_dkim(), reason="Mail::DKIM (libmail-dkim-perl) is not installed")


@pytest.fixture(scope="module")
def keys_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("keys")
    private_copy(RSA2048, folder / "example.com" / "s1.key")
    return folder


@pytest.fixture(scope="module")
def sign(keys_dir):
    """sign(message, **SigningSettings options, now=None) -> the message signed by example.com s1."""
    def signed(data: bytes, now=None, **options) -> bytes:
        entry = DomainKeys("example.com", ("s1",), (keys_dir / "example.com" / "s1.key",))
        signing = SigningSettings(keys_dir=keys_dir, domains=MappingProxyType({"example.com": entry}), **options)
        signer = Signer(Settings(signing=signing), activity=ActivityLog(None),
                        **({"clock": lambda: now} if now else {}))
        result = signer.sign(data)
        assert result.unsigned_reason is None
        return result.message
    return signed


def verify(data: bytes, zone=ZONE, settings=None):
    """Our verifier's results for ``data`` (keys from ``zone``)."""
    return Verifier(settings or Settings(), ZoneResolver(zone)).verify(data).results


def explained(data: bytes, zone=ZONE, resolver=None, settings=None):
    """(result, Explanation) of the one DKIM signature of ``data``."""
    settings = settings or Settings()
    resolver = resolver or ZoneResolver(zone)
    parsed = Message.parse(data)
    [result] = Verifier(settings, resolver).verify(parsed).results
    return result, explain(parsed, result, resolver, settings, position=parsed.positions(b"dkim-signature")[0])


def assert_short_line(text: str) -> None:
    assert len(text) <= SHORT_LIMIT and PRINTABLE.fullmatch(text), text


# --- the body -----------------------------------------------------------------------------------

def test_footer_added_after_the_signed_body_is_counted_in_bytes_and_lines(sign):
    footer = b"-- \r\nlunch mailing list\r\nhttps://lists.example.com/lunch\r\n"
    result, why = explained(sign(PLAIN) + crlf(footer))
    added = len(canon_body(crlf(footer), "relaxed"))  # "-- " loses its space in relaxed canonicalization
    assert result.result == "fail"
    assert result.reason == f"body hash mismatch: {added} bytes added after the signed body (a footer or disclaimer)"
    assert f"{added} bytes in 3 lines were added after it" in why.detail and why.confirmed


def test_footer_of_a_message_with_a_list_id_is_called_a_list_footer(sign):
    signed = sign(PLAIN)
    data = signed.replace(b"\r\n\r\n", b"\r\nList-Id: <lunch.lists.example.com>\r\n\r\n", 1) + b"--\r\nlunch\r\n"
    assert verify(data)[0].reason == "body hash mismatch: 11 bytes added after the signed body (a list footer)"


def test_footer_after_a_body_that_ended_in_empty_lines_is_found(sign):
    signed = sign(PLAIN + b"\r\n\r\n\r\n")
    assert "19 bytes added after the signed body" in verify(signed + b"footer text\r\n")[0].reason  # 3 empty lines too


def test_text_edited_in_the_middle_of_the_body_is_said_to_be_edited_without_evidence(sign):
    result, why = explained(sign(PLAIN).replace(b"noon", b"one"))
    assert result.reason == "body hash mismatch: the body was edited within the signed text"
    assert not why.confirmed and "Received fields" in why.advice


@needs_mail_dkim
def test_white_space_padded_onto_a_simple_signed_body_passes_as_relaxed(tmp_path):
    signed = mail_dkim_sign(PLAIN, "example.com", "s1", RSA2048, "simple/simple")
    padded = signed.replace(b"Hi Bob,\r\n", b"Hi Bob,   \r\n").replace(b"\r\nAlice\r\n", b"\r\nAlice\t\r\n")
    result, why = explained(padded)
    assert result.reason == "body hash mismatch: white space changed in the body (c=simple)"
    assert "c=relaxed/relaxed" in why.advice


def test_signer_that_hashed_bare_lf_line_ends_is_told_apart(keys_dir):
    # A broken signer: it hashed the body with LF line ends; the relay sent it with CRLF, as SMTP has it.
    data = crlf(PLAIN)
    lf_body = data.split(b"\r\n\r\n", 1)[1].replace(b"\r\n", b"\n")
    parsed = Message(data)
    bh, _ = body_hash(lf_body, "relaxed")
    key = load_private_key(keys_dir / "example.com" / "s1.key")
    names = ["from", "to", "subject", "date"]
    field = make_signature(header_data(parsed.fields, [n.encode() for n in names], "relaxed"), names, bh, None,
                           "example.com", "s1", key, ("relaxed", "relaxed"), int(time.time()), None)
    result, why = explained(field + data)
    assert result.reason == "body hash mismatch: line endings changed: the signer hashed bare LF line ends"
    assert why.confirmed


def compose(text: str, cte: str) -> bytes:
    """A single-part text message as Python's email package writes it."""
    msg = EmailMessage(policy=email.policy.SMTP)
    msg["From"] = "Alice Example <alice@example.com>"
    msg["To"] = "bob@example.net"
    msg["Subject"] = "Grüße aus München"
    msg["Date"] = "Mon, 23 Nov 2026 10:00:00 +0000"
    msg["Message-ID"] = "<gruss-1@example.com>"
    msg.set_content(text, cte=cte)
    return msg.as_bytes(policy=email.policy.SMTP.clone(utf8=True))


TEXT = "Grüße aus München!\nZweite Zeile mit = Zeichen und einer recht langen Zeile, die umbrochen werden " \
       "muss, wenn sie quoted-printable wird.\n"


def test_gateway_that_re_serialises_for_7bit_is_explained_field_by_field_and_verified(sign):
    signed = sign(compose(TEXT, "8bit"))
    # A 7-bit gateway built on Python's email: the body becomes base64, the 8-bit Subject an encoded word,
    # and Content-Type gets its parameter quoted.
    relayed = email.message_from_bytes(signed, policy=email.policy.default).as_bytes(
        policy=email.policy.SMTP.clone(cte_type="7bit"))
    assert b"Content-Transfer-Encoding: base64" in relayed and b"Subject: =?" in relayed
    result, why = explained(relayed)
    assert result.result == "fail"
    assert result.reason.startswith("body hash mismatch: transfer encoding changed from 8bit to base64, same text;")
    assert "Subject was re-encoded (RFC 2047); Content-Transfer-Encoding was changed: with those undone the " \
           "signature verifies" in why.detail
    assert why.confirmed and why.checks <= MAX_CHECKS
    assert_short_line(result.reason)


def test_quoted_printable_body_decoded_to_8bit_is_recognised_by_its_decoded_bytes(sign):
    signed = sign(compose(TEXT, "quoted-printable"))
    parsed = email.message_from_bytes(signed, policy=email.policy.default)
    parsed.set_content(parsed.get_content(), cte="8bit")  # a filter that "repairs" the encoding
    relayed = parsed.as_bytes(policy=email.policy.SMTP.clone(utf8=True))
    result, why = explained(relayed)
    assert "transfer encoding changed from quoted-printable to 8bit, same text" in result.reason
    assert "Content-Transfer-Encoding was changed" in why.detail and why.confirmed


# --- the header ---------------------------------------------------------------------------------

def test_subject_tag_is_found_by_verifying_without_it(sign):
    result, why = explained(sign(PLAIN).replace(b"Subject: Lunch", b"Subject: [lunch] Lunch"))
    assert result.reason == "signature mismatch: a [tag] was added to Subject"
    assert "(checked, not guessed)" in why.detail and why.confirmed and why.checks == 2


def test_subject_text_never_appears_in_the_explanation(sign):
    secret = b'Quarterly numbers "; dkim=pass'
    data = sign(PLAIN.replace(b"Lunch on Friday", secret))
    result, why = explained(data.replace(b"Subject: Quarterly", b"Subject: [board] Quarterly"))
    assert result.reason == "signature mismatch: a [tag] was added to Subject"
    for text in (result.reason, why.detail, why.advice):
        assert "Quarterly" not in text and "board" not in text


def test_from_added_above_an_oversigned_from_is_named(sign):
    data = b"From: Mallory <ceo@example.com>\r\n" + sign(PLAIN)
    result, why = explained(data)
    assert result.reason == "signature mismatch: an extra From field was added above the signed one"
    assert "treat the message as forged" in why.advice


def test_subject_added_above_an_oversigned_subject_is_named(sign):
    result, _ = explained(b"Subject: Urgent: wire the money\r\n" + sign(PLAIN))
    assert result.reason == "signature mismatch: an extra Subject field was added above the signed one"


def test_reply_to_added_by_a_list_is_named(sign):
    data = sign(PLAIN).replace(b"\r\n\r\n", b"\r\nReply-To: lunch@lists.example.com\r\n\r\n", 1)
    assert verify(data)[0].reason == "signature mismatch: Reply-To was added"


def test_from_rewritten_via_the_list_with_the_author_in_reply_to_is_named(sign):
    # Mailman's DMARC mitigation: From becomes the list, the author moves to Reply-To.
    data = sign(PLAIN).replace(b"From: Alice Example <alice@example.com>",
                               b'From: "Alice Example via Lunch" <lunch@lists.example.com>\r\n'
                               b"Reply-To: Alice Example <alice@example.com>")
    result, why = explained(data)
    assert result.reason == ("signature mismatch: From was rewritten to the list's address; "
                             "Reply-To was added with the author's address")
    assert why.confirmed and "alice" not in why.detail.lower()


def test_list_that_tags_the_subject_and_adds_reply_to_is_found_in_one_verification(sign):
    data = sign(PLAIN).replace(b"Subject: Lunch", b"Subject: [lunch] Lunch").replace(
        b"\r\n\r\n", b"\r\nReply-To: lunch@lists.example.com\r\nList-Id: <lunch.lists.example.com>\r\n\r\n", 1)
    result, why = explained(data)
    assert result.reason == "signature mismatch: a [tag] was added to Subject; Reply-To was added"


def test_field_re_folded_under_simple_canonicalization_is_named(sign):
    references = b"References: " + b" ".join(b"<thread-%d-abcdefghijklmnop@example.com>" % i for i in range(4))
    signed = sign(crlf(PLAIN).replace(b"MIME-Version", references + b"\r\nMIME-Version"),
                  header_canon="simple", body_canon="simple")
    refolded = email.message_from_bytes(signed, policy=email.policy.default).as_bytes(policy=email.policy.SMTP)
    assert b"References: <thread-0-abcdefghijklmnop@example.com>\r\n <thread-1" in refolded
    result, why = explained(refolded)
    assert result.reason == "signature mismatch: References was re-folded"
    assert "c=relaxed" in why.advice


def test_raw_subject_re_encoded_by_a_gateway_is_named(sign):
    signed = sign(compose(TEXT, "quoted-printable"))  # 7-bit body: only the header needs the gateway
    relayed = email.message_from_bytes(signed, policy=email.policy.default).as_bytes(
        policy=email.policy.SMTP.clone(cte_type="7bit"))
    assert b"Subject: =?" in relayed and b"\r\n\r\n" + signed.split(b"\r\n\r\n", 1)[1] in relayed
    result, _ = explained(relayed)
    assert result.reason.startswith("signature mismatch: Subject was re-encoded (RFC 2047)")


def test_encoded_words_decode_to_the_raw_bytes_with_the_space_between_words_dropped():
    assert decode_encoded_words(b" =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n =?utf-8?b?IGF1cw==?= and more\r\n") == \
        " Grüße aus and more\r\n".encode()
    assert decode_encoded_words(b" no words =? here ?=\r\n") is None


def test_header_change_no_edit_explains_says_so_and_names_the_key(sign):
    result, why = explained(sign(PLAIN).replace(b"Subject: Lunch on Friday", b"Subject: Dinner on Friday"))
    assert result.reason == "signature mismatch: a signed header field was changed, or the key does not match"
    assert not why.confirmed and "salmon-dkim check-dns example.com s1" in why.advice


# --- keys, DNS, expiry, l= ----------------------------------------------------------------------

def zone_without(tmp_path, selector: str) -> Path:
    path = tmp_path / "removed.zone"
    path.write_text("\n".join(line for line in ZONE.read_text().splitlines()
                              if not line.startswith(f"{selector}._domainkey.example.com.")) + "\n")
    return path


def test_key_removed_from_the_zone_says_to_publish_it_or_fix_the_selector(sign, tmp_path):
    result, why = explained(sign(PLAIN), zone=zone_without(tmp_path, "s1"))
    assert result.result == "permerror"
    assert why.short == f"no key at {NAME}: removed or never published, or wrong selector"
    assert f"publish the key at {NAME}" in why.advice and "selector" in why.advice


def test_revoked_key_is_called_revoked(sign, tmp_path):
    zone = zone_without(tmp_path, "s1")
    zone.write_text(zone.read_text() + f'{NAME}. IN TXT "v=DKIM1; k=rsa; p="\n')
    _, why = explained(sign(PLAIN), zone=zone)
    assert why.short == f"key at {NAME} was revoked (p= empty)"


def test_key_that_is_not_the_signing_key_is_named(sign, tmp_path):
    other = ZoneResolver(ZONE).txt("weak1024._domainkey.example.com")[0].decode()
    zone = zone_without(tmp_path, "s1")
    zone.write_text(zone.read_text() + f'{NAME}. IN TXT "{other}"\n')
    result, why = explained(sign(PLAIN), zone=zone)
    assert result.reason == "b= is 256 bytes; a signature by this 1024-bit key is 128"
    assert f"the key published at {NAME} is not the key that made this signature" in why.detail


def test_dns_that_does_not_answer_is_temporary(sign, black_hole):
    _, why = explained(sign(PLAIN), resolver=black_hole.resolver(timeout=0.5))
    assert why.short == f"key at {NAME} not fetched: DNS failed for now"
    assert "retries" in why.advice


def test_expired_signature_says_how_long_ago_and_what_the_signer_should_do(sign):
    now = int(time.time())
    data = sign(PLAIN, now=now - 2 * 86400, expire_seconds=3600)
    result, why = explained(data)
    assert result.result == "permerror"
    assert why.short == "signature expired 1 day ago (x=)"
    assert "1 hour after it was signed" in why.detail and "days" in why.advice


def test_l_shorter_than_the_body_explains_the_unsigned_bytes_and_honor_body_length(sign):
    data = sign(PLAIN, body_length_tag=True) + b"-- \r\nfooter\r\n"
    result, why = explained(data)
    assert result.result == "policy"
    assert "only the first 76 bytes of the body (l=); the 12 bytes after them" in why.detail
    assert "HonorBodyLength = Yes" in why.advice


# --- bounded work -------------------------------------------------------------------------------

class Counting:
    """Counts calls to a function and passes them on."""

    def __init__(self, function) -> None:
        self.function, self.calls = function, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.function(*args, **kwargs)


def hostile(sign_fields: int, body: bytes, keys_dir) -> bytes:
    """A message signing ``sign_fields`` fields, each then added again below (so each signed one changed),
    with one byte of the body changed in its middle."""
    names = [f"X-Field-{i}" for i in range(sign_fields)]
    head = "".join(f"{n}: value {i}\r\n" for i, n in enumerate(names)).encode()
    data = b"From: a@example.com\r\nSubject: s\r\n" + head + b"\r\n" + body
    key = load_private_key(keys_dir / "example.com" / "s1.key")
    field = dkim_sign(data, "example.com", "s1", key, headers=names + ["from", "subject"])
    middle = len(data) - len(body) // 2
    data = data[:middle] + b"b" + data[middle + 1:]
    return field + data.replace(b"\r\n\r\n", b"\r\n" + head.replace(b"value", b"other") + b"\r\n", 1)


def test_hostile_failing_message_costs_at_most_max_checks_verifications(keys_dir, monkeypatch):
    data = hostile(MAX_SIGNED_FIELDS - 3, b"a\r\n" * 300_000, keys_dir)  # h= of 1,000 names, 300,000 lines
    assert len(data) < EXPLAIN_MAX_BYTES
    verifications = Counting(crypto.verify)
    comparisons = Counting(explain_module.hmac.compare_digest)
    monkeypatch.setattr(crypto, "verify", verifications)
    monkeypatch.setattr(explain_module, "hmac", SimpleNamespace(compare_digest=comparisons))
    [result] = verify(data)
    assert result.result == "fail" and result.reason.startswith("body hash mismatch: the body was edited")
    assert verifications.calls == MAX_CHECKS  # 1,996 removals alone were on offer
    assert MAX_PREFIX_LINES <= comparisons.calls <= MAX_PREFIX_LINES + 10  # not one per body line


def test_message_over_the_size_cap_keeps_the_plain_reason_and_costs_no_verification(keys_dir, monkeypatch):
    data = hostile(10, b"a\r\n" * (EXPLAIN_MAX_BYTES // 3 + 1), keys_dir)
    assert len(data) > EXPLAIN_MAX_BYTES
    verifications = Counting(crypto.verify)
    monkeypatch.setattr(crypto, "verify", verifications)
    [result] = verify(data)
    assert result.reason == "body hash mismatch: the body was changed after signing"
    assert verifications.calls == 0


def test_signature_naming_more_fields_than_explained_keeps_the_plain_reason(keys_dir, monkeypatch):
    data = hostile(MAX_SIGNED_FIELDS, b"a\r\n" * 1000, keys_dir)  # h= of 1,003 names
    verifications = Counting(crypto.verify)
    monkeypatch.setattr(crypto, "verify", verifications)
    [result] = verify(data)
    assert result.reason == "body hash mismatch: the body was changed after signing"
    assert verifications.calls == 0


# --- the command line ---------------------------------------------------------------------------

def run(*args, input=None):
    return CliRunner().invoke(main, ["explain", *args], input=input)


def test_explain_prints_result_domain_selector_what_changed_and_what_to_do(sign, tmp_path):
    path = tmp_path / "tagged.eml"
    path.write_bytes(sign(PLAIN).replace(b"Subject: Lunch", b"Subject: [lunch] Lunch") + b"-- \r\nfooter\r\n")
    result = run("--zone", str(ZONE), str(path))
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert lines[0] == "fail      dkim d=example.com s=s1 a=rsa-sha256"
    assert " ".join(" ".join(lines[1:3]).split()) == ("body hash mismatch: 12 bytes added after the signed body "
                                                      "(a footer or disclaimer); a [tag] was added to Subject")
    assert any(line.startswith("  What changed: The first 76 bytes") for line in lines)
    assert any(line.startswith("  What to do: ") for line in lines)


def test_explain_of_a_passing_signature_exits_0(sign):
    result = run("--zone", str(ZONE), input=sign(PLAIN))
    assert (result.exit_code, result.output) == (0, "pass      dkim d=example.com s=s1 a=rsa-sha256\n"
                                                    "  good rsa-sha256 signature, 2048-bit key\n")


def test_explain_of_an_unsigned_message_exits_1():
    result = run("--zone", str(ZONE), input=PLAIN)
    assert (result.exit_code, result.output) == (1, "no DKIM signature\n")


@pytest.mark.parametrize("args, said", [
    (["--zone", str(ZONE), "/nonexistent/message.eml"], "cannot read /nonexistent/message.eml"),
    (["--zone", "/nonexistent/zone", "-"], "no DNS source"),
    (["--config", "/nonexistent/salmon_dkim.ini", "-"], "salmon-dkim explain: "),
])
def test_explain_bad_input_exits_2_with_one_line(args, said):
    result = CliRunner().invoke(main, ["explain", *args], input=b"")
    assert result.exit_code == 2 and said in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


# --- the example project's list -----------------------------------------------------------------

FOOTER = b"-- \r\nnews@lists.example.com: write to news-unsubscribe@lists.example.com to leave\r\n"


@pytest.fixture(scope="module")
def list_example(tmp_path_factory):
    """The example project with StripSigsFromListMail = No and DMARCMitigation = none, its list "news" adding
    FOOTER to each post."""
    folder = tmp_path_factory.mktemp("explain") / "example_project"
    shutil.copytree(PROJECT, folder, ignore=shutil.ignore_patterns(*STATE))
    ini = folder / "config" / "salmon_dkim.ini"
    # the list keeps the author's signature and From (example.com's DMARC p=reject would have it rewritten)
    ini.write_text(ini.read_text().replace("StripSigsFromListMail = Yes",
                                           "StripSigsFromListMail = No\nDMARCMitigation = none"))
    handler = folder / "app" / "handlers" / "mailinglist.py"
    code = handler.read_text()
    sent = "    return fields + head + rest\n"
    assert code.count(sent) == 1  # list_fields: the post as the list changes it
    footer = f"    return fields + head + rest + ({FOOTER!r} if list_name == 'news' else b'')\n"
    handler.write_text(code.replace(sent, footer))
    running = RunningExample(folder)
    for member in ("alice@example.com", "bob@example.net"):
        running.mail(member, "news-subscribe@lists.example.com")
        running.mail(member, "lunch-subscribe@lists.example.com")
    yield running
    running.stop()


@pytest.fixture(scope="module")
def list_verifier(list_example):
    settings = load_settings(list_example.folder / "config" / "salmon_dkim.ini")
    return Verifier(settings, ZoneResolver(list_example.zone))


def post(example, list_name: str, subject: str) -> bytes:
    example.mail("alice@example.com", f"{list_name}@lists.example.com", subject, sign=True)
    return example.sunk("bob@example.net")[-1]


def test_list_subject_tag_is_explained_on_the_authors_signature(list_example, list_verifier):
    copy = post(list_example, "lunch", "Lunch on Friday")
    results = {r.domain: r for r in list_verifier.verify(copy).results}
    assert results["lists.example.com"].result == "pass"
    assert (results["example.com"].result, results["example.com"].reason) == \
        ("fail", "signature mismatch: a [tag] was added to Subject")


def test_list_footer_and_tag_are_explained_with_the_bytes_the_footer_added(list_example, list_verifier):
    copy = post(list_example, "news", "News on Friday")
    result = {r.domain: r for r in list_verifier.verify(copy).results}["example.com"]
    added = len(canon_body(FOOTER, "relaxed"))
    assert result.reason == (f"body hash mismatch: {added} bytes added after the signed body (a list footer); "
                             f"a [tag] was added to Subject")


def test_list_post_arriving_at_an_mx_carries_the_explanation_in_authentication_results_and_the_log(list_example):
    copy = post(list_example, "news", "Minutes of the meeting")
    list_example.send(list_example.mx, "news-bounces@lists.example.com", "bob@example.com", copy)
    stored = [p.read_bytes() for p in (list_example.folder / "maildir" / "new").iterdir()]
    [arrived] = [m for m in stored if b"Subject: [news] Minutes of the meeting" in m]
    header = Message.parse(arrived).values(b"authentication-results")[0]
    _, clauses = authres.parse(header)
    [failed] = [c for c in clauses if c.method == "dkim" and c.result == "fail"]
    added = len(canon_body(FOOTER, "relaxed"))
    expected = (f"body hash mismatch: {added} bytes added after the signed body (a list footer); "
                f"a [tag] was added to Subject")
    assert failed.reason == expected and failed.prop("header", "d") == "example.com"
    assert_short_line(failed.reason)
    log = list_example.folder / "logs" / "dkim-activity.jsonl"
    for _ in range(50):  # the activity log is written in the background
        entries = [e for e in read_activity(log, event="verify")
                   if any(r["reason"] == expected for r in e.get("results", []))]
        if entries:
            break
        time.sleep(0.1)
    assert entries and entries[-1]["results"][1]["d"] == "example.com"
