"""Submission (RFC 6409) on a running Salmon server: STARTTLS, SMTP AUTH, the credentials file, handler threads.

The server is tests/apps/dkimapp (tests/salmonserver.py): a self-signed
certificate made with cryptography, users written by ``salmon-dkim passwd``,
clients are smtplib with a TLS context trusting that certificate only.
"""
import base64
import os
import pty
import smtplib
import socket
import subprocess
import threading
import time

import pytest

from conftest import message
from salmonserver import HOST, SALMON_DKIM, passwd
from salmon_dkim.config import ConfigError, load_settings
from salmon_dkim.salmon.auth import CredentialsError, CredentialsFile, read_credentials


@pytest.fixture(scope="module")
def app(dkim_app):
    return dkim_app


def plain(user: str, password: str) -> str:
    return base64.b64encode(f"\0{user}\0{password}".encode()).decode()


# -- STARTTLS and AUTH --------------------------------------------------------------

def test_auth_is_neither_offered_nor_accepted_before_starttls(app):
    with app.submission(tls=False, login=False) as client:
        client.ehlo()
        assert client.has_extn("starttls") and not client.has_extn("auth")
        code, text = client.docmd("AUTH", "PLAIN " + plain(app.user, app.password))
    assert code == 538 and text.startswith(b"5.7.11")


def test_auth_is_offered_after_starttls_with_a_real_handshake(app):
    with app.submission(login=False) as client:
        assert client.sock.version() in ("TLSv1.2", "TLSv1.3")
        assert client.sock.getpeercert()["subjectAltName"] == (("IP Address", HOST),)
        client.ehlo()
        assert set(client.esmtp_features["auth"].split()) == {"PLAIN", "LOGIN"}
        assert not client.has_extn("starttls")


@pytest.mark.parametrize("mechanism, initial_response", [
    ("PLAIN", True), ("PLAIN", False), ("LOGIN", True), ("LOGIN", False)])
def test_login_after_starttls_and_the_handler_sees_the_user(app, mechanism, initial_response):
    local = f"login-{mechanism.lower()}-{int(initial_response)}"
    with app.submission(login=False) as client:
        client.ehlo()  # again after STARTTLS (smtplib's login() would do it)
        client.user, client.password = app.user, app.password
        method = client.auth_plain if mechanism == "PLAIN" else client.auth_login
        code, _ = client.auth(mechanism, method, initial_response_ok=initial_response)
        assert code == 235
        client.sendmail(app.user, [local + "@record.test"], message("plain.eml"))
    session = app.seen(local)["session"]
    assert (session["user"], session["tls"], session["authenticated"]) == (app.user, True, True)


def test_wrong_password_is_535_and_nothing_can_be_sent(app):
    with app.submission(login=False) as client:
        with pytest.raises(smtplib.SMTPAuthenticationError) as refused:
            client.login(app.user, "not the password")
        assert refused.value.smtp_code == 535
        assert client.mail(app.user)[0] == 530


def test_unknown_user_is_535_as_a_wrong_password(app):
    with app.submission(login=False) as client:
        with pytest.raises(smtplib.SMTPAuthenticationError) as refused:
            client.login("mallory@example.com", app.password)
    assert refused.value.smtp_code == 535


def test_plain_acting_for_another_user_is_refused(app):
    with app.submission(login=False) as client:
        client.ehlo()
        blob = base64.b64encode(f"bob@example.com\0{app.user}\0{app.password}".encode()).decode()
        assert client.docmd("AUTH", "PLAIN " + blob)[0] == 535


def test_mail_before_auth_on_submission_is_530_with_and_without_tls(app):
    for tls in (False, True):
        with app.submission(tls=tls, login=False) as client:
            client.ehlo()
            assert client.mail("alice@example.com") == (530, b"5.7.0 Authentication required")
            assert client.rcpt("bob@example.net")[0] == 530


def test_submission_without_login_delivers_nothing(app):
    with app.submission(login=False) as client:
        with pytest.raises(smtplib.SMTPSenderRefused) as refused:
            client.sendmail("alice@example.com", ["nologin@record.test"], message("plain.eml"))
    assert refused.value.smtp_code == 530 and not app.has("nologin")


def test_a_peer_in_authenticated_peers_submits_without_login(app):
    with app.submission(tls=False, login=False, source="127.0.0.3") as client:
        client.sendmail("alice@example.com", ["peer-sub@record.test"], message("plain.eml"))
    session = app.seen("peer-sub")["session"]
    assert (session["authenticated"], session["user"], session["role"]) == (True, None, "submission")


def test_three_failed_logins_close_the_connection(app):
    with app.submission(login=False) as client:
        client.ehlo()
        replies = [client.docmd("AUTH", "PLAIN " + plain(app.user, f"guess {n}")) for n in range(3)]
        assert [code for code, _ in replies] == [535, 535, 535]
        assert client.getreply()[0] == 421
        with pytest.raises(smtplib.SMTPServerDisconnected):
            client.noop()


def test_auth_is_not_offered_on_the_mx_listener(app):
    with app.smtp() as client:
        client.ehlo()
        assert not client.has_extn("auth")
        assert client.docmd("AUTH", "PLAIN " + plain(app.user, app.password))[0] == 502


# -- handler threads -------------------------------------------------------------------

def test_a_slow_handler_does_not_hold_up_the_reply_to_another_session(app):
    """wait.test's handler waits until release.test's handler has run: only handler threads let it end well."""
    outcome = {}

    def waiting_session():
        with app.smtp() as client:
            outcome["reply"] = client.sendmail("a@example.com", ["slow@wait.test"], b"Subject: wait\r\n\r\nx\r\n")

    waiting = threading.Thread(target=waiting_session)
    waiting.start()
    for _ in range(200):  # until the slow handler runs (10 s at most)
        if (app.spool / "slow.waiting").exists():
            break
        time.sleep(0.05)
    assert (app.spool / "slow.waiting").exists()
    with app.smtp() as client:
        client.sendmail("a@example.com", ["go@release.test"], b"Subject: release\r\n\r\nx\r\n")
    waiting.join(15)
    assert outcome["reply"] == {}
    assert app.stored("slow") == b"released: yes\r\n"


# -- the credentials file, changed while the server runs ---------------------------------

def test_a_user_added_changed_and_removed_counts_without_a_restart(app):
    def logs_in(password):
        with app.submission(login=False) as client:
            try:
                client.login("carol@example.com", password)
            except smtplib.SMTPAuthenticationError:
                return False
            return True

    assert not logs_in("first password")
    assert passwd(app.credentials, "carol@example.com", "first password").returncode == 0
    assert logs_in("first password")
    assert passwd(app.credentials, "carol@example.com", "second password").returncode == 0
    assert not logs_in("first password") and logs_in("second password")
    assert passwd(app.credentials, "carol@example.com", None, "--delete").returncode == 0
    assert not logs_in("second password")


def test_credentials_file_keeps_the_last_good_users_when_it_turns_malformed(tmp_path):
    path = tmp_path / "credentials"
    assert passwd(path, "dave", "pw").returncode == 0
    users = CredentialsFile(path)
    assert users("dave", "pw") and not users("dave", "other")
    with open(path, "a") as f:
        f.write("broken line without a colon\n")
    assert users("dave", "pw")  # logged, not raised: the server goes on with what it had
    with pytest.raises(CredentialsError) as malformed:
        CredentialsFile(path)
    assert str(malformed.value) == f"{path}: line 2: no ':' between user name and hash"


def test_an_authenticator_that_fails_is_a_temporary_454(tmp_path):
    from salmon_dkim.salmon import context as glue
    from salmon_dkim.salmon.receivers import SMTPReceiver

    def broken(user, password):
        raise ConnectionError("user database unreachable")

    # AUTH without TLS: this test is about the reply only
    dkim = glue.DKIM.from_config(write(tmp_path, "[Submission]\nRequireTLSForAuth = No\n"))
    receiver = SMTPReceiver("127.0.0.1", 0, authenticator=broken, dkim=dkim)
    receiver.start()
    try:
        with smtplib.SMTP(HOST, receiver.port, timeout=10) as client:
            client.ehlo()
            assert client.docmd("AUTH", "PLAIN " + plain("u", "p"))[0] == 454
    finally:
        receiver.stop()


# -- salmon-dkim passwd ------------------------------------------------------------------

def test_passwd_creates_the_file_mode_0600_and_prints_neither_password_nor_hash(tmp_path):
    path = tmp_path / "credentials"
    done = passwd(path, "erin@example.com", "s3cret pass")
    assert done.returncode == 0 and done.stdout == f"added erin@example.com to {path}\n".encode()
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    stored = path.read_text()
    assert stored.startswith("erin@example.com:$argon2id$") and "s3cret" not in stored
    assert b"s3cret" not in done.stdout + done.stderr and b"argon2" not in done.stdout + done.stderr
    assert CredentialsFile(path)("erin@example.com", "s3cret pass")


def test_passwd_changes_a_password_with_a_fresh_salt_and_keeps_other_users(tmp_path):
    path = tmp_path / "credentials"
    passwd(path, "erin", "one")
    passwd(path, "frank", "two")
    before = read_credentials(path)
    done = passwd(path, "erin", "one")
    after = read_credentials(path)
    assert done.returncode == 0 and done.stdout == f"changed the password of erin in {path}\n".encode()
    assert after["erin"] != before["erin"] and after["frank"] == before["frank"]
    assert list(after) == ["erin", "frank"]


def test_passwd_deletes_a_user_and_refuses_an_unknown_one(tmp_path):
    path = tmp_path / "credentials"
    passwd(path, "erin", "one")
    done = passwd(path, "erin", None, "--delete")
    assert done.returncode == 0 and read_credentials(path) == {}
    again = passwd(path, "erin", None, "--delete")
    assert again.returncode == 2 and again.stderr == f"error: erin is not in {path}; nothing changed\n".encode()


def test_passwd_refuses_a_symbolic_link_and_leaves_its_target_alone(tmp_path):
    target = tmp_path / "elsewhere"
    target.write_text("keep me\n")
    link = tmp_path / "credentials"
    link.symlink_to(target)
    done = passwd(link, "erin", "one")
    assert done.returncode == 2 and b"is a symbolic link" in done.stderr
    assert done.stderr.count(b"\n") == 1
    assert target.read_text() == "keep me\n" and link.is_symlink()


@pytest.mark.parametrize("user, args, stdin, expected", [
    ("a:b", ["--password-stdin"], b"pw\n", "may not contain ':'"),
    ("erin", ["--password-stdin"], b"\n", "the password is empty"),
    ("erin", [], b"", "no terminal to ask for the password on"),
    ("erin", ["--delete", "--password-stdin"], b"", "--delete takes no password"),
])
def test_passwd_bad_arguments_exit_2_with_one_line(tmp_path, user, args, stdin, expected):
    path = tmp_path / "credentials"
    done = subprocess.run([str(SALMON_DKIM), "passwd", user, "--file", str(path), *args],
                          input=stdin, capture_output=True, timeout=30)
    assert done.returncode == 2 and expected in done.stderr.decode()
    assert done.stderr.count(b"\n") == 1 and not path.exists()


def test_passwd_finds_the_file_in_the_config_relative_to_its_folder(tmp_path):
    ini = tmp_path / "salmon_dkim.ini"
    ini.write_text("[Submission]\nCredentialsFile = users/credentials\n")
    (tmp_path / "users").mkdir()
    done = subprocess.run([str(SALMON_DKIM), "passwd", "erin", "--config", str(ini), "--password-stdin"],
                          input=b"pw\n", capture_output=True, timeout=30, cwd="/")
    assert done.returncode == 0, done.stderr
    assert list(read_credentials(tmp_path / "users" / "credentials")) == ["erin"]


def test_passwd_without_a_credentials_file_or_with_a_bad_config_exits_2(tmp_path):
    ini = tmp_path / "salmon_dkim.ini"
    ini.write_text("[Submission]\nHandlerThreads = none\n")
    for args in ([], ["--config", str(ini)]):
        done = subprocess.run([str(SALMON_DKIM), "passwd", "erin", *args, "--password-stdin"],
                              input=b"pw\n", capture_output=True, timeout=30, cwd=tmp_path)
        assert done.returncode == 2 and done.stderr.count(b"\n") == 1
    assert b"[Submission] HandlerThreads" in done.stderr


def test_passwd_refuses_a_malformed_file_and_leaves_it(tmp_path):
    path = tmp_path / "credentials"
    path.write_text("erin:plaintext\n")
    done = passwd(path, "frank", "pw")
    assert done.returncode == 2
    assert done.stderr.decode() == f"error: {path}: line 1: the hash is not an Argon2 hash; " \
                                   "set the password again with salmon-dkim passwd\n"
    assert path.read_text() == "erin:plaintext\n"


def _on_a_terminal(args, answers):
    """Run passwd with a pseudo-terminal as its terminal; returns (exit status, everything it showed)."""
    controller, terminal = pty.openpty()
    process = subprocess.Popen([str(SALMON_DKIM), "passwd", *args], stdin=terminal, stdout=terminal,
                               stderr=terminal, start_new_session=True)
    os.close(terminal)
    shown = b""
    for answered, answer in enumerate(answers):
        while shown.count(b"Password") <= answered:  # getpass turns echo off before it prompts
            shown += os.read(controller, 1024)
        os.write(controller, answer)
    status = process.wait(30)
    try:
        while True:
            chunk = os.read(controller, 1024)
            if not chunk:
                break
            shown += chunk
    except OSError:  # the terminal closed with the process
        pass
    os.close(controller)
    return status, shown


def test_passwd_asks_twice_on_a_terminal_without_echo(tmp_path):
    path = tmp_path / "credentials"
    status, shown = _on_a_terminal(["erin", "--file", str(path)], [b"typed secret\n", b"typed secret\n"])
    assert status == 0 and shown.count(b"Password") == 2 and b"typed secret" not in shown
    assert CredentialsFile(path)("erin", "typed secret")


def test_passwd_on_a_terminal_refuses_two_different_passwords(tmp_path):
    path = tmp_path / "credentials"
    status, shown = _on_a_terminal(["erin", "--file", str(path)], [b"one\n", b"two\n"])
    assert status == 2 and b"the two passwords differ" in shown and not path.exists()


# -- [Submission] in the INI file and when building the receivers ------------------------------

def write(tmp_path, text):
    path = tmp_path / "salmon_dkim.ini"
    path.write_text(text)
    return path


def test_submission_settings_take_paths_from_the_files_folder(tmp_path):
    settings = load_settings(write(tmp_path, "[Submission]\nCredentialsFile = credentials\nHandlerThreads = 3\n"))
    assert settings.submission.credentials_file == tmp_path / "credentials"
    assert settings.submission.handler_threads == 3 and settings.submission.require_tls_for_auth is True


@pytest.mark.parametrize("text, expected", [
    ("[Submission]\nTLSCertificate = cert.pem\n", "[Submission] TLSCertificate and TLSKey go together"),
    ("[Submission]\nTLSCertificate = cert.pem\nTLSKey = key.pem\n", "[Submission] TLSCertificate: "),
    ("[Submission]\nHandlerThreads = 0\n", "[Submission] HandlerThreads: '0' is too small; the least allowed is 1"),
    ("[Submission]\nRequireTLSForAuth = sometimes\n",
     "[Submission] RequireTLSForAuth: 'sometimes' is not valid here; expected Yes or No"),
])
def test_each_submission_mistake_is_one_line_naming_file_option_and_problem(tmp_path, text, expected):
    with pytest.raises(ConfigError) as bad:
        load_settings(write(tmp_path, text))
    assert str(bad.value).startswith(str(tmp_path / "salmon_dkim.ini")) and expected in str(bad.value)
    assert "\n" not in str(bad.value)


def test_a_tls_key_readable_by_others_or_not_matching_is_refused(tmp_path, app):
    (tmp_path / "cert.pem").write_bytes(app.certificate.read_bytes())
    key = tmp_path / "key.pem"
    key.write_bytes((app.certificate.parent / "key.pem").read_bytes())
    key.chmod(0o644)
    ini = write(tmp_path, "[Submission]\nTLSCertificate = cert.pem\nTLSKey = key.pem\n")
    with pytest.raises(ConfigError, match=r"TLSKey: .* is readable by others \(mode 0644\); run chmod 600"):
        load_settings(ini)
    key.chmod(0o600)
    assert load_settings(ini).submission.tls_key == key
    key.write_text("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
    with pytest.raises(ConfigError, match=r"TLSKey: .* cannot be used together"):
        load_settings(ini)


def test_a_malformed_credentials_file_stops_the_submission_receiver_at_boot(tmp_path):
    from salmon_dkim.salmon import context as glue
    from salmon_dkim.salmon.receivers import SMTPReceiver

    (tmp_path / "credentials").write_text("erin\n")
    dkim = glue.DKIM.from_config(write(tmp_path, "[Submission]\nCredentialsFile = credentials\n"))
    with pytest.raises(ConfigError) as bad:
        SMTPReceiver("127.0.0.1", 0, role="submission", dkim=dkim)
    assert str(bad.value) == (f"{tmp_path / 'salmon_dkim.ini'}: [Submission] CredentialsFile: "
                              f"{tmp_path / 'credentials'}: line 1: no ':' between user name and hash")


def test_a_port_in_use_fails_when_the_receiver_is_built(tmp_path):
    from salmon_dkim.salmon.receivers import SMTPReceiver

    from salmon_dkim.config import ConfigError

    with socket.create_server((HOST, 0)) as taken:
        with pytest.raises(ConfigError, match="cannot listen on .*; is another server running there"):
            SMTPReceiver(HOST, taken.getsockname()[1])
