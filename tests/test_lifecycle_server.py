"""The key lifecycle in running Salmon servers: records added and removed in dnsmasq while they run.

Each test starts the test app (tests/apps/dkimapp) with its own INI: example.com
with key s1, the shared key sh1 of shared.test, DNS from a dnsmasq on
127.0.0.1.  Mail to LOCAL@remote.example from 127.0.0.3 (an authenticated
peer) is signed by ``@dkim_sign`` and relayed to the sink, where the test reads it.
"""
import contextlib
import datetime
import email.utils
import json
import smtplib
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, List, Optional

import pytest
from conftest import KEYS, private_copy
from dnsserver import DNSMASQ, start_dns_server
from peers import have_mail_dkim, mail_dkim_verify_many
from salmonserver import APPS, HOST, SALMON_DKIM, BlackHoleDNS, SalmonServer, SMTPSink, free_port

from salmon_dkim.core.keys import key_name, load_private_key, zone_line
from salmon_dkim.core.lifecycle import STATE_FILE
from salmon_dkim.core.message import Message
from salmon_dkim.core.tags import parse_tags

pytestmark = pytest.mark.skipif(DNSMASQ is None, reason="dnsmasq not installed")

TODAY = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d")
LOCAL = ["example.com", "shared.test"]

INI = """\
[Signing]
KeysDir = {keys}
DefaultDomain = shared.test
DefaultSelectors = sh1
PendingKeyCheckSeconds = {pending_check}
ActiveKeyCheckSeconds = 1
[Domains]
  [[example.com]]
  Selectors = s1
[Verification]
AuthenticatedPeers = 127.0.0.3/32
[DNS]
Nameservers = 127.0.0.1
Port = {dns_port}
Timeout = 1
[Logging]
ActivityLog = {workdir}/activity.jsonl
[Metrics]
Listen = {metrics}
"""
# the other contexts the test app's handlers use: here they sign nothing
QUIET = ("reject", "close", "blackhole", "broken", "broken-accept")
QUIET_INI = "[Signing]\nEnabled = No\n[Logging]\nActivityLog = \"\"\n"


@dataclass
class App:
    """One running test app and what the tests look at."""

    workdir: Path
    ini: Path
    server: SalmonServer
    sink: SMTPSink
    smtp_port: int
    metrics_port: Optional[int]

    def send(self, local: str) -> bytes:
        """Mail from alice@example.com to LOCAL@remote.example; what the sink got."""
        data = (f"From: Alice <alice@example.com>\r\nTo: {local}@remote.example\r\nSubject: {local}\r\n"
                f"Date: {email.utils.formatdate()}\r\nMessage-ID: <{local}@example.com>\r\n\r\n"
                f"Hello from {local}.\r\n").encode()
        with smtplib.SMTP(HOST, self.smtp_port, timeout=15, source_address=("127.0.0.3", 0)) as client:
            client.sendmail("alice@example.com", [f"{local}@remote.example"], data)
        return self.sink.received(local)

    def entries(self, event: str) -> List[dict]:
        path = self.workdir / "activity.jsonl"
        lines = path.read_text().splitlines() if path.exists() else []
        return [e for e in map(json.loads, lines) if e["event"] == event]

    def key_event(self, selector: str, state: str, timeout: float = 20.0) -> dict:
        """The activity log's "key" entry saying SELECTOR reached STATE, once the server writes it."""
        return wait_for(lambda: next((e for e in self.entries("key") if e["s"] == selector
                                      and e["state"] == state), None), timeout,
                        f"no key event {selector} {state}:\n{self.server.output()[-2000:]}")

    def python_log(self) -> str:
        return (self.workdir / "salmon.log").read_text(errors="replace")


def wait_for(found: Callable, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        value = found()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(what)
        time.sleep(0.1)


def signers(signed: bytes) -> List[tuple]:
    """(d=, s=) of each DKIM-Signature, top first."""
    tags = [parse_tags(v) for v in Message(signed).values(b"dkim-signature")]
    return [(t[b"d"].decode(), t[b"s"].decode()) for t in tags]


def install_keys(keys: Path) -> Path:
    private_copy(KEYS / "example.com.rsa2048.key", keys / "example.com/s1.key")
    private_copy(KEYS / "example.org.rsa2048.key", keys / "shared.test/sh1.key")
    return keys


def publish(dns, keys: Path, domain: str, selector: str) -> None:
    dns.add(key_name(selector, domain), load_private_key(keys / domain / f"{selector}.key").dns_txt())


def zone_of(keys: Path, path: Path) -> Path:
    """Every key's record as a zone file, for the peer verifier."""
    path.write_text("".join(zone_line(p.stem, p.parent.name, load_private_key(p).dns_txt()) + "\n"
                            for p in sorted(keys.glob("*/*.key")) if p.parent.name != "retired"))
    return path


@contextlib.contextmanager
def start_app(workdir: Path, keys: Path, dns_port: int, *, pending_check: float = 1,
              metrics: bool = False) -> Iterator[App]:
    workdir.mkdir(parents=True, exist_ok=True)
    metrics_port = free_port() if metrics else None
    ini = workdir / "dkim.ini"
    ini.write_text(INI.format(keys=keys, pending_check=pending_check, dns_port=dns_port, workdir=workdir,
                              metrics=f"{HOST}:{metrics_port}" if metrics else '""'))
    (workdir / "quiet.ini").write_text(QUIET_INI)
    (workdir / "spool").mkdir(exist_ok=True)
    ports = {"smtp_port": free_port(), "submission_port": free_port(), "lmtp_port": free_port()}
    lmtp_socket = workdir / "lmtp.sock"
    with SMTPSink(workdir / "sink") as sink:
        config = {"workdir": str(workdir), "spool": str(workdir / "spool"), "host": HOST, "sink_port": sink.port,
                  "lmtp_socket": str(lmtp_socket), **ports,
                  "configs": {"main": str(ini), **{name: str(workdir / "quiet.ini") for name in QUIET}}}
        server = SalmonServer(APPS / "dkimapp", workdir, [*ports.values(), lmtp_socket],
                              env={"SALMON_DKIM_TEST_APP": json.dumps(config)}).start(timeout=30)
        try:
            yield App(workdir, ini, server, sink, ports["smtp_port"], metrics_port)
        finally:
            server.stop()


@pytest.fixture
def dns():
    with start_dns_server({}, local_domains=LOCAL, ttl=1) as server:
        yield server


@pytest.fixture
def keys(tmp_path, dns):
    """s1 (not published) and sh1 (published)."""
    keys = install_keys(tmp_path / "keys")
    publish(dns, keys, "shared.test", "sh1")
    return keys


def salmon_dkim(*args) -> subprocess.CompletedProcess:
    return subprocess.run([str(SALMON_DKIM), *map(str, args)], capture_output=True, text=True, timeout=60)


def keys_json(ini: Path) -> dict:
    listed = salmon_dkim("keys", "--config", ini, "--json")
    assert listed.returncode == 0, listed.stderr
    return {f"{k['domain']}/{k['selector']}": k for k in json.loads(listed.stdout)}


# --- pending, shared, active ------------------------------------------------------------------------

def test_a_pending_key_does_not_sign_the_shared_key_does_until_publishing_activates_it(tmp_path, dns, keys):
    with start_app(tmp_path / "app", keys, dns.port) as app:
        before = app.send("n1")
        assert signers(before) == [("shared.test", "sh1")]
        [line] = wait_for(lambda: app.entries("sign"), 5, "a sign line in the activity log")  # written within 0.1 s
        assert line["reason"].startswith("signed with the shared key: example.com has no active key: s1 pending")
        publish(dns, keys, "example.com", "s1")
        app.key_event("s1", "active")
        after = app.send("n2")
        pid = app.server.process.pid
    assert signers(after) == [("example.com", "s1")]
    assert app.server.process.pid == pid  # the same server, never restarted
    if have_mail_dkim():
        results = mail_dkim_verify_many([before, after], zone_of(keys, tmp_path / "all.zone"))
        assert [[r.result for r in sigs] for sigs in results] == [["pass"], ["pass"]]


def test_activate_makes_a_running_server_sign_at_once(tmp_path, dns, keys):
    with start_app(tmp_path / "app", keys, dns.port, pending_check=3600) as app:
        publish(dns, keys, "example.com", "s1")
        assert signers(app.send("n1")) == [("shared.test", "sh1")]  # the server itself looks only hourly
        activated = salmon_dkim("activate", "example.com", "s1", "--config", app.ini)
        assert activated.returncode == 0, activated.stdout + activated.stderr
        app.key_event("s1", "active", timeout=5)
        assert signers(app.send("n2")) == [("example.com", "s1")]


def test_a_record_that_disappears_is_flagged_everywhere_while_the_key_keeps_signing(tmp_path, dns, keys):
    publish(dns, keys, "example.com", "s1")
    with start_app(tmp_path / "app", keys, dns.port, metrics=True) as app:
        assert signers(app.send("n1")) == [("example.com", "s1")]
        dns.remove(key_name("s1", "example.com"))
        event = app.key_event("s1", "active, RECORD MISSING")
        assert event["reason"] == ("not published: no TXT record at s1._domainkey.example.com; the key still signs")
        assert signers(app.send("n2")) == [("example.com", "s1")]
        assert "WARNING DKIM key s1 of example.com is active but its record is missing" in app.python_log()
        scraped = urllib.request.urlopen(f"http://{HOST}:{app.metrics_port}/metrics", timeout=5).read().decode()
        assert ('salmon_dkim_key_state{domain="example.com",selector="s1",state="active, RECORD MISSING"} 1.0'
                in scraped)
        listed = salmon_dkim("keys", "--config", app.ini)
        assert "example.com  s1        rsa-2048  active, RECORD MISSING" in listed.stdout
        monitor = salmon_dkim("monitor", "--config", app.ini, "--once")
        assert "keys: example.com s1 active, RECORD MISSING" in monitor.stdout


# --- rotation ---------------------------------------------------------------------------------------

def test_rotation_signs_before_during_and_after_and_every_message_verifies(tmp_path, dns, keys):
    publish(dns, keys, "example.com", "s1")
    new = f"s{TODAY}"
    with start_app(tmp_path / "app", keys, dns.port) as app:
        before = app.send("before")
        rotated = salmon_dkim("rotate", "example.com", "--config", app.ini)
        assert rotated.returncode == 0, rotated.stderr
        assert f"Publish a TXT record at {new}._domainkey.example.com" in rotated.stdout
        app.key_event(new, "pending")
        during = app.send("during")
        publish(dns, keys, "example.com", new)
        app.key_event(new, "active")
        app.key_event("s1", "retiring")
        after = app.send("after")
    assert [signers(m) for m in (before, during, after)] == [[("example.com", "s1")], [("example.com", "s1")],
                                                             [("example.com", new)]]
    states = keys_json(app.ini)
    assert states["example.com/s1"]["state"] == "retiring"
    assert states["example.com/s1"]["next"].startswith("keep the record published; remove this record after ")
    if have_mail_dkim():
        results = mail_dkim_verify_many([before, during, after], zone_of(keys, tmp_path / "all.zone"))
        assert [[r.result for r in sigs] for sigs in results] == [["pass"]] * 3


# --- two servers, one keys folder -------------------------------------------------------------------

def test_two_servers_sharing_the_keys_folder_agree_even_when_one_cannot_see_dns(tmp_path, dns, keys):
    blind_dns = BlackHoleDNS()
    try:
        with start_app(tmp_path / "a", keys, dns.port) as seeing, \
                start_app(tmp_path / "b", keys, blind_dns.port) as blind:
            assert signers(blind.send("b1")) == [("shared.test", "sh1")]  # learnt from a's check of sh1
            publish(dns, keys, "example.com", "s1")
            seeing.key_event("s1", "active")
            blind.key_event("s1", "active", timeout=5)
            signed = [signers(seeing.send("a2")), signers(blind.send("b2"))]
    finally:
        blind_dns.close()
    assert signed == [[("example.com", "s1")]] * 2
    recorded = json.loads((keys / STATE_FILE).read_text())["keys"]["example.com/s1"]
    a, b = keys_json(seeing.ini), keys_json(blind.ini)
    assert [(k, a[k]["state"], a[k]["since"]) for k in sorted(a)] == [(k, b[k]["state"], b[k]["since"]) for k in sorted(b)]
    assert a["example.com/s1"]["since"] == recorded["verified"]
