"""Signing in Salmon: @dkim_sign and SigningRelay, end to end into an SMTP sink on 127.0.0.1."""
import re
import smtplib
from types import SimpleNamespace

import pytest

import peers
from conftest import message
from salmonserver import ZONE, SMTPSink, install_keys, write_ini
from salmon import mail
from salmon.server import SMTPError
from salmon_dkim.salmon import context as glue
from salmon_dkim.config import ConfigError, load_settings
from salmon_dkim.salmon.decorators import dkim_sign
from salmon_dkim.dns.resolver import ZoneResolver
from salmon_dkim.salmon.relay import SigningRelay
from salmon_dkim.core.results import Session
from salmon_dkim.core.signer import SigningError
from salmon_dkim.core.verifier import Verifier

AUTHENTICATED = Session(peer_ip="127.0.0.1", helo="laptop.test", authenticated=True, role="submission",
                        user="alice@example.com", tls=True, mail_from="alice@example.com")


def submitted(sender, rcpt, data) -> mail.MailRequest:
    """A message as the submission listener hands it over after SMTP AUTH."""
    request = mail.MailRequest(("127.0.0.1", 1), sender, rcpt, data)
    request.session = AUTHENTICATED if sender else Session(**{**AUTHENTICATED.__dict__, "mail_from": ""})
    return request


@pytest.fixture(scope="module")
def app(dkim_app):
    return dkim_app


@pytest.fixture(scope="module")
def verifier(app):
    return Verifier(load_settings(app.configs["main"]), ZoneResolver(ZONE))


def submit(app, rcpt, data, sender="alice@example.com"):
    with app.submission() as client:
        return client.sendmail(sender, [rcpt], data)


def split_signature(received: bytes, sent: bytes) -> bytes:
    """What was put above the submitted bytes; fails unless they arrived unchanged below it."""
    assert received.endswith(sent)
    added = received[:len(received) - len(sent)]
    assert re.fullmatch(rb"DKIM-Signature:[^\r]*\r\n(?:[ \t][^\r]*\r\n)*", added), added
    return added


def assert_verifies(verifier, data: bytes, domain="example.com"):
    results = verifier.verify(data).results
    assert [(r.result, r.domain) for r in results] == [("pass", domain)], results
    if peers.have_opendkim():
        assert peers.opendkim_verify(data, ZONE) == "pass"
    if peers.have_mail_dkim():
        assert peers.mail_dkim_verify(data, ZONE) == ["pass"]


def test_submitted_message_arrives_signed_verifiable_and_byte_for_byte_below_the_signature(app, verifier):
    sent = message("plain.eml")
    assert b"\r\n.a line that starts with a dot\r\n" in sent
    submit(app, "plain@remote.example", sent)
    received = app.sink.received("plain")
    assert b"d=example.com" in split_signature(received, sent)
    assert_verifies(verifier, received)
    assert app.sink.envelope("plain") == {"from": "alice@example.com", "to": "plain@remote.example"}


@pytest.mark.parametrize("name", ["utf8-folded.eml", "multipart.eml", "empty-body.eml"])
def test_other_messages_arrive_signed_and_unchanged(app, verifier, name):
    local = "msg-" + name.split(".")[0]
    submit(app, local + "@remote.example", message(name))
    received = app.sink.received(local)
    split_signature(received, message(name))
    assert verifier.verify(received).passed


def test_lf_only_submission_is_signed_and_sent_with_crlf(app, verifier):
    sent = message("lf-only.eml")
    assert b"\r\n" not in sent
    submit(app, "lf@remote.example", sent)
    received = app.sink.received("lf")
    # smtplib ends bytes that do not end in CRLF with one: the receiver keeps what it got
    split_signature(received, sent.replace(b"\n", b"\r\n") + b"\r\n")
    assert_verifies(verifier, received)


def test_other_domain_is_signed_with_its_own_key(app, verifier):
    sent = message("plain.eml").replace(b"alice@example.com", b"olga@example.org")
    submit(app, "org@remote.example", sent, sender="olga@example.org")
    assert b"d=example.org; s=s2048" in split_signature(app.sink.received("org"), sent)
    assert_verifies(verifier, app.sink.received("org"), domain="example.org")


def test_domain_without_a_key_goes_out_unsigned_and_the_log_says_why(app):
    sent = message("plain.eml").replace(b"alice@example.com", b"carol@nokey.example").replace(
        b"<lunch-1@example.com>", b"<nokey-1@nokey.example>")
    submit(app, "nokey@remote.example", sent, sender="carol@nokey.example")
    assert app.sink.received("nokey") == sent
    unsigned = [e for e in app.activity_entries()
                if e["event"] == "unsigned" and e.get("message_id") == "<nokey-1@nokey.example>"]
    assert len(unsigned) == 1 and "nokey.example" in unsigned[0]["reason"]


def test_signing_relay_signs_a_received_message_as_received(app, verifier):
    sent = message("plain.eml")
    submit(app, "relayed@relay.example", sent)
    split_signature(app.sink.received("relayed"), sent)
    assert_verifies(verifier, app.sink.received("relayed"))


def test_signing_relay_sends_a_change_made_through_the_mailrequest_signed(app, verifier):
    submit(app, "listed@list.example", message("plain.eml"))
    received = app.sink.received("listed")
    assert b"\r\nX-Mailing-List: tests@list.example\r\n" in received
    assert_verifies(verifier, received)


def test_mailresponse_gets_date_and_message_id_then_is_signed(app, verifier):
    submit(app, "replied@reply.example", message("plain.eml"))
    received = app.sink.received("replied")
    headers = received.split(b"\r\n\r\n", 1)[0]
    assert re.search(rb"\r\nDate: [^\r]+ GMT\r\n", headers)
    assert re.search(rb"\r\nMessage-I[dD]: <[^>]+@example\.com>\r\n", headers)
    signed_names = re.search(rb"[;\s]h=([^;]+)", headers).group(1).lower()
    assert b"date" in signed_names and b"message-id" in signed_names
    assert_verifies(verifier, received)


def test_unauthenticated_session_cannot_relay_through_the_outbound_route(app):
    with app.smtp() as client:
        with pytest.raises(smtplib.SMTPDataError) as refused:
            client.sendmail("alice@example.com", ["spam@remote.example"], message("plain.eml"))
    assert refused.value.smtp_code == 550
    assert not app.sink.has("spam")


class FailingSigner:
    def sign(self, message, **kwargs):
        raise SigningError("example.com/s1.key: cannot be read")


def test_relay_raises_on_signing_error_and_sends_nothing(tmp_path):
    with SMTPSink(tmp_path / "sink") as sink:
        relay = SigningRelay("127.0.0.1", sink.port, signer=FailingSigner())
        with pytest.raises(SigningError):
            relay.deliver(mail.MailResponse(To="nobody@remote.example", From="alice@example.com",
                                            Subject="x", Body="y"))
        assert list((tmp_path / "sink").iterdir()) == []


def test_relay_signing_failure_in_a_handler_is_a_451_for_the_client_not_salmons_250(tmp_path):
    from salmon.routing import Router

    request = submitted("alice@example.com", "bob@remote.example", message("plain.eml"))
    with SMTPSink(tmp_path / "sink") as sink:
        relay = SigningRelay("127.0.0.1", sink.port, signer=FailingSigner())
        with pytest.raises(SMTPError) as failed:  # Salmon passes SMTPError on, swallows anything else
            Router.call_safely(lambda msg: relay.deliver(msg), request, {})
        assert failed.value.code == 451 and isinstance(failed.value, SigningError)
        assert list((tmp_path / "sink").iterdir()) == []


def test_dkim_sign_failure_answers_451_and_skips_the_handler():
    called = []
    handler = dkim_sign(SimpleNamespace(signer=FailingSigner(), settings=load_settings()))(
        lambda message: called.append(1))
    request = submitted("alice@example.com", "bob@remote.example", message("plain.eml"))
    with pytest.raises(SMTPError) as failed:
        handler(request)
    assert failed.value.code == 451 and called == []


def test_boot_stops_on_an_unusable_signing_key_naming_it(tmp_path):
    install_keys(tmp_path / "keys")
    (tmp_path / "keys" / "example.org" / "s2048.key").chmod(0o644)
    with pytest.raises(ConfigError) as refused:
        glue.DKIM.from_config(write_ini(tmp_path / "main.ini", tmp_path))
    assert "example.org" in str(refused.value) and "chmod 600" in str(refused.value)


def test_boot_builds_one_context_that_bare_decorators_find(tmp_path, monkeypatch):
    install_keys(tmp_path / "keys")
    monkeypatch.setattr(glue, "_installed", None)
    dkim = glue.install(write_ini(tmp_path / "main.ini", tmp_path))
    assert glue.current() is dkim and dkim.signer.keys is dkim.keys
    assert isinstance(dkim.relay(port=2525), SigningRelay) and dkim.relay().signer is dkim.signer


def test_relay_delivers_bytes_signed_as_given(tmp_path):
    install_keys(tmp_path / "keys")
    dkim = glue.DKIM.from_config(write_ini(tmp_path / "main.ini", tmp_path))
    sent = message("plain.eml")
    with SMTPSink(tmp_path / "sink") as sink:
        dkim.relay("127.0.0.1", sink.port).deliver(sent, To="raw@remote.example", From="alice@example.com")
        split_signature(sink.received("raw"), sent)
        assert dkim.verifier.verify(sink.received("raw")).passed


def test_relay_sends_a_final_message_unsigned_and_unchanged_when_asked(tmp_path):
    install_keys(tmp_path / "keys")
    dkim = glue.DKIM.from_config(write_ini(tmp_path / "main.ini", tmp_path))
    final = message("plain.eml")
    with SMTPSink(tmp_path / "sink") as sink:
        dkim.relay("127.0.0.1", sink.port).deliver(final, To="raw@remote.example", From="alice@example.com",
                                                   sign=False)
        assert sink.received("raw") == final


def test_relay_signs_again_when_data_changed_after_dkim_sign(tmp_path):
    """replace_data (or message.Data = ...) after @dkim_sign: the stale signature must not go out alone."""
    from salmon_dkim.salmon.decorators import replace_data

    install_keys(tmp_path / "keys")
    dkim = glue.DKIM.from_config(write_ini(tmp_path / "main.ini", tmp_path))
    request = submitted("alice@example.com", "changed@remote.example", message("plain.eml"))
    with SMTPSink(tmp_path / "sink") as sink:
        relay = dkim.relay("127.0.0.1", sink.port)

        @dkim_sign(dkim)
        def handler(msg):
            replace_data(msg, msg.Data.replace(b"Shall we meet at noon?", b"Shall we meet at one?"))
            relay.deliver(msg)

        handler(request)
        received = sink.received("changed")
    assert b"Shall we meet at one?" in received
    assert dkim.verifier.verify(received).passed


def test_dkim_sign_gives_the_signer_a_bare_sender_address(tmp_path):
    """A null envelope sender makes Salmon's MailRequest.From the From header ("Name <address>")."""
    install_keys(tmp_path / "keys")
    ini = write_ini(tmp_path / "main.ini", tmp_path)
    ini.write_text(ini.read_text() + "[SenderSelectors]\nalice@example.com = ed1\n")
    dkim = glue.DKIM.from_config(ini)
    request = submitted(None, "bob@remote.example", message("plain.eml"))
    request.session = Session(**{**AUTHENTICATED.__dict__, "mail_from": "", "user": None})
    assert request.From == "Alice Example <alice@example.com>"
    dkim_sign(dkim)(lambda msg: None)(request)
    assert [(s.domain, s.selector) for s in request.dkim_signed.signatures] == [("example.com", "ed1")]


# -- list mail through the relay: marked by the route, or recognised by List-Id ----------------

def list_relay_context(tmp_path, domainkeys: str):
    install_keys(tmp_path / "keys")
    ini = write_ini(tmp_path / "main.ini", tmp_path)
    ini.write_text(ini.read_text() + f"[DomainKeys]\n{domainkeys}\n")
    return glue.DKIM.from_config(ini)


def signed_post(dkim, list_id: bool = True) -> bytes:
    post = (b"List-Id: Lunch <lunch.example.org>\r\n" if list_id else b"") + message("plain.eml")
    return dkim.signer.sign(post).message  # signed by the author's domain, example.com


def dkim_domains(dkim, data: bytes):
    return [(r.domain, r.result) for r in dkim.verifier.verify(data).results]


def test_relay_recognises_list_mail_by_list_id_strips_signs_as_the_list_and_seals(tmp_path):
    from salmon_dkim.core.arc import arc_result
    dkim = list_relay_context(tmp_path, "ARCSeal = Yes")
    with SMTPSink(tmp_path / "sink") as sink:
        dkim.relay("127.0.0.1", sink.port).deliver(signed_post(dkim), To="member@remote.example",
                                                   From="lunch-bounces@example.org")
        sent = sink.received("member")
    assert dkim_domains(dkim, sent) == [("example.org", "pass")]
    assert arc_result(sent, dkim.resolver, dkim.settings)[0] == "pass"


def test_a_list_route_marks_list_mail_without_list_id(tmp_path):
    dkim = list_relay_context(tmp_path, "")
    with SMTPSink(tmp_path / "sink") as sink:
        dkim.relay("127.0.0.1", sink.port).deliver(signed_post(dkim, list_id=False), To="member@remote.example",
                                                   From="lunch-bounces@example.org", list_domain="example.org")
        sent = sink.received("member")
    assert dkim_domains(dkim, sent) == [("example.org", "pass")]
    assert b"ARC-Seal" not in sent  # ARCSeal is off by default


def test_list_relay_keeps_the_authors_signature_when_strip_is_off(tmp_path):
    dkim = list_relay_context(tmp_path, "StripSigsFromListMail = No")
    with SMTPSink(tmp_path / "sink") as sink:
        relay = dkim.relay("127.0.0.1", sink.port, list_domain="example.org")
        relay.deliver(signed_post(dkim), To="member@remote.example", From="lunch-bounces@example.org")
        sent = sink.received("member")
    assert dkim_domains(dkim, sent) == [("example.org", "pass"), ("example.com", "pass")]


def test_mail_without_list_id_or_mark_is_signed_as_its_author(tmp_path):
    dkim = list_relay_context(tmp_path, "")
    with SMTPSink(tmp_path / "sink") as sink:
        dkim.relay("127.0.0.1", sink.port).deliver(message("plain.eml"), To="bob@remote.example",
                                                   From="alice@example.com")
        assert dkim_domains(dkim, sink.received("bob")) == [("example.com", "pass")]


# -- only what earned it is signed ------------------------------------------------------------

def test_a_strangers_mail_on_the_mx_listener_is_never_signed_through_the_readme_handlers(app):
    """OUTBOUND with @dkim_sign on (address)@(host) runs for mail arriving on mx too."""
    with app.smtp() as client:  # no AUTH: a stranger claiming our domain in From
        client.sendmail("alice@example.com", ["stranger@unguarded.example"], message("plain.eml"))
    received = app.sink.received("stranger")
    assert b"DKIM-Signature" not in received and received == message("plain.eml")
    [logged] = [e for e in app.activity_entries() if e.get("event") == "unsigned"
                and "without authentication" in e.get("reason", "")][-1:]
    assert logged["peer"] == "127.0.0.1"


@pytest.mark.parametrize("sign_for, signed", [("authenticated", False), ("trusted", True), ("any", True)])
def test_sign_for_widens_signing_explicitly(tmp_path, sign_for, signed):
    install_keys(tmp_path / "keys")
    ini = write_ini(tmp_path / "main.ini", tmp_path)
    ini.write_text(ini.read_text().replace("[Verification]", f"[Signing]\nSignFor = {sign_for}\n[Verification]", 1)
                   .replace("[Signing]\nKeysDir", "[Signing]\nKeysDir", 1))
    ini.write_text(_merge_signing(ini.read_text()))
    dkim = glue.DKIM.from_config(ini)
    local = mail.MailRequest(("127.0.0.2", 1), "alice@example.com", "x@remote.example", message("plain.eml"))
    dkim_sign(dkim)(lambda msg: None)(local)  # 127.0.0.2 is in the test INI's TrustedIPs
    assert bool(local.dkim_signed.signatures) is signed
    stranger = mail.MailRequest(("192.0.2.7", 1), "alice@example.com", "x@remote.example", message("plain.eml"))
    dkim_sign(dkim)(lambda msg: None)(stranger)
    assert bool(stranger.dkim_signed.signatures) is (sign_for == "any")


def _merge_signing(text: str) -> str:
    """One [Signing] section: the test INI has one already."""
    first = text.index("[Signing]")
    second = text.index("[Signing]", first + 1)
    extra = text[second + len("[Signing]\n"):text.index("[Verification]", second)]
    text = text[:second] + text[text.index("[Verification]", second):]
    return text[:first + len("[Signing]\n")] + extra + text[first + len("[Signing]\n"):]


def test_the_relay_does_not_sign_a_strangers_message_handed_on_by_a_handler(tmp_path):
    install_keys(tmp_path / "keys")
    dkim = glue.DKIM.from_config(write_ini(tmp_path / "main.ini", tmp_path))
    stranger = mail.MailRequest(("192.0.2.7", 25), "alice@example.com", "bob@remote.example", message("plain.eml"))
    listed = mail.MailRequest(("192.0.2.7", 25), "list@example.com", "bob@remote.example",
                              b"List-Id: <x.example.com>\r\n" + message("plain.eml"))
    with SMTPSink(tmp_path / "sink") as sink:
        dkim.relay("127.0.0.1", sink.port).deliver(stranger)
        assert sink.received("bob") == message("plain.eml")
        dkim.relay("127.0.0.1", sink.port).deliver(listed)  # a List-Id does not make example.com ours to sign
        assert b"DKIM-Signature" not in sink.received("bob")
        composed = mail.MailResponse(To="carol@remote.example", From="robot@example.com", Subject="x", Body="y")
        dkim.relay("127.0.0.1", sink.port).deliver(composed)  # what the app writes itself is signed
        assert dkim_domains(dkim, sink.received("carol")) == [("example.com", "pass")]


def test_a_post_delivered_to_each_member_is_prepared_once(tmp_path):
    dkim = list_relay_context(tmp_path, "ARCSeal = Yes")
    calls = []
    sign = dkim.signer.sign
    dkim.signer.sign = lambda *args, **kwargs: calls.append(1) or sign(*args, **kwargs)
    post = signed_post(dkim)
    calls.clear()
    with SMTPSink(tmp_path / "sink") as sink:
        relay = dkim.relay("127.0.0.1", sink.port, list_domain="example.org")
        for member in ("m1", "m2", "m3"):
            relay.deliver(post, To=f"{member}@remote.example", From="lunch-bounces@example.org")
        copies = [sink.received(m) for m in ("m1", "m2", "m3")]
    assert len(calls) == 1 and copies[0] == copies[1] == copies[2]
    assert dkim_domains(dkim, copies[0]) == [("example.org", "pass")]
