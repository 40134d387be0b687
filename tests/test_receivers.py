"""Receivers: exact bytes and the session, through a running Salmon server (tests/apps/dkimapp)."""
import smtplib
import socket

import pytest

from conftest import message
from salmonserver import HOST

DOTS = (b"From: alice@example.com\r\nTo: bob@example.net\r\nSubject: dots\r\n\r\n"
        b".one leading dot\r\n..two leading dots\r\n.\r\n...\r\nend. \r\n \t trailing space \r\n"
        b"caf\xc3\xa9 8-bit\r\n")


@pytest.fixture(scope="module")
def app(dkim_app):
    return dkim_app


def talk(port, lines):
    """Raw protocol: send each line (b"" sends nothing), return one reply per line (last line of multi-line ones)."""
    with socket.create_connection((HOST, port), timeout=10) as s:
        f = s.makefile("rb")
        replies = [f.readline()]
        for line in lines:
            s.sendall(line)
            reply = f.readline()
            while reply[3:4] == b"-":
                reply = f.readline()
            replies.append(reply)
        return replies


@pytest.mark.parametrize("name", ["plain.eml", "utf8-folded.eml", "multipart.eml", "empty-body.eml", "dots"])
def test_smtp_hands_salmon_the_exact_bytes_sent(app, name):
    sent = DOTS if name == "dots" else message(name)
    local = "smtp-" + name.replace(".", "-")
    with app.smtp() as client:
        client.sendmail("alice@example.com", [local + "@record.test"], sent)
    assert app.stored(local) == sent


@pytest.mark.parametrize("name", ["plain.eml", "dots"])
def test_lmtp_hands_salmon_the_exact_bytes_sent_with_dot_stuffing_undone(app, name):
    sent = DOTS if name == "dots" else message(name)
    local = "lmtp-" + name.replace(".", "-")
    with app.lmtp() as client:
        client.sendmail("alice@example.com", [local + "@record.test"], sent)
    assert app.stored(local) == sent


def test_lmtp_on_a_unix_socket_hands_salmon_the_exact_bytes(app):
    with app.lmtp(unix=True, helo="postfix.test") as client:
        client.sendmail("alice@example.com", ["lmtp-unix@record.test"], DOTS)
    assert app.stored("lmtp-unix") == DOTS
    assert app.seen("lmtp-unix")["session"] == {
        "peer_ip": None, "helo": "postfix.test", "authenticated": False, "role": "lmtp",
        "user": None, "tls": False, "mail_from": "alice@example.com"}


def test_first_line_stuffed_and_empty_message_over_raw_smtp(app):
    replies = talk(app.smtp_port, [b"EHLO raw.test\r\n", b"MAIL FROM:<a@example.com>\r\n",
                                   b"RCPT TO:<raw-first@record.test>\r\n", b"DATA\r\n",
                                   b"..first\r\nSubject: x\r\n.\r\n",
                                   b"MAIL FROM:<a@example.com>\r\n", b"RCPT TO:<raw-empty@record.test>\r\n",
                                   b"DATA\r\n", b".\r\n", b"QUIT\r\n"])
    assert [r[:3] for r in replies] == [b"220", b"250", b"250", b"250", b"354", b"250",
                                        b"250", b"250", b"354", b"250", b"221"]
    assert app.stored("raw-first") == b".first\r\nSubject: x\r\n"
    assert app.stored("raw-empty") == b""


def test_lmtp_replies_once_per_recipient_and_delivers_to_each(app):
    replies = talk(app.lmtp_port, [b"LHLO raw.test\r\n", b"MAIL FROM:<a@example.com>\r\n",
                                   b"RCPT TO:<lmtp-a@record.test>\r\n", b"RCPT TO:<lmtp-b@record.test>\r\n",
                                   b"DATA\r\n", b"Subject: two\r\n\r\n..x\r\n.\r\n", b""])
    assert [r[:3] for r in replies] == [b"220", b"250", b"250", b"250", b"250", b"354", b"250", b"250"]
    assert app.stored("lmtp-a") == app.stored("lmtp-b") == b"Subject: two\r\n\r\n.x\r\n"


def test_lmtp_refuses_helo(app):
    assert talk(app.lmtp_port, [b"HELO raw.test\r\n"])[1].startswith(b"500")


def test_smtp_refuses_a_second_recipient_as_salmon_does(app):
    with app.smtp() as client:
        client.ehlo()
        client.mail("a@example.com")
        assert client.rcpt("one@record.test")[0] == 250
        assert client.rcpt("two@record.test")[0] == 451


def test_session_on_the_mx_listener(app):
    with app.smtp(helo="mta.sender.test") as client:
        client.sendmail("alice@example.com", ["session-mx@record.test"], message("plain.eml"))
    assert app.seen("session-mx")["session"] == {
        "peer_ip": "127.0.0.1", "helo": "mta.sender.test", "authenticated": False, "role": "mx",
        "user": None, "tls": False, "mail_from": "alice@example.com"}


def test_submission_session_is_authenticated_by_the_login_and_says_who_over_tls(app):
    with app.submission(helo="laptop.test") as client:
        client.sendmail("alice@example.com", ["session-sub@record.test"], message("plain.eml"))
    assert app.seen("session-sub")["session"] == {
        "peer_ip": "127.0.0.1", "helo": "laptop.test", "authenticated": True, "role": "submission",
        "user": app.user, "tls": True, "mail_from": "alice@example.com"}


def test_lmtp_session_carries_the_lhlo_name(app):
    with app.lmtp(helo="front.test") as client:
        client.sendmail("alice@example.com", ["session-lmtp@record.test"], message("plain.eml"))
    session = app.seen("session-lmtp")["session"]
    assert (session["helo"], session["role"], session["authenticated"]) == ("front.test", "lmtp", False)


def test_peer_in_authenticated_peers_counts_as_authenticated(app):
    with app.smtp(source="127.0.0.3") as client:
        client.sendmail("alice@example.com", ["session-peer@record.test"], message("plain.eml"))
    assert app.seen("session-peer")["session"]["authenticated"] is True
    assert app.seen("session-peer")["session"]["peer_ip"] == "127.0.0.3"


def test_trusted_header_authenticates_only_from_a_trusted_peer(app):
    stamped = b"X-Authenticated-User: alice\r\n" + message("plain.eml")
    with app.smtp(source="127.0.0.2") as client:
        client.sendmail("alice@example.com", ["header-trusted@record.test"], stamped)
    with app.smtp(source="127.0.0.1") as client:
        client.sendmail("alice@example.com", ["header-forged@record.test"], stamped)
    assert app.seen("header-trusted")["session"]["authenticated"] is True
    assert app.seen("header-forged")["session"]["authenticated"] is False


@pytest.mark.parametrize("data, stored", [
    (b"..first\r\nSubject: x\r\n", b".first\r\nSubject: x\r\n"),    # a stuffed first line
    (b"", b""),                                                       # an empty message
    (b"Subject: x\r\n\r\n...\r\n..\r\n.x\r\n", b"Subject: x\r\n\r\n..\r\n.\r\nx\r\n"),  # one dot off each
    (b"Subject: x\r\n\r\na\n.b\r\n", b"Subject: x\r\n\r\na\n.b\r\n"),  # a dot after a bare LF starts no line
])
def test_dot_stuffing_shapes_over_raw_lmtp(app, data, stored):
    replies = talk(app.lmtp_port, [b"LHLO raw.test\r\n", b"MAIL FROM:<a@example.com>\r\n",
                                   b"RCPT TO:<lmtp-shape@record.test>\r\n", b"DATA\r\n", data + b".\r\n"])
    assert [r[:3] for r in replies] == [b"220", b"250", b"250", b"250", b"354", b"250"]
    assert app.stored("lmtp-shape") == stored


def test_null_sender_is_an_empty_mail_from_in_the_session(app):
    replies = talk(app.smtp_port, [b"EHLO raw.test\r\n", b"MAIL FROM:<>\r\n", b"RCPT TO:<bounce@record.test>\r\n",
                                   b"DATA\r\n", b"From: MAILER-DAEMON@example.net\r\n\r\nbounce\r\n.\r\n"])
    assert replies[-1].startswith(b"250")
    assert app.seen("bounce")["session"]["mail_from"] == ""


def _without_signal_handlers(receivers):
    """Start in the test process without leaving our SIGTERM/SIGHUP handlers behind."""
    import signal
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        receivers.start()
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)


def test_receivers_serve_salmon_receivers_too():
    from salmon.server import SMTPReceiver as SalmonSMTPReceiver
    from salmon_dkim.salmon.receivers import Receivers, SMTPReceiver

    ours = SMTPReceiver("127.0.0.1", 0)
    stock = SalmonSMTPReceiver("127.0.0.1", 0)
    group = Receivers(ours, stock)
    try:
        _without_signal_handlers(group)
        assert ours.poller.is_alive() and stock.poller.is_alive()
        for port in (ours.port, stock.socket.getsockname()[1]):
            with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
                assert client.noop()[0] == 250
    finally:
        group.stop()
        stock.del_channel()  # an empty socket map ends the asyncore thread
        stock.socket.close()
        stock.poller.join(5)
    ours.poller.join(5)
    assert not ours.poller.is_alive() and not stock.poller.is_alive()


def test_receivers_stop_lets_a_running_handler_finish_and_tells_idle_sessions():
    from salmon_dkim.salmon.receivers import Receivers, SMTPReceiver

    group = Receivers(SMTPReceiver("127.0.0.1", 0))
    _without_signal_handlers(group)
    (receiver,) = group
    with socket.create_connection((HOST, receiver.port), timeout=10) as idle:
        banner = idle.makefile("rb").readline()
        group.stop()
        assert idle.makefile("rb").readline().startswith(b"421 4.3.2")
    assert banner.startswith(b"220") and not receiver.poller.is_alive()
    with pytest.raises(OSError):
        socket.create_connection((HOST, receiver.port), timeout=2)


def test_the_host_name_is_looked_up_once_per_receiver_not_per_connection(monkeypatch):
    from salmon_dkim.salmon.receivers import SMTPReceiver

    calls = []
    monkeypatch.setattr(socket, "getfqdn", lambda name="": calls.append(name) or "mx.example.net")
    receiver = SMTPReceiver("127.0.0.1", 0)
    receiver.start()
    try:
        banners = [talk(receiver.port, [b"QUIT\r\n"])[0] for _ in range(3)]
    finally:
        receiver.stop()
    assert banners == [b"220 mx.example.net ESMTP\r\n"] * 3
    assert calls == [""]


def test_lmtp_unix_socket_left_by_a_stopped_server_is_replaced_a_live_one_is_not(tmp_path):
    from salmon_dkim.config import ConfigError
    from salmon_dkim.salmon.receivers import LMTPReceiver

    path = str(tmp_path / "lmtp.sock")
    LMTPReceiver(socket=path).close()  # stopped: the socket file stays behind
    again = LMTPReceiver(socket=path)
    try:
        with pytest.raises(ConfigError, match="cannot listen on .*lmtp.sock"):  # a live one is not taken over
            LMTPReceiver(socket=path)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.connect(path)
    finally:
        again.close()


def test_a_reply_text_with_8bit_characters_is_sent_as_one_ascii_line(app):
    replies = talk(app.smtp_port, [b"EHLO raw.test\r\n", b"MAIL FROM:<a@example.com>\r\n",
                                   "RCPT TO:<jos\u00e9@refuse.test>\r\n".encode(), b"DATA\r\n",
                                   b"Subject: x\r\n\r\nx\r\n.\r\n", b"NOOP\r\n"])
    assert replies[5].startswith(b"550 5.1.1 <jos") and replies[5].endswith(b"@refuse.test>: no such user\r\n")
    assert replies[5].isascii() and replies[6].startswith(b"250")


def test_lmtp_refuses_too_much_data_once_per_recipient():
    from salmon_dkim.salmon.receivers import LMTPReceiver

    small = LMTPReceiver("127.0.0.1", 0, data_size_limit=100)
    try:
        small.start()
        replies = talk(small.port, [b"LHLO raw.test\r\n", b"MAIL FROM:<a@example.com>\r\n",
                                    b"RCPT TO:<big-a@record.test>\r\n", b"RCPT TO:<big-b@record.test>\r\n",
                                    b"DATA\r\n", b"Subject: big\r\n\r\n" + b"x" * 200 + b"\r\n.\r\n", b"",
                                    b"NOOP\r\n"])
    finally:
        small.stop()
    assert [r[:3] for r in replies] == [b"220", b"250", b"250", b"250", b"250", b"354", b"552", b"552", b"250"]
    assert replies[6].startswith(b"552 5.3.4 ")


def test_smtp_refuses_too_much_data_with_552_and_goes_on():
    from salmon_dkim.salmon.receivers import SMTPReceiver

    small = SMTPReceiver("127.0.0.1", 0, data_size_limit=100)
    try:
        small.start()
        replies = talk(small.port, [b"EHLO raw.test\r\n", b"MAIL FROM:<a@example.com>\r\n",
                                    b"RCPT TO:<big@record.test>\r\n", b"DATA\r\n",
                                    b"Subject: big\r\n\r\n" + b"x" * 200 + b"\r\n.\r\n", b"NOOP\r\n"])
    finally:
        small.stop()
    assert replies[5].startswith(b"552 5.3.4 ") and replies[6].startswith(b"250")


def test_lmtp_says_for_each_recipient_what_became_of_it(app):
    replies = talk(app.lmtp_port, [b"LHLO raw.test\r\n", b"MAIL FROM:<a@example.com>\r\n",
                                   b"RCPT TO:<mixed-a@record.test>\r\n", b"RCPT TO:<nobody@refuse.test>\r\n",
                                   b"RCPT TO:<mixed-b@record.test>\r\n", b"DATA\r\n",
                                   b"Subject: mixed\r\n\r\nx\r\n.\r\n", b"", b""])
    assert [r[:3] for r in replies[-3:]] == [b"250", b"550", b"250"]
    assert replies[-2] == b"550 5.1.1 <nobody@refuse.test>: no such user\r\n"
    assert app.has("mixed-a") and app.has("mixed-b")


def test_a_handler_bug_is_salmons_250_and_the_message_kept_as_undeliverable(app):
    sent = b"Subject: bug\r\nMessage-ID: <handler-bug@example.com>\r\n\r\nkeep me\r\n"
    with app.smtp() as client:
        assert client.sendmail("a@example.com", ["bug@crash.test"], sent) == {}
    kept = [p.read_bytes() for p in (app.workdir / "undeliverable" / "new").iterdir()]
    assert any(b"<handler-bug@example.com>" in m and b"keep me" in m for m in kept)


def test_salmon_start_stops_cleanly_on_sigterm(tmp_path):
    from salmonserver import start_dkim_app

    with start_dkim_app(tmp_path, live_dns=False) as running:
        with running.lmtp(unix=True) as client:
            client.sendmail("a@example.com", ["before-stop@record.test"], b"Subject: x\r\n\r\nx\r\n")
        running.server.stop()  # SIGTERM, as salmon's own daemon would get it
        assert running.server.process.returncode == 0
        assert not running.lmtp_socket.exists()
    assert "signal 15: stopping the receivers" in (tmp_path / "salmon.log").read_text()
