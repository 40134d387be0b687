"""Real DNS servers on 127.0.0.1 for tests: dnsmasq serving records, and a black hole.

Plain use (any script)::

    with start_dns_server({"s1._domainkey.example.test": "v=DKIM1; p=..."}) as server:
        server.resolver(timeout=1).txt("s1._domainkey.example.test")
        server.ini()            # "[DNS]\nNameservers = 127.0.0.1\nPort = ...\n" for a salmon_dkim.ini

    zone = '''
    example.test.        IN TXT  "v=spf1 mx -all"
    example.test.        IN MX   10 mail.example.test.
    mail.example.test.   IN A    192.0.2.1
    '''
    with start_dns_server(zone=zone) as server:
        server.resolver().query("example.test", "MX")

In pytest, ask for the fixtures by name::

    # conftest.py registers this module as a plugin: its fixtures need no import.

    def test_key_is_found(keys_dns_server):
        keys_dns_server.resolver().txt("s1._domainkey.example.com")

What a ``DNSServer`` answers:

- each name given in ``records``: its TXT records, with TTL ``ttl`` (default 300);
- each record of ``zone`` (RFC 1035 master-file text, absolute names) or of
  ``zone_file``: A, AAAA, MX, PTR, TXT and CNAME.  As dnsmasq does, a name's
  A/AAAA records also answer the reverse (PTR) name of each address, and a
  CNAME may only point at a name with A/AAAA records here;
- any other name under ``LOCAL_DOMAIN`` or under a domain of a served name
  (its last two labels): NXDOMAIN; ``NO_TXT`` has an A record only (NOERROR, no TXT);
- any name under ``SERVFAIL_DOMAIN``: SERVFAIL (dnsmasq fails DNSSEC validation
  of that domain against a second, unsigned dnsmasq);
- any name under ``SOA_DOMAIN`` (e.g. ``SOA_MISSING``): NXDOMAIN with an SOA whose
  minimum is ``SOA_NEGATIVE_TTL`` (from the second dnsmasq, authoritative for it);
- any other name, e.g. ``REFUSED``: REFUSED (dnsmasq has no upstream).

A record is a ``str``/``bytes`` (split into 255-byte strings), a ``Strings(...)``
(one record given as its strings), or a list of those (several records).
"""
from __future__ import annotations

import atexit
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Dict, Iterator, List, Mapping, Optional, Sequence, Union

import dns.message
import dns.name
import dns.query
import dns.rdatatype
import dns.zonefile
import pytest

DNSMASQ = shutil.which("dnsmasq", path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"]))
KEYS_ZONE = Path(__file__).with_name("data") / "keys" / "keys.zone"

LOCAL_DOMAIN = "example.test"
SERVFAIL_DOMAIN = "servfail.test"
SOA_DOMAIN = "soa.test"
SOA_NEGATIVE_TTL = 1  # short: cache tests wait for it to pass
PLAIN = "plain.example.test"
MULTI = "multi.example.test"
LONG = "long.example.test"
MISSING = "missing.example.test"
NO_TXT = "a-only.example.test"
SERVFAIL = "key.servfail.test"
REFUSED = "elsewhere.invalid"
SOA_MISSING = "missing.soa.test"

# Longer than dnsmasq's largest UDP answer (EDNS 1232 bytes): it only arrives over TCP.
LONG_TEXT = "v=DKIM1; k=rsa; p=" + "A" * 2000


class Strings(tuple):
    """One TXT record given as its character-strings: Strings("v=DKIM1; ", "p=...")."""

    def __new__(cls, *strings: Union[str, bytes]) -> "Strings":
        return super().__new__(cls, strings)


Record = Union[str, bytes, Strings]
Records = Mapping[str, Union[Record, Sequence[Record]]]

TEST_RECORDS: Dict[str, Union[Record, Sequence[Record]]] = {
    PLAIN: "v=DKIM1; k=rsa; p=plain",
    MULTI: Strings("v=DKIM1; k=rsa; ", "p=multi"),
    LONG: LONG_TEXT,
}


def free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 (the usual small race applies)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port = udp.getsockname()[1]
            with socket.socket() as tcp:
                try:
                    tcp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port


def _as_bytes(text: Union[str, bytes]) -> bytes:
    return text.encode("utf-8") if isinstance(text, str) else text


def _strings(record: Record) -> List[bytes]:
    if isinstance(record, Strings):
        return [_as_bytes(s) for s in record]
    data = _as_bytes(record)
    return [data[i:i + 255] for i in range(0, len(data), 255)] or [b""]


def _record_list(value) -> List[Record]:
    return list(value) if isinstance(value, list) else [value]


def _argument(string: bytes) -> str:
    # On dnsmasq's command line a comma always separates strings and quotes are kept as text.
    text = string.decode("utf-8", "surrogateescape")
    if "," in text or text.startswith('"'):
        raise ValueError(f"{text!r}: dnsmasq cannot serve a TXT string with a comma or a leading quote")
    return text


def zone_options(zone: str) -> List[str]:
    """dnsmasq options serving the A, AAAA, MX, PTR, TXT and CNAME records of RFC 1035 master-file text."""
    rrsets = dns.zonefile.read_rrsets(zone, rdclass=None, default_ttl=3600, origin=dns.name.root,
                                      relativize=False)
    addresses: Dict[str, List[str]] = {}
    options: List[str] = []
    for rrset in rrsets:
        name = rrset.name.to_text(omit_final_dot=True)
        for rdata in rrset:
            if rrset.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
                addresses.setdefault(name, []).append(rdata.address)
            elif rrset.rdtype == dns.rdatatype.MX:
                options.append(f"mx-host={name},{rdata.exchange.to_text(omit_final_dot=True)},{rdata.preference}")
            elif rrset.rdtype == dns.rdatatype.PTR:
                options.append(f"ptr-record={name},{rdata.target.to_text(omit_final_dot=True)}")
            elif rrset.rdtype == dns.rdatatype.CNAME:
                options.append(f"cname={name},{rdata.target.to_text(omit_final_dot=True)}")
            elif rrset.rdtype == dns.rdatatype.TXT:
                options.append(f"txt-record={name}," + ",".join(_argument(s) for s in rdata.strings))
            else:
                raise ValueError(f"{name} {dns.rdatatype.to_text(rrset.rdtype)}: dnsmasq is not set up "
                                 "to serve this type here")
    # One host-record per name: dnsmasq keeps the last one given for a name.
    return [f"host-record={name}," + ",".join(addrs) for name, addrs in addresses.items()] + options


def zone_names(zone: str) -> List[str]:
    """The owner names of master-file text."""
    rrsets = dns.zonefile.read_rrsets(zone, rdclass=None, default_ttl=3600, origin=dns.name.root,
                                      relativize=False)
    return [rrset.name.to_text(omit_final_dot=True) for rrset in rrsets]


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the test process dies, even by SIGKILL (Linux)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _answers(port: int) -> bool:
    query = dns.message.make_query(f"ready.{LOCAL_DOMAIN}", "TXT")
    try:
        dns.query.udp(query, "127.0.0.1", port=port, timeout=0.02)
        return True
    except Exception:  # noqa: BLE001 (not up yet, whatever the reason)
        return False


class _Dnsmasq:
    """One dnsmasq process in the foreground, logging to ``workdir/NAME.log``."""

    def __init__(self, workdir: Path, name: str, port: int, options: List[str]) -> None:
        self.port = port
        if DNSMASQ is None:
            raise RuntimeError("dnsmasq is not installed: run `make setup` (Debian package dnsmasq-base)")
        self.log = workdir / f"{name}.log"
        # Options go on the command line: dnsmasq's configuration file limits line length.
        args = [DNSMASQ, "--keep-in-foreground", "--conf-file=/dev/null", "--log-facility=-"]
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(args + [f"--{option}" for option in options],
                                            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                            preexec_fn=_die_with_parent)
        deadline = time.monotonic() + 5
        while not _answers(port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"dnsmasq did not start on 127.0.0.1:{port}:\n{self.log.read_text()}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _base_options(port: int) -> List[str]:
    return [f"port={port}", "listen-address=127.0.0.1", "bind-interfaces", "user=root", "group=root",
            "pid-file=", "no-resolv", "no-hosts", "no-poll", "log-queries"]


class DNSServer:
    """dnsmasq on 127.0.0.1:``port`` serving ``records`` (see the module docstring)."""

    host = "127.0.0.1"

    def __init__(self, records: Optional[Records] = None, *, zone: str = "", ttl: int = 300,
                 local_domains: Sequence[str] = ()) -> None:
        self.records: Dict[str, List[Record]] = {n.rstrip("."): _record_list(v)
                                                 for n, v in (records or {}).items()}
        self.zone = zone
        self.ttl = ttl
        self.local_domains = list(local_domains)
        self.workdir = Path(tempfile.mkdtemp(prefix="dnsserver-"))
        self._processes: List[_Dnsmasq] = []
        atexit.register(self.stop)
        for attempt in range(3):  # another test run may take a free port before dnsmasq binds it
            self.port, self._upstream_port = free_port(), free_port()
            try:
                self.start()
                break
            except RuntimeError:
                if attempt == 2:
                    raise

    # -- what tests use ------------------------------------------------------
    @property
    def nameservers(self) -> List[str]:
        return [self.host]

    def add(self, name: str, *records: Record) -> None:
        """Serve more TXT records at name (dnsmasq is restarted on the same port)."""
        self.records.setdefault(name.rstrip("."), []).extend(records)
        self.restart()

    def remove(self, name: str) -> None:
        """Stop serving the TXT records at name (dnsmasq is restarted on the same port)."""
        self.records.pop(name.rstrip("."), None)
        self.restart()

    def resolver(self, **kwargs):
        """A LiveResolver asking this server; kwargs go to LiveResolver (timeout, cache)."""
        from salmon_dkim.dns.live import LiveResolver
        return LiveResolver(nameservers=self.nameservers, port=self.port, **kwargs)

    def dns_settings(self, **overrides):
        """A DNSSettings pointing at this server; overrides are DNSSettings fields."""
        from salmon_dkim.config import DNSSettings
        fields = {"nameservers": tuple(self.nameservers), "port": self.port, **overrides}
        return DNSSettings(**fields)

    def ini(self) -> str:
        """A [DNS] section for a salmon_dkim.ini that uses this server."""
        return f"[DNS]\nNameservers = {self.host}\nPort = {self.port}\n"

    def log(self) -> str:
        """dnsmasq's query log so far (useful in assertion messages)."""
        return "".join(log.read_text(errors="replace") for log in sorted(self.workdir.glob("*.log")))

    # -- life cycle ----------------------------------------------------------
    def start(self) -> None:
        # Authoritative and unsigned: the front server's DNSSEC check of SERVFAIL_DOMAIN fails on it.
        upstream = _base_options(self._upstream_port) + [
            "auth-server=ns.test,127.0.0.1", f"auth-zone={SERVFAIL_DOMAIN}", f"auth-zone={SOA_DOMAIN}",
            f"auth-ttl={SOA_NEGATIVE_TTL}", f"auth-soa=1,hostmaster.{SOA_DOMAIN},1200,180,1209600",
            f"txt-record={SERVFAIL},unsigned"]
        try:
            self._processes.append(_Dnsmasq(self.workdir, "upstream", self._upstream_port, upstream))
            self._processes.append(_Dnsmasq(self.workdir, "server", self.port, self._options()))
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        while self._processes:
            self._processes.pop().stop()

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        """Stop and remove the working folder."""
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> "DNSServer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _options(self) -> List[str]:
        domains = {LOCAL_DOMAIN, *self.local_domains}
        domains.update(".".join(n.split(".")[-2:]) for n in [*self.records, *zone_names(self.zone)])
        domains -= {SERVFAIL_DOMAIN, SOA_DOMAIN}
        options = _base_options(self.port) + [
            f"local-ttl={self.ttl}", f"host-record={NO_TXT},127.0.0.1",
            f"server=/{SERVFAIL_DOMAIN}/127.0.0.1#{self._upstream_port}",
            f"server=/{SOA_DOMAIN}/127.0.0.1#{self._upstream_port}", "dnssec",
            "trust-anchor=.,20326,8,2,E06D44B80B8F1D39A95C0B0D7C65D08458E880409BBC683457104237C7F8EC8D",
            f"trust-anchor={SERVFAIL_DOMAIN},12345,8,2,{'AB' * 32}"]
        options += [f"local=/{d}/" for d in sorted(domains)]
        for name, records in self.records.items():
            for record in records:
                options.append(f"txt-record={name}," + ",".join(_argument(s) for s in _strings(record)))
        return options + zone_options(self.zone)


class BlackHole:
    """A UDP socket and a TCP listener on host:port (default 127.0.0.1, a free port) that never answer.

    Another loopback address with a DNSServer's port (``BlackHole("127.0.0.2", server.port)``)
    makes a dead nameserver beside a live one.
    """

    def __init__(self, host: str = "127.0.0.1", port: Optional[int] = None) -> None:
        self.host = host
        while True:
            self.port = port or free_port()
            self._udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self._tcp = socket.socket()
            try:
                self._udp.bind((self.host, self.port))
                self._tcp.bind((self.host, self.port))
                self._tcp.listen(16)
                return
            except OSError:
                self.stop()
                if port:
                    raise

    @property
    def nameservers(self) -> List[str]:
        return [self.host]

    def resolver(self, **kwargs):
        from salmon_dkim.dns.live import LiveResolver
        return LiveResolver(nameservers=self.nameservers, port=self.port, **kwargs)

    def stop(self) -> None:
        self._udp.close()
        self._tcp.close()

    close = stop

    def __enter__(self) -> "BlackHole":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def start_dns_server(records: Optional[Records] = None, *, zone: str = "",
                     zone_file: Union[str, Path, None] = None, ttl: int = 300,
                     local_domains: Sequence[str] = ()) -> DNSServer:
    """Start dnsmasq serving records (default TEST_RECORDS) plus those of zone and zone_file; call .close()."""
    served: Dict = dict(TEST_RECORDS if records is None and not zone and zone_file is None else records or {})
    if zone_file is not None:
        zone = Path(zone_file).read_text("utf-8") + "\n" + zone
    return DNSServer(served, zone=zone, ttl=ttl, local_domains=local_domains)


def start_black_hole(host: str = "127.0.0.1", port: Optional[int] = None) -> BlackHole:
    """A server that never answers (for timeouts); call .stop()."""
    return BlackHole(host, port)


@pytest.fixture
def dns_server() -> Iterator[DNSServer]:
    """dnsmasq serving TEST_RECORDS (PLAIN, MULTI, LONG; MISSING, NO_TXT, SOA_MISSING, SERVFAIL, REFUSED fail)."""
    with start_dns_server() as server:
        yield server


@pytest.fixture
def dns_server_factory() -> Iterator:
    """start(records=None, *, zone="", zone_file=None, ttl=300, local_domains=()) -> DNSServer; all stopped after."""
    servers: List[DNSServer] = []

    def start(*args, **kwargs) -> DNSServer:
        servers.append(start_dns_server(*args, **kwargs))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


@pytest.fixture(scope="session")
def keys_dns_server() -> Iterator[DNSServer]:
    """dnsmasq serving every record of tests/data/keys/keys.zone, for the session (do not stop it)."""
    with start_dns_server(zone_file=KEYS_ZONE) as server:
        yield server


@pytest.fixture
def black_hole() -> Iterator[BlackHole]:
    """A nameserver that never answers, UDP or TCP."""
    with start_black_hole() as hole:
        yield hole
