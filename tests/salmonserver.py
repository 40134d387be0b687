"""A real Salmon server and an SMTP sink on 127.0.0.1, for end-to-end tests.

- :class:`SMTPSink`: a tiny SMTP server (a thread in the test process,
  written here without Salmon so that it checks our receivers rather than
  sharing their bugs) storing each message's exact bytes in a folder, named
  after the recipient's local part: ``bob-1@remote.example`` -> ``bob-1.eml``.
- :class:`SalmonServer`: ``salmon start --boot config.boot --no-daemon`` in a
  subprocess, run in any Salmon app folder, stopped with SIGTERM.
- :class:`BlackHoleDNS`: a UDP port that takes DNS queries and never answers.
- :func:`start_dkim_app` (and the module-scoped fixture ``dkim_app``): the
  test app ``tests/apps/dkimapp`` with its INI files, keys, sink and server,
  a self-signed TLS certificate and a submission user, ready;
  :class:`DKIMApp` says where everything is.
- :func:`make_certificate`: a self-signed certificate for 127.0.0.1 (cryptography).

Use it from a test module (one server per module keeps the suite fast)::

    from salmonserver import dkim_app  # noqa: F401 (a module-scoped fixture)

    def test_something(dkim_app):
        with dkim_app.smtp() as client:
            client.sendmail("a@example.com", ["t1@inbound.test"], message)
        dkim_app.stored("t1"), dkim_app.seen("t1")   # what the handler saw: bytes, session, results

Another Salmon app (example_project, say), with the sink as its relay::

    with SMTPSink(tmp / "sink") as sink, SalmonServer(app_dir, tmp, [25025, 25587],
                                                     env={"MY_APP_RELAY_PORT": str(sink.port)}):
        ...
"""
from __future__ import annotations

import contextlib
import datetime
import ipaddress
import functools
import json
import os
import signal
import socket
import socketserver
import smtplib
import ssl
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, Optional, Union

import pytest

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
APPS = TESTS / "apps"
KEYS = TESTS / "data" / "keys"
ZONE = KEYS / "keys.zone"
SALMON = Path(sys.executable).with_name("salmon")
SALMON_DKIM = Path(sys.executable).with_name("salmon-dkim")
HOST = "127.0.0.1"


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port nothing listens on now (the kernel's choice)."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _connect(address: Union[int, Path]) -> socket.socket:
    if isinstance(address, int):
        return socket.create_connection((HOST, address), timeout=1)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(str(address))
    except OSError:
        s.close()
        raise
    return s


def wait_for_port(port: Union[int, Path], timeout: float = 15.0, process: Optional[subprocess.Popen] = None,
                  log: Optional[Path] = None) -> None:
    """Until something accepts connections on a TCP port of 127.0.0.1 (int) or a UNIX socket (Path)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with _connect(port):
                return
        except OSError:
            pass
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{_tail(log)}")
        if time.monotonic() > deadline:
            where = f"{HOST}:{port}" if isinstance(port, int) else str(port)
            raise RuntimeError(f"nothing listens on {where} after {timeout} s:\n{_tail(log)}")
        time.sleep(0.05)


def _tail(path: Optional[Path], lines: int = 40) -> str:
    if path is None or not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


# -- the sink -------------------------------------------------------------------

class _SinkHandler(socketserver.StreamRequestHandler):
    """RFC 5321 server side, just enough for smtplib: exact DATA bytes, dots un-stuffed."""

    def reply(self, line: str) -> None:
        self.wfile.write(line.encode("ascii") + b"\r\n")

    def handle(self) -> None:
        self.reply("220 sink.test ESMTP")
        sender, recipients = None, []
        while True:
            line = self.rfile.readline()
            if not line:
                return
            verb = line[:4].upper()
            if verb in (b"EHLO", b"HELO", b"LHLO"):
                self.reply("250-sink.test")
                self.reply("250 8BITMIME")
            elif verb == b"MAIL":
                sender, recipients = line.split(b":", 1)[1].strip().strip(b"<>").decode(), []
                self.reply("250 OK")
            elif verb == b"RCPT":
                recipients.append(line.split(b":", 1)[1].strip().strip(b"<>").decode())
                self.reply("250 OK")
            elif verb == b"DATA":
                self.reply("354 go ahead")
                data = []
                while True:
                    line = self.rfile.readline()
                    if line in (b".\r\n", b""):
                        break
                    data.append(line[1:] if line.startswith(b".") else line)
                self.server.sink.store(sender, recipients, b"".join(data))
                self.reply("250 OK stored")
            elif verb in (b"RSET", b"NOOP"):
                self.reply("250 OK")
            elif verb == b"QUIT":
                self.reply("221 bye")
                return
            else:
                self.reply("502 not here")


class _SinkServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


class SMTPSink:
    """Stores what it receives in ``folder``: LOCALPART.eml (exact bytes) and LOCALPART.json (envelope)."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.server = _SinkServer((HOST, 0), _SinkHandler)
        self.server.sink = self
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)

    def store(self, sender: str, recipients, data: bytes) -> None:
        for rcpt in recipients:
            name = rcpt.partition("@")[0]
            (self.folder / f"{name}.eml").write_bytes(data)
            (self.folder / f"{name}.json").write_text(json.dumps({"from": sender, "to": rcpt}))

    def received(self, local_part: str) -> bytes:
        """The exact bytes that arrived for LOCAL_PART@anything."""
        return (self.folder / f"{local_part}.eml").read_bytes()

    def has(self, local_part: str) -> bool:
        return (self.folder / f"{local_part}.eml").exists()

    def envelope(self, local_part: str) -> dict:
        return json.loads((self.folder / f"{local_part}.json").read_text())

    def __enter__(self) -> "SMTPSink":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


class BlackHoleDNS:
    """A bound UDP port that never reads: a DNS server that never answers."""

    def __init__(self) -> None:
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.socket.bind((HOST, 0))
        self.port = self.socket.getsockname()[1]

    def close(self) -> None:
        self.socket.close()


# -- the Salmon server ----------------------------------------------------------

class SalmonServer:
    """``salmon start --boot BOOT --no-daemon`` in ``app_dir`` (any Salmon app), as a subprocess.

    ``addresses``: TCP ports on 127.0.0.1 (int) and UNIX sockets (Path) the app
    listens on; ``start`` returns once all accept connections.  ``env`` is
    added to the environment (the app's own configuration, if it reads any).
    Output goes to ``workdir/salmon.out``.
    """

    def __init__(self, app_dir: Path, workdir: Path, addresses, *, env: Optional[dict] = None,
                 boot: str = "config.boot") -> None:
        self.app_dir, self.workdir = Path(app_dir), Path(workdir)
        self.addresses, self.env, self.boot = list(addresses), dict(env or {}), boot
        self.log = self.workdir / "salmon.out"
        self.process: Optional[subprocess.Popen] = None

    def start(self, timeout: float = 15.0) -> "SalmonServer":
        env = dict(os.environ, **self.env,
                   PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
        (self.workdir / "run").mkdir(parents=True, exist_ok=True)
        with open(self.log, "wb") as out:
            self.process = subprocess.Popen(
                [str(SALMON), "start", "--boot", self.boot, "--no-daemon", "--force",
                 "--pid", str(self.workdir / "run" / "smtp.pid")],
                cwd=self.app_dir, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            for address in self.addresses:
                wait_for_port(address, timeout, self.process, self.log)
        except Exception:
            self.stop()
            raise
        return self

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def __enter__(self) -> "SalmonServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


# -- the test app ---------------------------------------------------------------

# Each test key at KEYSDIR/DOMAIN/SELECTOR.key, as keygen lays them out.
KEY_LAYOUT = {
    "example.com/s1.key": "example.com.rsa2048.key",
    "example.com/ed1.key": "example.com.ed25519.key",
    "example.org/s2048.key": "example.org.rsa2048.key",
}

BASE_INI = """\
[Signing]
KeysDir = {keys}
[Domains]
  [[example.com]]
  Selectors = s1,
  [[example.org]]
  Selectors = s2048,
[Verification]
AuthservId = {authserv_id}
TrustedIPs = 127.0.0.2/32,
AuthenticatedPeers = 127.0.0.3/32,
AuthenticatedHeader = X-Authenticated-User
ScoreHeader = X-DKIM-Score
PassScore = -1.0
FailScore = 2.5
{verification}
[DNS]
{dns}
[Logging]
ActivityLog = {activity}
[Metrics]
Listen = {metrics}
[Submission]
{submission}
{extra}
"""

# the installed context's: the receivers' STARTTLS certificate and submission users
SUBMISSION_INI = """\
CredentialsFile = {workdir}/credentials
TLSCertificate = {workdir}/tls/cert.pem
TLSKey = {workdir}/tls/key.pem
"""

AUTHSERV_ID = "mx.salmon-dkim.test"
USER, PASSWORD = "alice@example.com", "correct horse battery staple"


def make_certificate(folder: Path, host: str = HOST) -> Path:
    """A self-signed certificate for ``host`` (an IP address): FOLDER/cert.pem, FOLDER/key.pem (mode 0600)."""
    from cryptography import x509  # noqa: PLC0415
    from cryptography.hazmat.primitives import hashes, serialization  # noqa: PLC0415
    from cryptography.hazmat.primitives.asymmetric import ec  # noqa: PLC0415
    from cryptography.x509.oid import NameOID  # noqa: PLC0415

    folder.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "salmon-dkim test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(hours=1))
                   .not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host))]),
                                  critical=False)
                   .sign(key, hashes.SHA256()))
    (folder / "cert.pem").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path = folder / "key.pem"
    key_path.touch(mode=0o600)
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return folder / "cert.pem"


def passwd(credentials: Path, user: str, password: Optional[str] = None, *args: str) -> subprocess.CompletedProcess:
    """``salmon-dkim passwd USER --file CREDENTIALS --password-stdin`` (or other ARGS), as a script would."""
    options = ["--password-stdin"] if password is not None else []
    return subprocess.run([str(SALMON_DKIM), "passwd", user, "--file", str(credentials), *options, *args],
                          input=(password + "\n").encode() if password is not None else b"",
                          capture_output=True, timeout=30)


@dataclass
class DKIMApp:
    """The running test app: ports, folders and small helpers for the tests."""

    workdir: Path
    server: SalmonServer
    sink: SMTPSink
    smtp_port: int
    submission_port: int
    lmtp_port: int
    lmtp_socket: Path
    spool: Path
    activity: Path
    configs: Dict[str, Path] = field(default_factory=dict)  # context name -> INI file
    metrics_port: Optional[int] = None  # the Prometheus endpoint every context feeds
    authserv_id: str = AUTHSERV_ID
    zone_file: Path = ZONE
    certificate: Optional[Path] = None
    credentials: Optional[Path] = None
    user: str = USER
    password: str = PASSWORD

    def smtp(self, port: Optional[int] = None, source: str = HOST, helo: str = "client.test") -> smtplib.SMTP:
        client = smtplib.SMTP(HOST, port or self.smtp_port, local_hostname=helo, timeout=15,
                              source_address=(source, 0))
        return client

    def client_tls(self) -> ssl.SSLContext:
        """A client TLS context trusting the test certificate only (and checking it is for 127.0.0.1)."""
        return ssl.create_default_context(cafile=str(self.certificate))

    def submission(self, *, tls: bool = True, login: bool = True, user: Optional[str] = None,
                   password: Optional[str] = None, **kwargs) -> smtplib.SMTP:
        """A submission session: STARTTLS, then AUTH as the test user, unless told not to."""
        client = self.smtp(self.submission_port, **kwargs)
        try:
            if tls:
                client.starttls(context=self.client_tls())
            if login:
                client.login(user or self.user, password or self.password)
        except BaseException:
            client.close()
            raise
        return client

    def lmtp(self, helo: str = "client.test", unix: bool = False) -> smtplib.LMTP:
        if unix:
            return smtplib.LMTP(str(self.lmtp_socket), local_hostname=helo, timeout=15)
        return smtplib.LMTP(HOST, self.lmtp_port, local_hostname=helo, timeout=15)

    def stored(self, local_part: str) -> bytes:
        """The bytes a recording handler saw as ``message.Data`` for LOCAL_PART@..."""
        return (self.spool / f"{local_part}.eml").read_bytes()

    def seen(self, local_part: str) -> dict:
        """What a recording handler saw besides the bytes: session, dkim results, outcome."""
        return json.loads((self.spool / f"{local_part}.json").read_text())

    def has(self, local_part: str) -> bool:
        return (self.spool / f"{local_part}.eml").exists()

    def activity_entries(self, quiet: float = 0.3, timeout: float = 5.0) -> list:
        """The activity log's entries once the server's writer thread (up to 0.1 s behind) is done."""
        deadline, last = time.monotonic() + timeout, None
        while True:
            size = self.activity.stat().st_size if self.activity.exists() else -1
            if size == last or time.monotonic() > deadline:
                break
            last = size
            time.sleep(quiet)
        if size < 0:
            return []
        return [json.loads(line) for line in self.activity.read_text().splitlines() if line.strip()]


def write_ini(path: Path, workdir: Path, *, verification: str = "", dns: Optional[str] = None,
              submission: str = "", metrics_port: Optional[int] = None, extra: str = "") -> Path:
    """A test app INI; ``extra``: whole sections appended (for instance [DMARC])."""
    path.write_text(BASE_INI.format(
        keys=workdir / "keys", authserv_id=AUTHSERV_ID, verification=verification, submission=submission,
        dns=f"ZoneFile = {ZONE}" if dns is None else dns, activity=workdir / "activity.jsonl",
        metrics=f"{HOST}:{metrics_port}" if metrics_port else '""', extra=extra))
    return path


def install_keys(keys_dir: Path) -> Path:
    for dest, src in KEY_LAYOUT.items():
        target = keys_dir / dest
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes((KEYS / src).read_bytes())
        os.chmod(target, 0o600)
    return keys_dir


@pytest.fixture(scope="module")
def dkim_app(tmp_path_factory) -> Iterator[DKIMApp]:
    """The test app, once per test module: ``from salmonserver import dkim_app`` in a test module."""
    with start_dkim_app(tmp_path_factory.mktemp("dkimapp")) as running:
        yield running


@contextlib.contextmanager
def start_dkim_app(workdir: Path, *, dns_timeout: float = 1.0, live_dns: bool = True, live_zone: str = "",
                   live_ini: str = "") -> Iterator[DKIMApp]:
    """tests/apps/dkimapp running with its contexts (see its README), a sink and a black-hole DNS.

    Contexts, chosen by recipient domain: ``inbound.test`` (the installed
    one: scores, no rejects), ``reject.test`` (RejectOnFail), ``close.test``
    (RejectOnFail + CloseConnectionOnReject), ``blackhole.test`` (live DNS
    at a server that never answers, ``dns_timeout`` s), ``broken.test`` and
    ``broken-accept.test`` (a resolver that raises: InternalErrorAction
    tempfail / accept), ``live.test`` (live DNS at a dnsmasq serving the test
    keys, from tests/dnsserver.py; with ``live_dns`` and dnsmasq installed; ``live_zone`` adds
    records to it, ``live_ini`` sections to its INI; the blackhole context gets ``live_ini`` too).
    ``record.test`` records without DKIM; mail to ``remote.example`` is signed with ``@dkim_sign``
    and relayed to the sink.
    """
    workdir = Path(workdir)
    install_keys(workdir / "keys")
    certificate = make_certificate(workdir / "tls")
    credentials = workdir / "credentials"
    added = passwd(credentials, USER, PASSWORD)
    assert added.returncode == 0, added.stderr
    spool = workdir / "spool"
    spool.mkdir()
    blackhole = BlackHoleDNS()
    metrics_port = free_port()
    ini = functools.partial(write_ini, metrics_port=metrics_port)
    configs = {
        "main": ini(workdir / "main.ini", workdir, submission=SUBMISSION_INI.format(workdir=workdir)),
        "reject": ini(workdir / "reject.ini", workdir, verification="RejectOnFail = Yes"),
        "close": ini(workdir / "close.ini", workdir,
                     verification="RejectOnFail = Yes\nCloseConnectionOnReject = Yes"),
        "blackhole": ini(workdir / "blackhole.ini", workdir, extra=live_ini, dns=(
            f"Nameservers = {HOST},\nPort = {blackhole.port}\nTimeout = {dns_timeout}")),
        "broken": ini(workdir / "broken.ini", workdir),
        "broken-accept": ini(workdir / "broken-accept.ini", workdir,
                             verification="InternalErrorAction = accept"),
    }
    live = None
    if live_dns:
        import dnsserver  # noqa: PLC0415 (dnsmasq only when asked for)
        if dnsserver.DNSMASQ is not None:
            live = dnsserver.start_dns_server(zone_file=ZONE, zone=live_zone)
            configs["live"] = ini(workdir / "live.ini", workdir, extra=live_ini, dns=(
                f"Nameservers = {live.host},\nPort = {live.port}\nTimeout = {dns_timeout}"))
    ports = {"smtp_port": free_port(), "submission_port": free_port(), "lmtp_port": free_port()}
    lmtp_socket = workdir / "lmtp.sock"
    try:
        with SMTPSink(workdir / "sink") as sink:
            config = {"workdir": str(workdir), "spool": str(spool), "host": HOST,
                      "sink_port": sink.port, "lmtp_socket": str(lmtp_socket), **ports,
                      "configs": {name: str(path) for name, path in configs.items()}}
            server = SalmonServer(APPS / "dkimapp", workdir, [*ports.values(), lmtp_socket],
                                  env={"SALMON_DKIM_TEST_APP": json.dumps(config)}).start()
            try:
                yield DKIMApp(workdir, server, sink, spool=spool, activity=workdir / "activity.jsonl",
                              configs=configs, lmtp_socket=lmtp_socket, certificate=certificate,
                              credentials=credentials, metrics_port=metrics_port, **ports)
            finally:
                server.stop()
    finally:
        blackhole.close()
        if live is not None:
            live.close()
