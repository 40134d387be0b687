"""TTLCache: TTLs, negative answers, LRU bound, the snapshot file, and `salmon-dkim cache`."""
import json
import logging
import os
import time

from click.testing import CliRunner

from salmon_dkim.dns.cache import TTLCache
from salmon_dkim.cli import main

KEY = b"v=DKIM1; k=rsa; p=MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAuvLEcj0"
NAME = "s1._domainkey.example.com"
MISSING = "nx._domainkey.example.com"
WALL = 1_800_000_000.0


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def cache(clock=None, *, max_size=100, max_ttl=86400, negative_ttl=300, **kwargs) -> TTLCache:
    return TTLCache(max_size, max_ttl, negative_ttl, clock=clock or Clock(), **kwargs)


def test_answer_is_kept_for_its_ttl():
    clock = Clock()
    c = cache(clock)
    c.put(NAME, [KEY], 60)
    clock.advance(59)
    assert c.get(NAME).records == (KEY,)
    clock.advance(1)
    assert c.get(NAME) is None


def test_ttl_is_capped_at_max_ttl():
    clock = Clock()
    c = cache(clock, max_ttl=10)
    c.put(NAME, [KEY], 3600)
    clock.advance(10)
    assert c.get(NAME) is None


def test_zero_ttl_is_not_cached():
    c = cache()
    c.put(NAME, [KEY], 0)
    assert c.get(NAME) is None


def test_negative_answer_is_kept_for_negative_ttl():
    clock = Clock()
    c = cache(clock, negative_ttl=300)
    c.put_negative(MISSING)
    clock.advance(299)
    assert c.get(MISSING).records is None
    clock.advance(1)
    assert c.get(MISSING) is None


def test_soa_minimum_shortens_negative_caching():
    clock = Clock()
    c = cache(clock, negative_ttl=300)
    c.put_negative(MISSING, soa_ttl=30)
    clock.advance(30)
    assert c.get(MISSING) is None


def test_soa_minimum_longer_than_negative_ttl_is_capped():
    clock = Clock()
    c = cache(clock, negative_ttl=300)
    c.put_negative(MISSING, soa_ttl=86400)
    clock.advance(300)
    assert c.get(MISSING) is None


def test_zero_negative_ttl_turns_negative_caching_off():
    c = cache(negative_ttl=0)
    c.put_negative(MISSING)
    assert c.get(MISSING) is None


def test_least_recently_used_entry_goes_first():
    c = cache(max_size=2)
    c.put("a.example", [b"a"], 60)
    c.put("b.example", [b"b"], 60)
    c.get("a.example")
    c.put("c.example", [b"c"], 60)
    assert [name for name, _, _ in c.entries()] == ["a.example", "c.example"]


def test_max_size_zero_caches_nothing():
    c = cache(max_size=0)
    c.put(NAME, [KEY], 60)
    c.put_negative(MISSING)
    assert c.get(NAME) is None and c.get(MISSING) is None and len(c) == 0


def test_names_match_without_case_or_final_dot():
    c = cache()
    c.put("S1._DomainKey.Example.COM.", [KEY], 60)
    assert c.get(NAME).records == (KEY,)


def test_entries_list_records_or_none_with_expiry():
    clock = Clock(1000)
    c = cache(clock)
    c.put(NAME, [KEY, b"second"], 60)
    c.put_negative(MISSING)
    assert c.entries() == [(NAME, [KEY, b"second"], 1060), (MISSING, None, 1300)]


# -- the snapshot file ----------------------------------------------------------

def read(path):
    return json.loads(path.read_text())


def test_snapshot_holds_entries_with_wall_clock_expiry(tmp_path):
    path = tmp_path / "cache.json"
    c = cache(Clock(1000), path=path, wall_clock=lambda: WALL)
    c.put(NAME, [KEY], 60)
    c.put_negative(MISSING)
    c.close()
    entries = read(path)["entries"]
    assert entries == [{"name": NAME, "records": [KEY.decode()], "expires_at": WALL + 60},
                       {"name": MISSING, "records": None, "expires_at": WALL + 300}]


def test_snapshot_is_public_and_written_without_leftover_temp_files(tmp_path):
    path = tmp_path / "cache.json"
    c = cache(path=path)
    c.put(NAME, [KEY], 60)
    c.close()
    assert os.stat(path).st_mode & 0o777 == 0o644
    assert os.listdir(tmp_path) == ["cache.json"]


def test_snapshot_writes_are_throttled_until_close(tmp_path):
    path = tmp_path / "cache.json"
    c = cache(path=path, flush_interval=60)
    c.put("a.example", [b"a"], 60)
    c.put("b.example", [b"b"], 60)
    assert len(read(path)["entries"]) == 1
    c.close()
    assert len(read(path)["entries"]) == 2


def test_dirty_snapshot_is_written_within_the_flush_interval(tmp_path):
    path = tmp_path / "cache.json"
    c = cache(path=path, flush_interval=0.2)
    c.put("a.example", [b"a"], 60)
    c.put("b.example", [b"b"], 60)
    deadline = time.monotonic() + 5
    while len(read(path)["entries"]) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(read(path)["entries"]) == 2
    c.close()


def test_snapshot_is_read_back_at_start_without_expired_entries(tmp_path):
    path = tmp_path / "cache.json"
    first = cache(path=path, wall_clock=lambda: WALL)
    first.put(NAME, [KEY, b"\xff raw"], 60)
    first.put("short.example", [b"x"], 5)
    first.close()
    second = cache(path=path, wall_clock=lambda: WALL + 10)
    assert second.get(NAME).records == (KEY, b"\xff raw")
    assert second.get("short.example") is None


def test_corrupt_snapshot_is_ignored_with_a_warning_and_replaced(tmp_path, caplog):
    path = tmp_path / "cache.json"
    path.write_text("{not json")
    with caplog.at_level(logging.WARNING):
        c = cache(path=path)
    assert "ignoring the DNS cache snapshot" in caplog.text and str(path) in caplog.text
    c.put(NAME, [KEY], 60)
    c.close()
    assert read(path)["entries"][0]["name"] == NAME


def test_snapshot_entry_whose_name_is_not_text_is_ignored_with_a_warning(tmp_path, caplog):
    path = tmp_path / "cache.json"
    path.write_text('{"version": 1, "entries": [{"name": 5, "records": null, "expires_at": 9e9}]}')
    with caplog.at_level(logging.WARNING):
        c = cache(path=path)
    assert "name 5 is not text" in caplog.text and c.entries() == []


def test_unwritable_snapshot_warns_and_caching_goes_on(tmp_path, caplog):
    path = tmp_path / "no-such-folder" / "cache.json"
    c = cache(path=path)
    with caplog.at_level(logging.WARNING):
        c.put(NAME, [KEY], 60)
    assert "cannot write the DNS cache snapshot" in caplog.text
    assert c.get(NAME).records == (KEY,)


# -- salmon-dkim cache ----------------------------------------------------------

def run(*args):
    return CliRunner().invoke(main, ["cache", *args])


def config(tmp_path, dns_lines="CacheFile = cache.json\n"):
    ini = tmp_path / "salmon_dkim.ini"
    ini.write_text("[DNS]\n" + dns_lines)
    return str(ini)


def test_cache_command_shows_answers_and_missing_names(tmp_path):
    c = cache(path=tmp_path / "cache.json")
    c.put(NAME, [KEY], 3600)
    c.put_negative(MISSING)
    c.close()
    result = run("--config", config(tmp_path))
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[1].split() == ["NAME", "ANSWER", "EXPIRES", "IN", "EXPIRES", "AT"]
    assert any(line.startswith(NAME) and "v=DKIM1; k=rsa; p=MIIBIjAN" in line and "59m" in line
               for line in lines)
    assert any(line.startswith(MISSING) and "does not exist" in line and "4m" in line for line in lines)


def test_cache_command_full_shows_whole_records(tmp_path):
    c = cache(path=tmp_path / "cache.json")
    c.put(NAME, [KEY + b"A" * 200], 3600)
    c.close()
    assert (KEY + b"A" * 200).decode() in run("--config", config(tmp_path), "--full").output


def test_cache_command_clear_empties_the_snapshot_and_the_running_cache(tmp_path):
    running = cache(path=tmp_path / "cache.json", flush_interval=0)
    running.put(NAME, [KEY], 3600)
    result = run("--config", config(tmp_path), "--clear")
    assert result.exit_code == 0 and "Cleared 1 cached answers" in result.output
    assert "cache is empty" in run("--config", config(tmp_path)).output
    assert running.get(NAME) is None


def test_cache_command_says_when_caching_is_off(tmp_path):
    result = run("--config", config(tmp_path, "CacheSize = 0\nCacheFile = cache.json\n"))
    assert result.exit_code == 0 and "caching is off" in result.output


def test_cache_command_says_when_no_cache_file_is_configured():
    result = run()
    assert result.exit_code == 0 and "No [DNS] CacheFile is configured" in result.output


def test_cache_command_before_anything_was_cached(tmp_path):
    result = run("--config", config(tmp_path))
    assert result.exit_code == 0 and "Nothing cached yet" in result.output


def test_cache_command_refuses_a_corrupt_snapshot(tmp_path):
    (tmp_path / "cache.json").write_text("[]")
    result = run("--config", config(tmp_path))
    assert result.exit_code == 2 and "not a DNS cache snapshot" in result.output


def test_cache_command_bad_configuration_is_exit_2(tmp_path):
    result = run("--config", config(tmp_path, "CacheSize = many\n"))
    assert result.exit_code == 2 and "CacheSize" in result.output
