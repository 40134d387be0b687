"""List mail: recognising it, stripping the author's signatures, re-signing and sealing as the list."""
from dataclasses import replace
from types import MappingProxyType

import pytest

from conftest import message
from peers import mail_dkim_arc_verify, mail_dkim_verify
from salmon_dkim.core.arc import ARCSealer, arc_result
from salmon_dkim.core.message import to_crlf
from salmon_dkim.config import DomainKeys, ListSettings, LoggingSettings, Settings, SigningSettings
from salmon_dkim.dns.resolver import ZoneResolver
from salmon_dkim.core.keys import load_private_key
from salmon_dkim.core.listmail import is_list_mail, prepare_list_post, seal_forwarded, strip_signatures
from salmon_dkim.core.dkim import dkim_sign
from salmon_dkim.core.signer import Signer
from salmon_dkim.core.verifier import Verifier

FOLDED_SIGNATURE = (b"DKIM-Signature: v=1; a=rsa-sha256; d=example.org; s=s2048;\r\n"
                    b"\tbh=abc=; h=from:to;\r\n b=AAAA\r\n")
DOMAINKEY_SIGNATURE = b"DomainKey-Signature: a=rsa-sha1; d=example.org; s=old;\r\n b=BBBB\r\n"
ARRIVAL = b"Authentication-Results: lists.example.com; dkim=pass header.d=example.org\r\n"


@pytest.fixture
def settings(keys_dir):
    domains = {"example.com": DomainKeys("example.com", ("s1",), (keys_dir / "example.com/s1.key",))}
    return Settings(signing=SigningSettings(keys_dir=keys_dir, domains=MappingProxyType(domains)),
                    logging=LoggingSettings(activity_log=None))


@pytest.fixture
def resolver(zone_file):
    return ZoneResolver(zone_file)


@pytest.fixture
def post(keys_dir):
    """A post as it reaches the list: signed by its author's domain (example.org), List-Id added."""
    original = to_crlf(message("plain.eml"))
    key = load_private_key(keys_dir / "example.org/s2048.key")
    signature = dkim_sign(original, "example.org", "s2048", key)
    return ARRIVAL + b"List-Id: <lunch.example.com>\r\n" + signature + original


@pytest.fixture
def sealer(keys_dir):
    return ARCSealer("example.com", "s1", load_private_key(keys_dir / "example.com/s1.key"),
                     "lists.example.com")


def with_lists(settings, **options):
    return replace(settings, lists=replace(ListSettings(), **options))


def dkim_domains(data, settings, resolver):
    return [(r.domain, r.result) for r in Verifier(settings, resolver).verify(data).results]


def test_list_id_marks_list_mail(post):
    assert is_list_mail(post)
    assert not is_list_mail(to_crlf(message("plain.eml")))


def test_list_id_in_header_pairs_marks_list_mail():
    assert is_list_mail([("Subject", "hi"), ("list-ID", "<a.example.com>")])
    assert not is_list_mail([(b"X-List-Id", b"<a.example.com>")])


def test_strip_removes_folded_signatures_whole_and_nothing_else():
    rest = to_crlf(message("plain.eml"))
    data = FOLDED_SIGNATURE + b"Received: from a by b\r\n" + DOMAINKEY_SIGNATURE + rest
    assert strip_signatures(data) == b"Received: from a by b\r\n" + rest


def test_strip_leaves_an_unsigned_message_byte_for_byte():
    data = to_crlf(message("multipart.eml"))
    assert strip_signatures(data) == data


def test_strip_keeps_fields_that_only_look_alike():
    data = b"X-DKIM-Signature: kept\r\nDKIM-Signature-Note: kept\r\n" + to_crlf(message("plain.eml"))
    assert strip_signatures(data) == data


def test_strip_works_without_a_body():
    assert strip_signatures(b"From: a@example.org\r\n" + FOLDED_SIGNATURE) == b"From: a@example.org\r\n"


def test_post_is_stripped_and_signed_as_the_list_domain(post, settings, resolver, zone_file):
    sent = prepare_list_post(post, settings, "example.com", Signer(settings))
    assert dkim_domains(sent, settings, resolver) == [("example.com", "pass")]
    assert mail_dkim_verify(sent, zone_file) == ["pass"]


def test_strip_sigs_no_keeps_the_authors_signature(post, settings, resolver):
    sent = prepare_list_post(post, with_lists(settings, strip_sigs_from_list_mail=False), "example.com",
                             Signer(settings))
    assert dkim_domains(sent, settings, resolver) == [("example.com", "pass"), ("example.org", "pass")]


def test_sign_list_mail_no_leaves_the_post_unsigned(post, settings):
    unsigned = with_lists(settings, sign_list_mail=False)
    sent = prepare_list_post(post, unsigned, "example.com", Signer(settings))
    assert b"DKIM-Signature" not in sent


def test_arc_seal_records_the_arrival_results(post, settings, sealer, resolver, zone_file):
    sealing = with_lists(settings, arc_seal=True)
    sent = prepare_list_post(post, sealing, "example.com", Signer(settings), sealer)
    assert sent.startswith(b"ARC-Seal: i=1;")
    assert b"ARC-Authentication-Results: i=1; lists.example.com;\r\n dkim=pass header.d=example.org" in sent
    assert arc_result(sent, resolver, settings)[0] == "pass"
    assert mail_dkim_arc_verify(sent, zone_file) == "pass"
    assert dkim_domains(sent, settings, resolver) == [("example.com", "pass")]


def test_arc_seal_extends_a_chain_that_passed_on_arrival(post, settings, sealer, resolver, zone_file):
    first = sealer.seal(post)
    arrived = b"Authentication-Results: lists.example.com; arc=pass\r\n" + first
    sent = prepare_list_post(arrived, with_lists(settings, arc_seal=True), "example.com", None, sealer)
    assert b"ARC-Seal: i=2; a=rsa-sha256;" in sent and b"cv=pass" in sent
    assert mail_dkim_arc_verify(sent, zone_file) == "pass"


def test_arc_seal_checks_an_unreported_chain_itself(post, settings, sealer, resolver):
    sent = prepare_list_post(sealer.seal(post), with_lists(settings, arc_seal=True), "example.com", None,
                             sealer, resolver=resolver)
    assert arc_result(sent, resolver, settings)[0] == "pass"


def test_a_chain_that_cannot_be_checked_for_now_is_not_sealed_as_failed(post, settings, sealer, black_hole):
    """A DNS server that never answers: arc=temperror, and the post goes out signed but unsealed."""
    silent = black_hole.resolver(timeout=0.3)
    assert arc_result(sealer.seal(post), silent, settings)[0] == "temperror"
    sent = prepare_list_post(sealer.seal(post), with_lists(settings, arc_seal=True), "example.com",
                             Signer(settings), sealer, resolver=silent)
    assert sent.startswith(b"DKIM-Signature:") and sent.count(b"ARC-Seal:") == 1


def test_post_past_max_arc_instances_goes_out_signed_but_unsealed(post, settings, sealer):
    options = with_lists(settings, arc_seal=True, max_arc_instances=1)
    sent = prepare_list_post(sealer.seal(post), options, "example.com", Signer(settings), sealer,
                             arrival_cv="pass")
    assert sent.startswith(b"DKIM-Signature:") and sent.count(b"ARC-Seal:") == 1


# -- forwarded mail: sealed, not list-processed (listmail.seal_forwarded, SigningRelay(seal=True)) ----------

FORWARDER = b"Authentication-Results: lists.example.com;\r\n dkim=pass header.d=example.org; arc=none\r\n"


@pytest.fixture
def forwarded(keys_dir):
    """A message from example.org (signed there) as our MX received it: our Authentication-Results on top."""
    original = to_crlf(message("plain.eml")).replace(b"alice@example.com", b"alice@example.org")
    signature = dkim_sign(original, "example.org", "s2048", load_private_key(keys_dir / "example.org/s2048.key"))
    return FORWARDER + signature + original


def test_forwarded_mail_is_sealed_over_our_arrival_results_and_left_as_it_was(forwarded, settings, sealer,
                                                                              resolver, zone_file):
    from test_arc import dkimpy_arc_verify
    sent = seal_forwarded(forwarded, settings, sealer)
    assert sent.endswith(forwarded)
    assert b"ARC-Authentication-Results: i=1; lists.example.com;\r\n dkim=pass header.d=example.org;\r\n" \
           b" arc=none\r\n" in sent
    assert arc_result(sent, resolver, settings) == ("pass", "1 ARC set verified, last sealed by example.com")
    assert dkimpy_arc_verify(sent, zone_file) == b"pass"
    assert mail_dkim_arc_verify(sent, zone_file) == "pass"
    assert dkim_domains(sent, settings, resolver) == [("example.org", "pass")]


def test_forwarding_extends_a_chain_our_authentication_results_recorded_as_passing(forwarded, settings, sealer,
                                                                                  keys_dir, resolver, zone_file):
    upstream = ARCSealer("example.org", "s2048", load_private_key(keys_dir / "example.org/s2048.key"),
                         "mx.example.org").seal(forwarded)
    arrived = b"Authentication-Results: lists.example.com; arc=pass\r\n" + upstream
    sent = seal_forwarded(arrived, settings, sealer)
    assert sent.startswith(b"ARC-Seal: i=2; a=rsa-sha256;") and b"cv=pass" in sent[:200]
    assert arc_result(sent, resolver, settings)[0] == "pass"
    assert mail_dkim_arc_verify(sent, zone_file) == "pass"


def test_forwarding_checks_the_chain_itself_when_our_header_did_not_record_it(forwarded, settings, sealer,
                                                                             keys_dir, resolver):
    upstream = ARCSealer("example.org", "s2048", load_private_key(keys_dir / "example.org/s2048.key"),
                         "mx.example.org").seal(forwarded)
    broken = upstream.replace(b"noon", b"one")  # the body changed on the way to us
    sent = seal_forwarded(broken, settings, sealer, resolver=resolver)
    assert sent.startswith(b"ARC-Seal: i=2;") and b"cv=fail" in sent[:200]


def test_forwarding_a_chain_whose_newest_seal_says_fail_sends_it_unsealed_and_logs_why(forwarded, settings,
                                                                                      sealer, keys_dir, caplog):
    failed = ARCSealer("example.org", "s2048", load_private_key(keys_dir / "example.org/s2048.key"),
                       "mx.example.org").seal(sealer.seal(forwarded), "fail")
    assert seal_forwarded(failed, settings, sealer, arrival_cv="fail") == failed
    assert "forwarded message not ARC-sealed: the newest ARC-Seal (i=2) already says cv=fail" in caplog.text


def _forwarding_relay(tmp_path, domainkeys: str):
    from salmonserver import install_keys, write_ini
    from salmon_dkim.salmon import context as glue
    install_keys(tmp_path / "keys")
    return glue.DKIM.from_config(write_ini(tmp_path / "main.ini", tmp_path, extra=f"[DomainKeys]\n{domainkeys}\n"))


def test_a_relay_that_forwards_seals_a_strangers_message_it_does_not_sign(tmp_path, forwarded, zone_file):
    from salmon import mail
    from salmonserver import AUTHSERV_ID, SMTPSink
    dkim = _forwarding_relay(tmp_path, "ARCDomain = example.com\nARCSelector = s1")
    arrived = forwarded.replace(b"lists.example.com", AUTHSERV_ID.encode())
    request = mail.MailRequest(("192.0.2.7", 25), "alice@example.org", "bob@remote.example", arrived)
    with SMTPSink(tmp_path / "sink") as sink:
        dkim.relay("127.0.0.1", sink.port, seal=True).deliver(request, To="bob@remote.example")
        sent = sink.received("bob")
    assert sent.endswith(arrived) and sent.startswith(b"ARC-Seal: i=1;")
    assert sent.count(b"DKIM-Signature:") == 1  # the author's: a stranger's mail is sealed, never signed
    assert arc_result(sent, dkim.resolver, dkim.settings)[0] == "pass"
    assert mail_dkim_arc_verify(sent, zone_file) == "pass"


def test_deliver_seal_false_or_no_arc_key_sends_the_message_unsealed(tmp_path, forwarded, caplog):
    from salmonserver import SMTPSink
    dkim = _forwarding_relay(tmp_path, "")
    with SMTPSink(tmp_path / "sink") as sink:
        dkim.relay("127.0.0.1", sink.port, seal=True).deliver(forwarded, To="bob@remote.example",
                                                             From="alice@example.org", seal=False)
        assert b"ARC-Seal" not in sink.received("bob")
        dkim.relay("127.0.0.1", sink.port).deliver(forwarded, To="carol@remote.example", From="alice@example.org",
                                                   seal=True)
        assert b"ARC-Seal" not in sink.received("carol")
    assert "forwarded message not ARC-sealed: no ARC key" in caplog.text
