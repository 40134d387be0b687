"""The README's "Use it in your own Salmon app", followed word for word in a fresh `salmon gen` app.

Every block marked ``<!-- readme-test: ... -->`` is used as it is written: ``run`` blocks are
run line by line, ``ini`` blocks set options in the INI file, ``write`` blocks become files,
``python`` blocks are run.  Only what a reader must change anyway is changed: the path of the
salmon-dkim checkout, and the ports (free ones, so tests can run side by side).  Then the app
is started with ``salmon start`` and sent unsigned, signed, broken and authenticated mail.
"""
import mailbox
import os
import re
import smtplib
import ssl
import subprocess
from pathlib import Path

import pytest
from configobj import ConfigObj

from salmonserver import REPO, SALMON, SalmonServer, SMTPSink, free_port

README = REPO / "README.md"
BIN = SALMON.parent
BLOCK = re.compile(r"<!-- readme-test: (\w+)(?: (\S+))? -->\n *```\w*\n(.*?) *```", re.S)
PASSPHRASE = "a long passphrase"


def blocks(*kinds: str):
    """The marked blocks (of ``kinds``, or the own-app ones), in README order, indentation removed."""
    found = [(kind, target, re.sub(r"(?m)^  ", "", body)) for kind, target, body in BLOCK.findall(README.read_text())]
    wanted = kinds or ("run", "ini", "write", "python")
    return [b for b in found if b[0] in wanted]


def run(command: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}")
    return subprocess.run(["bash", "-ec", command], cwd=cwd, env=env, capture_output=True, timeout=120)


def merge_ini(path: Path, text: str) -> None:
    """Set the options the README gives, keeping the rest of the file (as a reader editing it would)."""
    current = ConfigObj(str(path), interpolation=False, list_values=False)
    current.merge(ConfigObj(text.splitlines(), interpolation=False, list_values=False))
    current.write()


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    """The app built from the README, running, with an SMTP sink as its relay."""
    root = tmp_path_factory.mktemp("readme")
    assert run(f"{SALMON} gen myapp", root).returncode == 0
    folder = root / "myapp"
    mx, submission = free_port(), free_port()
    found = blocks()
    assert [k for k, _, _ in found] == ["run", "ini", "write", "write", "python"], "README blocks changed"
    for kind, target, body in found:
        body = body.replace("/path/to/salmon-dkim", str(REPO))
        body = body.replace("8823", str(mx)).replace("8587", str(submission))
        if kind == "run":
            done = run(body, folder)
            assert done.returncode == 0, done.stderr.decode()
        elif kind == "ini":
            merge_ini(folder / target, body)
        elif kind == "write":
            (folder / target).write_text(body)
    with SMTPSink(root / "sink") as sink:
        settings = folder / "config" / "settings.py"
        settings.write_text(re.sub(r"'port': \d+", f"'port': {sink.port}", settings.read_text(), count=1))
        server = SalmonServer(folder, root, [mx, submission]).start()
        try:
            yield {"folder": folder, "mx": mx, "submission": submission, "sink": sink, "server": server,
                   "python": [b for k, _, b in found if k == "python"][0]}
        finally:
            server.stop()


def inbox(app):
    """The messages INBOX kept, oldest first."""
    box = mailbox.Maildir(app["folder"] / "run" / "maildir")
    return [box.get_bytes(key) for key in sorted(box.keys(), key=lambda k: box.get_file(k).name)]


def last_delivered(app) -> bytes:
    box = mailbox.Maildir(app["folder"] / "run" / "maildir")
    newest = max(box.keys(), key=lambda k: os.path.getmtime(os.path.join(box._path, box._lookup(k))))
    return box.get_bytes(newest)


def our_header(data: bytes) -> str:
    first = data.split(b"\r\n\r\n")[0].decode()
    match = re.match(r"Authentication-Results: mx\.example\.com;(.*?)\r\n(?! )", first + "\r\nX", re.S)
    assert match, first
    return " ".join(match.group(1).split())


MESSAGE = (b"From: Alice <alice@example.com>\r\nTo: Dave <dave@example.net>\r\nSubject: Lunch\r\n"
           b"Date: Thu, 26 Nov 2026 12:00:00 +0000\r\nMessage-ID: <readme-1@example.com>\r\n\r\n"
           b"Shall we meet at noon?\r\n")


def submit(app, data: bytes = MESSAGE, to: str = "dave@example.net") -> None:
    context = ssl.create_default_context(cafile=str(app["folder"] / "config" / "tls.pem"))
    context.check_hostname = False
    with smtplib.SMTP("127.0.0.1", app["submission"], timeout=30) as client:
        client.starttls(context=context)
        client.login("alice@example.com", PASSPHRASE)
        client.sendmail("alice@example.com", [to], data)


def to_mx(app, data: bytes, rcpt: str = "bob@example.com", sender: str = "carol@example.org") -> None:
    with smtplib.SMTP("127.0.0.1", app["mx"], timeout=30) as client:
        client.sendmail(sender, [rcpt], data)


def test_unsigned_mail_lands_in_the_maildir_with_our_header(app):
    to_mx(app, MESSAGE.replace(b"alice@example.com", b"carol@example.org"))
    assert our_header(last_delivered(app)).startswith("dkim=none")


def test_a_logged_in_user_gets_mail_signed_and_relayed(app):
    submit(app)
    sent = app["sink"].received("dave")
    assert sent.startswith(b"DKIM-Signature: v=1; a=rsa-sha256;") and b"d=example.com; s=s2026;" in sent
    assert sent.endswith(MESSAGE)


def test_signed_mail_verifies_on_the_mx_port_and_broken_mail_fails(app):
    submit(app)
    signed = app["sink"].received("dave")
    to_mx(app, signed, sender="alice@example.com")
    assert our_header(last_delivered(app)).startswith("dkim=pass header.d=example.com header.s=s2026")
    to_mx(app, signed.replace(b"noon", b"one"), sender="alice@example.com")
    assert "dkim=fail reason=\"body hash mismatch" in our_header(last_delivered(app))


def test_a_stranger_cannot_relay_or_get_a_signature(app):
    with smtplib.SMTP("127.0.0.1", app["mx"], timeout=30) as client:
        with pytest.raises(smtplib.SMTPDataError) as refused:
            client.sendmail("alice@example.com", ["dave@example.net"], MESSAGE)
    assert refused.value.smtp_code == 550
    with smtplib.SMTP("127.0.0.1", app["submission"], timeout=30) as client:
        with pytest.raises(smtplib.SMTPSenderRefused) as refused:
            client.sendmail("alice@example.com", ["dave@example.net"], MESSAGE)
    assert refused.value.smtp_code == 530


def test_salmon_dkim_log_lines_reach_the_apps_log(app):
    to_mx(app, MESSAGE.replace(b"alice@example.com", b"carol@example.org"), rcpt="nobody@example.com")
    assert " - salmon_dkim." in (app["folder"] / "logs" / "salmon.log").read_text()


def test_the_core_snippet_runs_as_written(app):
    done = subprocess.run([str(BIN / "python"), "-c", app["python"]], cwd=app["folder"], capture_output=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr.decode()
    assert "('example.com', 'pass'" in done.stdout.decode()


def test_a_mistake_in_the_ini_is_one_line_and_its_fix_works_as_printed(app, tmp_path):
    copy = tmp_path / "copy"
    subprocess.run(["cp", "-a", str(app["folder"]), str(copy)], check=True)
    ini = copy / "config" / "salmon_dkim.ini"
    ini.write_text(ini.read_text().replace("Selectors = s2026", "Selectors = s2027"))
    started = run(f"{SALMON} start --no-daemon --force --pid run/other.pid", copy)
    lines = started.stderr.decode().strip().splitlines()
    assert started.returncode == 2 and len(lines) == 1 and "Traceback" not in lines[0], lines
    fix = re.search(r"create it with: (salmon-dkim keygen .*)$", lines[0]).group(1)
    assert run(fix, copy).returncode == 0
    ini.write_text(ini.read_text().replace("s2026.dns", "s2027.dns"))
    checked = run("salmon-dkim check-dns example.com s2027 --config config/salmon_dkim.ini --keys-dir config/keys", copy)
    assert checked.returncode == 0, checked.stdout + checked.stderr


# -- the example project's section, run against the running example -----------------------------

@pytest.fixture(scope="module")
def example(tmp_path_factory):
    """The example project running in a folder laid out like the repository (../.venv beside it)."""
    from test_example_project import start_copy  # noqa: PLC0415
    root = tmp_path_factory.mktemp("repo")
    (root / ".venv").symlink_to(BIN.parent)
    running = start_copy(root / "example_project")
    yield root, running
    running.stop()


def test_the_example_projects_commands_run_as_written(example):
    root, running = example
    env = {"EXAMPLE_MX_PORT": str(running.mx), "EXAMPLE_SUBMISSION_PORT": str(running.submission)}
    for _, _, body in blocks("example"):
        if body.startswith("cd example_project"):
            commands = body
        else:
            commands = "cd example_project\n" + body.replace("8823", str(running.mx))
        done = subprocess.run(["bash", "-ec", commands], cwd=root, capture_output=True, timeout=120,
                              env=dict(os.environ, **env))
        assert done.returncode == 0, (commands, done.stdout.decode(), done.stderr.decode())
    got = [f.read_bytes() for f in (root / "example_project" / "sink").glob("*-bob@example.net.eml")]
    [post] = [data for data in got if b"Subject: [lunch]" in data]
    assert b'From: alice via lunch <lunch@lists.example.com>' in post and b"d=lists.example.com" in post


def test_the_inbox_header_shown_is_the_one_written(example):
    root, running = example
    [(_, _, shown)] = blocks("inbox")
    box = mailbox.Maildir(root / "example_project" / "maildir")
    first = [box.get_bytes(k) for k in box.keys() if b"Subject: Hello Bob" in box.get_bytes(k)][0]
    head = first.split(b"\r\n\r\n")[0].decode().replace("\r\n", "\n")
    # header.b= is quoted when the signature's first 8 characters hold a "/" (not an RFC 2045 token character)
    pattern = re.escape(shown.strip()).replace("z6CPqsec", '(?:[A-Za-z0-9+]{8}|"[A-Za-z0-9+/]{8}")')
    assert re.match(pattern, head), head
