"""DNSCache (dnspython's LRU cache with the [DNS] caps), its snapshot file, and `salmon-dkim cache`.

Answers are put in as dnspython's resolver puts them: an ``Answer`` made from
a response, under the (name, type, class) key.  TTL expiry over a real
nameserver is in test_livedns.py.
"""
import json
import logging
import os
import time

import dns.message
import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.resolver
import pytest
from click.testing import CliRunner

from salmon_dkim.cli import main
from salmon_dkim.dns.cache import CacheEntry, DNSCache, clear_request_path

KEY = "v=DKIM1; k=rsa; p=MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAuvLEcj0"
NAME = "s1._domainkey.example.com"
MISSING = "nx._domainkey.example.com"


def answer(name: str, rdtype: str, ttl: int, *records: str, rcode: str = "NOERROR",
           soa_minimum: int = 3600) -> dns.resolver.Answer:
    """The Answer dnspython's resolver would make of a response with these records."""
    lines = ["id 1", "opcode QUERY", f"rcode {rcode}", "flags QR AA RD RA", ";QUESTION", f"{name}. IN {rdtype}",
             ";ANSWER", *[f"{name}. {ttl} IN {rdtype} {r}" for r in records], ";AUTHORITY"]
    if not records:
        lines.append(f"example.com. 3600 IN SOA ns.example.com. root.example.com. 1 7200 900 1209600 {soa_minimum}")
    response = dns.message.from_text("\n".join(lines) + "\n")
    qtype = dns.rdatatype.ANY if rcode == "NXDOMAIN" else dns.rdatatype.from_text(rdtype)
    return dns.resolver.Answer(dns.name.from_text(name), qtype, dns.rdataclass.IN, response)


def put(cache: DNSCache, a: dns.resolver.Answer) -> None:
    cache.put((a.qname, a.rdtype, dns.rdataclass.IN), a)


def cache(*, max_size=100, max_ttl=86400, negative_ttl=300, **kwargs) -> DNSCache:
    return DNSCache(max_size, max_ttl, negative_ttl, **kwargs)


def expires_in(entry: CacheEntry) -> float:
    return entry.expires_at - time.time()


# -- what is cached and for how long ---------------------------------------------

def test_answer_is_listed_with_its_records_and_ttl():
    c = cache()
    put(c, answer(NAME, "TXT", 600, f'"{KEY}"'))
    [entry] = c.entries()
    assert (entry.name, entry.rdtype, entry.records) == (NAME, "TXT", [KEY])
    assert 599 <= expires_in(entry) <= 600


def test_ttl_is_capped_at_max_ttl():
    c = cache(max_ttl=10)
    put(c, answer(NAME, "TXT", 3600, f'"{KEY}"'))
    assert expires_in(c.entries()[0]) <= 10


def test_zero_max_ttl_caches_no_answer():
    c = cache(max_ttl=0)
    put(c, answer(NAME, "TXT", 3600, f'"{KEY}"'))
    assert c.entries() == []


def test_nxdomain_is_listed_as_does_not_exist_for_the_soa_minimum():
    c = cache(negative_ttl=300)
    put(c, answer(MISSING, "TXT", 0, rcode="NXDOMAIN", soa_minimum=120))
    [entry] = c.entries()
    assert (entry.name, entry.rdtype, entry.records) == (MISSING, "ANY", None)
    assert 119 <= expires_in(entry) <= 120


def test_negative_answer_is_capped_at_negative_ttl():
    c = cache(negative_ttl=30)
    put(c, answer(NAME, "AAAA", 0, soa_minimum=3600))
    [entry] = c.entries()
    assert entry.records == [] and expires_in(entry) <= 30


def test_zero_negative_ttl_caches_no_negative_answer():
    c = cache(negative_ttl=0)
    put(c, answer(MISSING, "TXT", 0, rcode="NXDOMAIN"))
    assert c.entries() == []


def test_lookup_finds_a_cached_nxdomain_for_any_type():
    c = cache()
    put(c, answer(MISSING, "TXT", 0, rcode="NXDOMAIN"))
    found = c.lookup(dns.name.from_text(MISSING), dns.rdatatype.MX)
    assert found is not None and found.response.rcode() == dns.rcode.NXDOMAIN


def test_least_recently_used_answer_goes_first():
    c = cache(max_size=2)
    for name in ("a.example", "b.example"):
        put(c, answer(name, "A", 60, "192.0.2.1"))
    c.lookup(dns.name.from_text("a.example"), dns.rdatatype.A)
    put(c, answer("c.example", "A", 60, "192.0.2.3"))
    assert sorted(e.name for e in c.entries()) == ["a.example", "c.example"]


def test_empty_cache_is_still_a_cache_to_dnspython():
    assert bool(cache())  # dnspython skips caching when `resolver.cache` is falsy


# -- the snapshot file ----------------------------------------------------------

def read(path):
    return json.loads(path.read_text())


def entries_in(path, count, timeout=5.0):
    """The snapshot's entries once it holds ``count`` of them (a writer thread writes it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and len(read(path)["entries"]) == count:
            break
        time.sleep(0.01)
    return read(path)["entries"]


def test_snapshot_holds_entries_with_wall_clock_expiry(tmp_path):
    path = tmp_path / "cache.json"
    c = cache(path=path)
    put(c, answer(NAME, "TXT", 60, f'"{KEY}"'))
    put(c, answer(MISSING, "TXT", 0, rcode="NXDOMAIN", soa_minimum=300))
    c.close()
    data = read(path)
    assert abs(data["written_at"] - time.time()) < 5
    entries = {e["name"]: e for e in data["entries"]}
    assert entries[NAME]["records"] == [KEY] and entries[NAME]["type"] == "TXT"
    assert entries[MISSING]["records"] is None
    assert 55 < entries[NAME]["expires_at"] - time.time() <= 60


def test_snapshot_is_public_and_written_without_leftover_temp_files(tmp_path):
    path = tmp_path / "cache.json"
    c = cache(path=path)
    put(c, answer(NAME, "TXT", 60, f'"{KEY}"'))
    c.close()
    assert os.stat(path).st_mode & 0o777 == 0o644
    assert os.listdir(tmp_path) == ["cache.json"]


def test_snapshot_is_written_at_most_once_per_interval_then_at_close(tmp_path):
    path = tmp_path / "cache.json"
    c = cache(path=path, snapshot_interval=60)
    put(c, answer("a.example", "A", 60, "192.0.2.1"))
    assert len(entries_in(path, 1)) == 1
    put(c, answer("b.example", "A", 60, "192.0.2.2"))
    time.sleep(0.2)
    assert len(read(path)["entries"]) == 1
    c.close()
    assert len(read(path)["entries"]) == 2


def test_snapshot_follows_changes_once_the_interval_has_passed(tmp_path):
    path = tmp_path / "cache.json"
    c = cache(path=path, snapshot_interval=0.1)
    put(c, answer("a.example", "A", 60, "192.0.2.1"))
    put(c, answer("b.example", "A", 60, "192.0.2.2"))
    time.sleep(0.15)
    c.lookup(dns.name.from_text("a.example"), dns.rdatatype.A)
    assert len(entries_in(path, 2)) == 2


def test_clear_request_empties_the_running_cache_before_its_next_lookup(tmp_path):
    path = tmp_path / "cache.json"
    c = cache(path=path, snapshot_interval=0)
    put(c, answer(NAME, "TXT", 3600, f'"{KEY}"'))
    c.close()
    clear_request_path(path).touch()
    assert c.lookup(dns.name.from_text(NAME), dns.rdatatype.TXT) is None
    assert not clear_request_path(path).exists() and entries_in(path, 0) == []


def test_unwritable_snapshot_warns_once_and_caching_goes_on(tmp_path, caplog):
    path = tmp_path / "no-such-folder" / "cache.json"
    c = cache(path=path, snapshot_interval=0)
    with caplog.at_level(logging.WARNING):
        put(c, answer("a.example", "A", 60, "192.0.2.1"))
        c.close()
        put(c, answer("b.example", "A", 60, "192.0.2.2"))
        c.close()
    assert caplog.text.count("cannot write the DNS cache snapshot") == 1
    assert len(c.entries()) == 2


# -- salmon-dkim cache ----------------------------------------------------------

def run(*args):
    return CliRunner().invoke(main, ["cache", *args])


def config(tmp_path, dns_lines="CacheFile = cache.json\n"):
    ini = tmp_path / "salmon_dkim.ini"
    ini.write_text("[DNS]\n" + dns_lines)
    return str(ini)


def running_cache(tmp_path, *answers) -> DNSCache:
    c = cache(path=tmp_path / "cache.json", snapshot_interval=0)
    for a in answers:
        put(c, a)
    c.close()
    return c


def test_cache_command_shows_answers_types_and_missing_names(tmp_path):
    running_cache(tmp_path, answer(NAME, "TXT", 3600, f'"{KEY}"'),
                  answer("example.com", "MX", 3600, "10 mx.example.com."),
                  answer(MISSING, "TXT", 0, rcode="NXDOMAIN", soa_minimum=300))
    result = run("--config", config(tmp_path))
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("3 cached answers in") and "as of" in lines[0]
    assert lines[1].split() == ["NAME", "TYPE", "ANSWER", "EXPIRES", "IN", "EXPIRES", "AT"]
    assert any(line.startswith(NAME) and " TXT " in line and "v=DKIM1; k=rsa; p=MIIBIjAN" in line and "59m" in line
               for line in lines)
    assert any(line.startswith("example.com ") and "10 mx.example.com." in line for line in lines)
    assert any(line.startswith(MISSING) and "does not exist" in line and "4m" in line for line in lines)


def test_cache_command_full_shows_whole_records(tmp_path):
    running_cache(tmp_path, answer(NAME, "TXT", 3600, f'"{KEY}" "{"A" * 200}"'))
    assert KEY + "A" * 200 in run("--config", config(tmp_path), "--full").output


def test_cache_command_clear_empties_the_snapshot_and_the_running_cache(tmp_path):
    running = running_cache(tmp_path, answer(NAME, "TXT", 3600, f'"{KEY}"'))
    result = run("--config", config(tmp_path), "--clear")
    assert result.exit_code == 0 and "Cleared 1 cached answers" in result.output
    assert "cache is empty" in run("--config", config(tmp_path)).output
    assert running.lookup(dns.name.from_text(NAME), dns.rdatatype.TXT) is None


def test_cache_command_says_when_caching_is_off(tmp_path):
    result = run("--config", config(tmp_path, "CacheSize = 0\nCacheFile = cache.json\n"))
    assert result.exit_code == 0 and "caching is off" in result.output


def test_cache_command_says_when_no_cache_file_is_configured():
    result = run()
    assert result.exit_code == 0 and "No [DNS] CacheFile is configured" in result.output


def test_cache_command_before_anything_was_cached(tmp_path):
    result = run("--config", config(tmp_path))
    assert result.exit_code == 0 and "Nothing cached yet" in result.output


@pytest.mark.parametrize("content", ["[]", "{not json", '{"version": 1, "entries": []}'])
def test_cache_command_refuses_a_file_that_is_not_a_snapshot(tmp_path, content):
    (tmp_path / "cache.json").write_text(content)
    result = run("--config", config(tmp_path))
    assert result.exit_code == 2 and "not a DNS cache snapshot" in result.output


def test_cache_command_bad_configuration_is_exit_2(tmp_path):
    result = run("--config", config(tmp_path, "CacheSize = many\n"))
    assert result.exit_code == 2 and "CacheSize" in result.output
