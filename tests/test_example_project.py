"""The example project, end to end: run.py started as a subprocess on free ports, driven over SMTP.

Each run works in a copy of example_project/ (keys, zone, maildir, sink and
list members are made there on first start), so the tests never touch the
developer's own.
"""
import importlib.util
import json
import re
import shutil
import signal
import smtplib
import stat
import subprocess
import sys
import time
from pathlib import Path

from typing import Optional

import pytest

from peers import mail_dkim_arc_verify, mail_dkim_verify_many, opendkim_verify
from salmonserver import HOST, free_port, wait_for_port
from salmon_dkim.core.arc import ARCSealer
from salmon_dkim.config import load_settings
from salmon_dkim.dns.resolver import ZoneResolver
from salmon_dkim.core.keys import load_private_key
from salmon_dkim.core.verifier import Verifier

PROJECT = Path(__file__).resolve().parent.parent / "example_project"
STATE = ("keys", "dns.zone", "credentials", "maildir", "sink", "lists", "run", "*.log", "*.jsonl", "__pycache__")
LIST = "lunch@lists.example.com"


class RunningExample:
    """run.py in ``folder`` on free ports; ``stop()`` sends SIGTERM and returns the exit status."""

    def __init__(self, folder: Path, *args: str) -> None:
        self.folder = folder
        self.mx, self.submission, self.sink = free_port(), free_port(), free_port()
        self.log = folder / "run.out"
        with open(self.log, "wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "run.py", "--mx-port", str(self.mx), "--submission-port",
                 str(self.submission), "--sink-port", str(self.sink), *args],
                cwd=folder, stdout=out, stderr=subprocess.STDOUT)
        for port in (self.sink, self.mx, self.submission):
            wait_for_port(port, timeout=30, process=self.process, log=self.log)
        self.send_module = _load(folder / "send.py")
        self.zone = folder / "dns.zone"

    def send(self, port: int, sender: str, to: str, data: bytes) -> None:
        with smtplib.SMTP(HOST, port, timeout=30) as smtp:
            if port == self.submission:
                smtp.login(*self.send_module.SUBMISSION_LOGIN)
            smtp.sendmail(sender, [to], data)

    def compose(self, sender: str, to: str, subject: str, body: str = "Hello\n", sign: bool = False) -> bytes:
        data = self.send_module.compose(sender, to, subject, body)
        return self.send_module.sign_as_sender(data, "config/salmon_dkim.ini") if sign else data

    def mail(self, sender: str, to: str, subject: str = "hi", sign: Optional[bool] = None) -> None:
        """Mail to the mx port; signed by default when the sender is an example.com user (its DMARC
        record says p=reject: unsigned mail claiming it is refused, as at any receiver)."""
        sign = sender.endswith("@example.com") if sign is None else sign
        self.send(self.mx, sender, to, self.compose(sender, to, subject, sign=sign))

    def sunk(self, recipient: str):
        """What the smarthost got for ``recipient``, oldest first."""
        files = sorted((self.folder / "sink").glob(f"*-{recipient}.eml"))
        return [f.read_bytes() for f in files]

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=15)


def _load(path: Path):
    spec = importlib.util.spec_from_file_location(f"send_{abs(hash(path))}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def start_copy(folder: Path, *args: str, **ini_changes) -> RunningExample:
    shutil.copytree(PROJECT, folder, ignore=shutil.ignore_patterns(*STATE))
    ini = folder / "config" / "salmon_dkim.ini"
    text = ini.read_text()
    for option, value in ini_changes.items():
        text, found = re.subn(rf"(?m)^{option} = .*$", f"{option} = {value}", text)
        assert found == 1, option
    ini.write_text(text)
    return RunningExample(folder, *args)


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    running = start_copy(tmp_path_factory.mktemp("example") / "example_project")
    yield running
    running.stop()


@pytest.fixture(scope="module")
def verifier(example):
    settings = load_settings(example.folder / "config" / "salmon_dkim.ini")
    return Verifier(settings, ZoneResolver(example.zone))


def dkim(verifier, data: bytes):
    return [(r.domain, r.result) for r in verifier.verify(data).results]


@pytest.fixture(scope="module")
def lunch_post(example):
    """alice, bob and carol on lunch@; alice posts, signed by example.com."""
    for member in ("alice@example.com", "bob@example.net", "carol@example.org"):
        example.mail(member, "lunch-subscribe@lists.example.com")
    example.mail("alice@example.com", LIST, "Lunch on Friday", sign=True)
    return {m: example.sunk(m)[-1] for m in ("alice@example.com", "bob@example.net", "carol@example.org")}


def test_first_start_makes_private_keys_and_the_zone(example):
    for domain in ("example.com", "lists.example.com"):
        key = example.folder / "keys" / domain / "s1.key"
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
        assert f"s1._domainkey.{domain}. IN TXT" in example.zone.read_text()


def test_post_reaches_every_member_with_the_authors_signature_stripped(lunch_post):
    for copy in lunch_post.values():
        assert b"Subject: [lunch] Lunch on Friday" in copy
        assert copy.count(b"DKIM-Signature:") == 1
        assert b"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=lists.example.com;" in copy


def test_post_is_signed_by_the_list_for_us_and_for_mail_dkim(lunch_post, example, verifier):
    copies = list(lunch_post.values())
    assert [dkim(verifier, c) for c in copies] == [[("lists.example.com", "pass")]] * 3
    peer = mail_dkim_verify_many(copies, example.zone)
    assert [[s.result for s in sigs] for sigs in peer] == [["pass"]] * 3


def test_post_carries_an_arc_chain_mail_dkim_accepts(lunch_post, example):
    copy = lunch_post["bob@example.net"]
    assert mail_dkim_arc_verify(copy, example.zone) == "pass"
    assert b"ARC-Authentication-Results: i=1; mx.example.com;\r\n dkim=pass header.d=example.com" in copy


def test_welcome_is_signed_by_the_list(lunch_post, example, verifier):
    welcome = example.sunk("bob@example.net")[0]
    assert b"Subject: Welcome to lunch@lists.example.com" in welcome
    assert dkim(verifier, welcome) == [("lists.example.com", "pass")]


def test_unsubscribed_member_gets_no_more_posts(example):
    for member in ("bob@example.net", "carol@example.org"):
        example.mail(member, "tea-subscribe@lists.example.com")
    example.mail("carol@example.org", "tea-unsubscribe@lists.example.com")
    assert b"Subject: Goodbye from tea@lists.example.com" in example.sunk("carol@example.org")[-1]
    example.mail("bob@example.net", "tea@lists.example.com", "Tea at four")
    assert b"Subject: [tea] Tea at four" in example.sunk("bob@example.net")[-1]
    assert not any(b"[tea] Tea at four" in m for m in example.sunk("carol@example.org"))


def test_post_from_a_non_member_is_refused(example):
    with pytest.raises(smtplib.SMTPDataError) as refused:
        example.mail("mallory@example.net", "coffee@lists.example.com", "spam")
    assert refused.value.smtp_code == 550 and b"Only members may post" in refused.value.smtp_error


def test_inbound_mail_is_verified_and_kept_in_the_maildir(example):
    example.mail("alice@example.com", "bob@example.com", "For the inbox", sign=True)
    stored = [p.read_bytes() for p in (example.folder / "maildir" / "new").iterdir()]
    assert any(m.startswith(b"Authentication-Results: mx.example.com;\r\n dkim=pass header.d=example.com")
               and b"Subject: For the inbox" in m for m in stored)


def test_mail_for_other_domains_is_refused_on_the_mx_port(example):
    with pytest.raises(smtplib.SMTPDataError) as refused:
        example.mail("alice@example.com", "dave@example.net")
    assert refused.value.smtp_code == 550 and b"Relaying denied" in refused.value.smtp_error


def test_submission_is_signed_and_relayed_to_the_smarthost(example, verifier):
    data = example.compose("alice@example.com", "dave@example.net", "Hello Dave")
    example.send(example.submission, "alice@example.com", "dave@example.net", data)
    relayed = example.sunk("dave@example.net")[-1]
    assert relayed.endswith(data)
    assert dkim(verifier, relayed) == [("example.com", "pass")]
    assert opendkim_verify(relayed, example.zone) == "pass"


def test_strip_sigs_no_keeps_the_authors_signature(tmp_path):
    running = start_copy(tmp_path / "example_project", StripSigsFromListMail="No")
    try:
        running.mail("alice@example.com", "lunch-subscribe@lists.example.com")
        running.mail("alice@example.com", LIST, "Lunch on Friday", sign=True)
        copy = running.sunk("alice@example.com")[-1]
    finally:
        status = running.stop()
    domains = re.findall(rb"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=([a-z.]+);", copy)
    assert domains == [b"lists.example.com", b"example.com"]
    assert status == 0  # SIGTERM stops it cleanly


def test_post_sealed_upstream_gets_the_next_arc_set(example, verifier):
    example.mail("alice@example.com", "chain-subscribe@lists.example.com")
    post = example.compose("alice@example.com", "chain@lists.example.com", "Forwarded", sign=True)
    upstream = ARCSealer("example.com", "s1", load_private_key(example.folder / "keys/example.com/s1.key"),
                         "mx.upstream.example")
    arrived = upstream.seal(b"Authentication-Results: mx.upstream.example; dkim=pass header.d=example.com\r\n"
                            + post)
    example.send(example.mx, "alice@example.com", "chain@lists.example.com", arrived)
    copy = example.sunk("alice@example.com")[-1]
    assert b"ARC-Seal: i=2; a=rsa-sha256;" in copy and b"cv=pass; d=lists.example.com;" in copy
    assert mail_dkim_arc_verify(copy, example.zone) == "pass"


def test_news_key_is_pending_until_run_py_publishes_it_then_signs_without_a_restart(tmp_path):
    running = start_copy(tmp_path / "example_project", "--publish-after", "3", PendingKeyCheckSeconds="1")
    try:
        news = running.compose("news@news.example.com", "dave@example.net", "News")
        running.send(running.submission, "alice@example.com", "dave@example.net", news)
        pending = running.sunk("dave@example.net")[-1]
        keys = [Path(sys.executable).with_name("salmon-dkim"), "keys", "--config", "config/salmon_dkim.ini", "--json"]
        listed = subprocess.run(keys, cwd=running.folder, capture_output=True, text=True)
        before = next(k for k in json.loads(listed.stdout) if k["domain"] == "news.example.com")
        deadline = time.monotonic() + 30
        while b"Published the DKIM record of news.example.com" not in running.log.read_bytes() or not any(
                e.get("event") == "key" and e.get("d") == "news.example.com" and e.get("state") == "active"
                for e in _activity(running)):
            assert time.monotonic() < deadline, running.log.read_text()
            time.sleep(0.2)
        running.send(running.submission, "alice@example.com", "dave@example.net", news)
        active = running.sunk("dave@example.net")[-1]
    finally:
        running.stop()
    assert (before["state"], before["record"]) == ("pending", "missing")
    verifier = Verifier(load_settings(running.folder / "config" / "salmon_dkim.ini"), ZoneResolver(running.zone))
    assert dkim(verifier, pending) == [("example.com", "pass")]
    assert dkim(verifier, active) == [("news.example.com", "pass")]


def _activity(running: RunningExample) -> list:
    path = running.folder / "logs" / "dkim-activity.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
