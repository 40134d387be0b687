"""@dkim_verify end to end: a running Salmon server (tests/apps/dkimapp) driven over SMTP and LMTP."""
import smtplib
import threading
import time
from types import SimpleNamespace

import pytest

import peers
from conftest import KEYS, message
from salmon import mail
from salmon.routing import Router, route, salmon_setting, stateless
from salmon.server import SMTPError
from salmon_dkim.core import authres as authresults
from salmon_dkim.salmon import context as glue
from salmon_dkim.activity import ActivityLog
from salmon_dkim.config import load_settings
from salmon_dkim.salmon.decorators import dkim_sign, dkim_verify
from salmon_dkim.core.signer import Signer


@pytest.fixture(scope="module")
def app(dkim_app):
    return dkim_app


@pytest.fixture(scope="module")
def signer(app):
    return Signer(load_settings(app.configs["main"]))


def signed(signer, name="plain.eml"):
    result = signer.sign(message(name))
    assert result.signatures, result.unsigned_reason
    return result.message


def tampered(data: bytes) -> bytes:
    return data.replace(b"Shall we meet at noon?", b"Shall we meet at one?")


def headers_of(data: bytes) -> list:
    head = data.split(b"\r\n\r\n", 1)[0].decode()
    return [line for line in head.replace("\r\n ", " ").replace("\r\n\t", " ").split("\r\n")]


def send(client, local_at_domain, data, sender="alice@example.com"):
    return client.sendmail(sender, [local_at_domain], data)


def test_pass_gets_our_authentication_results_on_top_and_the_score(app, signer):
    sent = signed(signer)
    with app.smtp() as client:
        send(client, "pass@inbound.test", sent)
    stored = app.stored("pass")
    first, second = headers_of(stored)[:2]
    assert first.startswith(f"Authentication-Results: {app.authserv_id}; dkim=pass header.d=example.com")
    assert "header.s=s1" in first and "header.a=rsa-sha256" in first
    assert second == "X-DKIM-Score: -1"
    assert stored.endswith(sent)  # everything below our headers is byte for byte as received
    assert app.seen("pass")["dkim"][0]["result"] == "pass"
    assert app.seen("pass")["outcome"]["action"] == "accept"


def test_the_parsed_message_agrees_with_data(app, signer):
    with app.smtp() as client:
        send(client, "agree@inbound.test", signed(signer))
    as_str = (app.spool / "agree.str.eml").read_text()
    assert "Authentication-Results: " + app.authserv_id in as_str
    assert "X-Dkim-Score: -1" in as_str or "X-DKIM-Score: -1" in as_str


def test_signature_by_mail_dkim_passes_over_lmtp_with_a_dot_line(app, tmp_path):
    if not peers.have_mail_dkim():
        pytest.skip("Mail::DKIM is not installed")
    sent = peers.mail_dkim_sign(message("plain.eml"), "example.com", "s1", KEYS / "example.com.rsa2048.key")
    assert b"\r\n.a line that starts with a dot\r\n" in sent
    with app.lmtp() as client:
        send(client, "lmtp-dot@inbound.test", sent)
    assert app.seen("lmtp-dot")["dkim"][0]["result"] == "pass"
    assert app.stored("lmtp-dot").endswith(sent)


def test_forged_authentication_results_with_our_id_is_removed_others_kept(app, signer):
    forged = (f"Authentication-Results: {app.authserv_id}; dkim=pass header.d=bank.example\r\n"
              f"Authentication-Results: other.example; spf=pass\r\n").encode()
    with app.smtp() as client:
        send(client, "forged@inbound.test", forged + signed(signer))
    stored = app.stored("forged")
    ours = [h for h in headers_of(stored) if h.startswith(f"Authentication-Results: {app.authserv_id}")]
    assert len(ours) == 1 and "bank.example" not in ours[0]
    assert b"Authentication-Results: other.example; spf=pass\r\n" in stored


def test_incoming_score_header_is_replaced(app):
    with app.smtp() as client:
        send(client, "score@inbound.test", b"X-DKIM-Score: -100\r\n" + message("plain.eml"))
    scores = [h for h in headers_of(app.stored("score")) if h.lower().startswith("x-dkim-score")]
    assert scores == ["X-DKIM-Score: 0"]


def test_unsigned_message_gets_dkim_none(app):
    with app.smtp() as client:
        send(client, "unsigned@inbound.test", message("plain.eml"))
    assert headers_of(app.stored("unsigned"))[0] == (
        f"Authentication-Results: {app.authserv_id}; dkim=none; spf=none smtp.mailfrom=alice@example.com;"
        " dmarc=none header.from=example.com")


def test_failed_signature_is_accepted_with_dkim_fail_and_fail_score_when_not_rejecting(app, signer):
    with app.smtp() as client:
        send(client, "fail-accept@inbound.test", tampered(signed(signer)))
    first, second = headers_of(app.stored("fail-accept"))[:2]
    assert "dkim=fail" in first and "header.d=example.com" in first
    assert second == "X-DKIM-Score: 2.5"


def test_reject_on_fail_answers_550_and_keeps_the_connection(app, signer):
    with app.smtp() as client:
        with pytest.raises(smtplib.SMTPDataError) as refused:
            send(client, "fail@reject.test", tampered(signed(signer)))
        assert refused.value.smtp_code == 550
        assert b"5.7.20" in refused.value.smtp_error
        assert client.noop()[0] == 250
    assert not app.has("fail")


def test_reject_with_close_connection_closes_it_after_the_550(app, signer):
    with app.smtp() as client:
        with pytest.raises(smtplib.SMTPDataError) as refused:
            send(client, "fail@close.test", tampered(signed(signer)))
        assert refused.value.smtp_code == 550
        with pytest.raises(smtplib.SMTPServerDisconnected):
            client.noop()


def test_reject_with_close_connection_over_lmtp(app, signer):
    with app.lmtp() as client:
        with pytest.raises(smtplib.SMTPDataError) as refused:
            send(client, "lmtp-fail@close.test", tampered(signed(signer)))
        assert refused.value.smtp_code == 550
        with pytest.raises(smtplib.SMTPServerDisconnected):
            client.noop()


def test_passing_message_on_the_rejecting_route_is_delivered(app, signer):
    with app.smtp() as client:
        send(client, "good@close.test", signed(signer))
        assert client.noop()[0] == 250
    assert app.seen("good")["dkim"][0]["result"] == "pass"


def test_keys_from_a_real_dns_server_over_live_dns(app, signer):
    if "live" not in app.configs:
        pytest.skip("dnsmasq is not installed")
    with app.smtp() as client:
        send(client, "live@live.test", signed(signer))
        send(client, "live-again@live.test", tampered(signed(signer)))
    assert app.seen("live")["dkim"][0]["result"] == "pass"
    assert app.seen("live-again")["dkim"][0]["result"] == "fail"


def test_dns_that_never_answers_gives_451_and_other_sessions_are_served(app, signer):
    outcome = {}

    def stalled_session():
        with app.smtp() as client:
            try:
                send(client, "stalled@blackhole.test", signed(signer))
            except smtplib.SMTPDataError as exc:
                outcome["code"], outcome["text"] = exc.smtp_code, exc.smtp_error
            outcome["done"] = time.monotonic()

    stalled = threading.Thread(target=stalled_session)
    stalled.start()
    time.sleep(0.2)  # the server is now waiting for DNS
    with app.smtp() as client:
        send(client, "meanwhile@inbound.test", message("plain.eml"))
    served = time.monotonic()
    stalled.join(10)
    assert outcome["code"] == 451 and b"4.4.3" in outcome["text"]
    assert app.has("meanwhile") and not app.has("stalled")
    # Router.call_lock: handlers without @nolocking run one at a time, so served once the lookup gave up
    assert served >= outcome["done"] - 0.05
    with app.smtp() as client:
        assert send(client, "after@inbound.test", message("plain.eml")) == {}


def test_internal_error_answers_451_not_250(app, signer):
    with app.smtp() as client:
        with pytest.raises(smtplib.SMTPDataError) as refused:
            send(client, "bug@broken.test", signed(signer))
        assert refused.value.smtp_code == 451 and refused.value.smtp_error.startswith(b"4.3.0")
        assert client.noop()[0] == 250
    assert not app.has("bug")
    assert not (app.workdir / "undeliverable" / "new").exists() or not any(
        (app.workdir / "undeliverable" / "new").iterdir())


def test_internal_error_with_accept_action_delivers_with_dkim_temperror(app, signer):
    with app.smtp() as client:
        send(client, "bug-accepted@broken-accept.test", signed(signer))
    first = headers_of(app.stored("bug-accepted"))[0]
    assert first == f'Authentication-Results: {app.authserv_id}; dkim=temperror reason="internal error"'


def test_internal_error_with_accept_action_replaces_an_incoming_score_header(app, signer):
    with app.smtp() as client:
        send(client, "bug-scored@broken-accept.test", b"X-DKIM-Score: -100\r\n" + signed(signer))
    headers = headers_of(app.stored("bug-scored"))
    assert headers[0].startswith(f"Authentication-Results: {app.authserv_id}; dkim=temperror")
    assert [h for h in headers if h.lower().startswith("x-dkim-score")] == ["X-DKIM-Score: 0"]


def test_trusted_ip_is_not_verified_and_the_message_untouched(app, signer):
    sent = signed(signer)
    with app.smtp(source="127.0.0.2") as client:
        send(client, "trusted@inbound.test", sent)
    ours = (f"Authentication-Results: {app.authserv_id};\r\n"
            " (not verified: trusted IP 127.0.0.2) none\r\n").encode()
    assert app.stored("trusted") == ours + sent  # says why, so the plugin is not mistaken for doing nothing
    assert app.seen("trusted")["dkim"] is None
    assert app.seen("trusted")["outcome"]["action"] == "skip"


def test_authenticated_submission_listener_is_not_verified(app, signer):
    with app.submission() as client:
        send(client, "authed@reject.test", tampered(signed(signer)))
    assert app.seen("authed")["outcome"] == {"action": "skip", "code": None, "text": "", "score": 0.0,
                                             "close_connection": False, "reason": "authenticated session",
                                             "quarantine": False}


def test_forged_authentication_results_from_an_authenticated_session_is_removed(app, signer):
    """Not verified (authenticated), but from outside the trust boundary: headers claiming to be ours are forged."""
    forged = (f"Authentication-Results: {app.authserv_id}; dkim=pass header.d=bank.example\r\n"
              "X-DKIM-Score: -100\r\n").encode()
    sent = signed(signer)
    with app.submission() as client:
        send(client, "authed-forged@inbound.test", forged + sent)
    assert app.seen("authed-forged")["outcome"]["action"] == "skip"
    ours = (f"Authentication-Results: {app.authserv_id};\r\n auth=pass smtp.auth={app.user}\r\n").encode()
    assert app.stored("authed-forged") == ours + sent


def test_authentication_results_from_a_trusted_peer_is_kept(app, signer):
    """A front MTA inside the trust boundary (TrustedIPs) may have written our id itself."""
    stamped = f"Authentication-Results: {app.authserv_id}; dkim=pass header.d=example.com\r\n".encode()
    sent = stamped + signed(signer)
    with app.smtp(source="127.0.0.2") as client:
        send(client, "trusted-stamped@inbound.test", sent)
    assert app.stored("trusted-stamped") == sent


def test_state_handlers_keep_their_state_through_dkim_verify(app):
    with app.smtp() as client:
        send(client, "fsm@state.test", message("plain.eml"), sender="state-user@example.com")
        send(client, "fsm@state.test", message("plain.eml"), sender="state-user@example.com")
    assert app.has("fsm") and app.has("fsm-second")


def test_activity_log_has_one_verify_line_with_peer_action_and_score(app, signer):
    sent = signed(signer).replace(b"<lunch-1@example.com>", b"<activity-1@example.com>")
    with app.smtp() as client:
        with pytest.raises(smtplib.SMTPDataError):
            send(client, "logged@reject.test", sent)  # the Message-ID is signed: fail, 550
    lines = [e for e in app.activity_entries() if e.get("message_id") == "<activity-1@example.com>"]
    assert len(lines) == 1
    assert lines[0]["event"] == "verify" and lines[0]["peer"] == "127.0.0.1"
    assert lines[0]["action"] == "reject" and lines[0]["score"] == 2.5
    assert lines[0]["results"][0]["result"] == "fail"


def test_decorators_keep_the_handler_and_stack_with_route_and_stateless():
    def handler(message, local=None):
        """Handles."""

    pattern = "^(?P<local>.+)@decorated\\.test$"
    try:
        for decorator in (dkim_verify, dkim_verify(), dkim_sign, dkim_sign()):
            routed = route("(local)@decorated\\.test", local=".+")(stateless(decorator(handler)))
            assert routed.__name__ == "handler" and routed.__doc__ == "Handles."
            assert salmon_setting(routed, "stateless") is True
            assert salmon_setting(routed, "format") == pattern
    finally:  # this process's Router is shared with other tests
        Router.REGISTERED.pop(pattern, None)
        Router.ORDER[:] = [p for p in Router.ORDER if p != pattern]


def test_authentication_results_helper_matches_what_the_server_wrote(app, signer):
    with app.smtp() as client:
        send(client, "parsed@inbound.test", signed(signer))
    header = app.stored("parsed").split(b"\r\nX-DKIM-Score")[0].decode() + "\r\n"
    server, clauses = authresults.parse(header)
    assert server == app.authserv_id
    assert [(r.method, r.result) for r in clauses] == [("dkim", "pass"), ("spf", "none"), ("dmarc", "none")]


class ExplodingVerifier:
    def verify(self, data):
        raise MemoryError("simulated")


def outside_request(local="x"):
    return mail.MailRequest(("192.0.2.1", 25), "alice@example.com", f"{local}@inbound.test",
                            message("plain.eml"))


def test_verifier_raising_is_a_451_by_default_and_the_handler_does_not_run(tmp_path):
    settings = load_settings(None)
    context = SimpleNamespace(settings=settings, verifier=ExplodingVerifier(), activity=ActivityLog(None))
    called = []
    handler = dkim_verify(context)(lambda message: called.append(message))
    with pytest.raises(SMTPError) as failed:
        handler(outside_request())
    assert (failed.value.code, called) == (451, [])


def test_bare_decorator_without_an_installed_context_answers_451(monkeypatch):
    monkeypatch.setattr(glue, "_installed", None)
    handler = dkim_verify(lambda message: None)
    with pytest.raises(SMTPError) as failed:
        handler(outside_request())
    assert failed.value.code == 451
