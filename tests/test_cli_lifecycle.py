"""salmon-dkim keys, activate and rotate, run as a user runs them (DNS from a zone file the test edits)."""
import datetime
import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import KEYS, private_copy

from salmon_dkim.cli import main
from salmon_dkim.core.keys import load_private_key, zone_line
from salmon_dkim.core.lifecycle import STATE_FILE

TODAY = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d")


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


class Site:
    """A keys folder (example.com s1 + ed1, shared.test sh1), its INI and the zone file its DNS is."""

    def __init__(self, root: Path, domains: str = "[[example.com]]\nSelectors = s1, ed1\n") -> None:
        self.keys = root / "keys"
        for dest, src in {"example.com/s1.key": "example.com.rsa2048.key",
                          "example.com/ed1.key": "example.com.ed25519.key",
                          "shared.test/sh1.key": "example.org.rsa2048.key"}.items():
            private_copy(KEYS / src, self.keys / dest)
        self.zone = root / "dns.zone"
        self.zone.write_text("")
        self.ini = root / "dkim.ini"
        self.ini.write_text(f"[Signing]\nKeysDir = keys\nDefaultDomain = shared.test\nDefaultSelectors = sh1\n"
                            f"[Domains]\n{domains}[DNS]\nZoneFile = dns.zone\n")

    def publish(self, domain: str, selector: str) -> None:
        txt = load_private_key(self.keys / domain / f"{selector}.key").dns_txt()
        with open(self.zone, "a") as f:
            f.write(zone_line(selector, domain, txt) + "\n")

    def unpublish(self, selector: str) -> None:
        lines = self.zone.read_text().splitlines(keepends=True)
        self.zone.write_text("".join(line for line in lines if not line.startswith(f"{selector}._domainkey.")))

    def keys_json(self) -> dict:
        result = run("keys", "--config", self.ini, "--json")
        assert result.exit_code == 0, result.output
        return {f"{k['domain']}/{k['selector']}": k for k in json.loads(result.stdout)}


@pytest.fixture
def site(tmp_path):
    return Site(tmp_path)


# --- keys ---------------------------------------------------------------------------------------------

def test_keys_lists_each_key_with_its_state_record_and_next_step(site):
    site.publish("shared.test", "sh1")
    assert run("activate", "shared.test", "--config", site.ini).exit_code == 0
    result = run("keys", "--config", site.ini)
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["domain", "selector", "key", "state", "record", "since", "next"]
    rows = {tuple(line.split()[:5]) for line in lines[1:]}
    assert rows == {("example.com", "ed1", "ed25519", "pending", "missing"),
                    ("example.com", "s1", "rsa-2048", "pending", "missing"),
                    ("shared.test", "sh1", "rsa-2048", "active", "published")}
    s1 = next(line for line in lines if line.startswith("example.com  s1"))
    assert "publish this record: TXT at s1._domainkey.example.com (salmon-dkim dns-record example.com s1)" in s1


def test_keys_json_is_one_array_for_scripts(site):
    site.publish("example.com", "s1")
    run("activate", "example.com", "s1", "--config", site.ini)
    s1 = site.keys_json()["example.com/s1"]
    assert {k: s1[k] for k in ("algorithm", "bits", "state", "signing", "record", "published", "next")} == {
        "algorithm": "rsa", "bits": 2048, "state": "active", "signing": True, "record": "ok", "published": True,
        "next": "none (signing)"}
    assert s1["since"].endswith("Z") and s1["path"] == str(site.keys / "example.com/s1.key")


def test_keys_says_loudly_when_an_active_keys_record_is_gone(site):
    site.publish("example.com", "s1")
    run("activate", "example.com", "s1", "--config", site.ini)
    site.unpublish("s1")
    result = run("keys", "--config", site.ini)
    assert "active, RECORD MISSING" in result.stdout
    assert "RECORD MISSING: publish the record again (salmon-dkim dns-record example.com s1); the key still signs" \
        in result.stdout
    assert result.stderr.strip().startswith("WARNING: example.com s1 signs but its record is missing")


def test_keys_lists_a_key_file_no_configuration_names_as_unused(site):
    private_copy(KEYS / "example.com.rsa1024.key", site.keys / "example.com/old.key")
    assert site.keys_json()["example.com/old"]["state"] == "unused"


def test_keys_with_a_bad_configuration_is_exit_2_in_one_line(tmp_path):
    (tmp_path / "bad.ini").write_text("[Signing]\nSharedSignature = never\n")
    result = run("keys", "--config", tmp_path / "bad.ini")
    assert result.exit_code == 2 and len(result.stderr.splitlines()) == 1
    assert "SharedSignature: 'never' is not valid here" in result.stderr


# --- activate -----------------------------------------------------------------------------------------

def test_activate_is_1_while_the_record_is_missing_and_says_why(site):
    result = run("activate", "example.com", "s1", "--config", site.ini)
    assert result.exit_code == 1
    assert result.stdout.startswith("pending: example.com s1: not published: no TXT record at "
                                    "s1._domainkey.example.com; next: publish this record")


def test_activate_is_0_once_the_record_matches_and_records_it(site):
    site.publish("example.com", "s1")
    result = run("activate", "example.com", "s1", "--config", site.ini)
    assert result.exit_code == 0 and result.stdout.startswith("active: example.com s1 since ")
    assert "verified" in json.loads((site.keys / STATE_FILE).read_text())["keys"]["example.com/s1"]


def test_activate_a_domain_is_1_while_one_of_its_keys_is_pending(site):
    site.publish("example.com", "s1")
    result = run("activate", "example.com", "--config", site.ini)
    assert result.exit_code == 1
    assert result.stdout.splitlines()[0].startswith("active: example.com s1")
    assert result.stdout.splitlines()[1].startswith("pending: example.com ed1: not published")


@pytest.mark.parametrize("args, words", [
    (["example.net"], "example.net is not in [Domains] and is not the DefaultDomain"),
    (["example.com", "s9"], "example.com has no key s9; its keys: s1, ed1"),
    (["../etc"], "'../etc' is not a valid domain"),
])
def test_activate_refuses_what_it_does_not_know_with_exit_2(site, args, words):
    result = run("activate", *args, "--config", site.ini)
    assert result.exit_code == 2 and words in result.stderr


def test_activate_moves_a_key_pending_past_pending_key_days(site):
    long_ago = (datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=8))
    (site.keys / STATE_FILE).write_text(json.dumps(
        {"version": 1, "keys": {"example.com/ed1": {"seen": long_ago.strftime("%Y-%m-%dT%H:%M:%SZ")}}}))
    result = run("activate", "example.com", "ed1", "--config", site.ini)
    assert result.exit_code == 1 and result.stdout.startswith("retired: example.com ed1: none (never published in "
                                                              "7 days")
    assert (site.keys / "retired/example.com/ed1.key").exists() and not (site.keys / "example.com/ed1.key").exists()
    assert site.keys_json()["example.com/ed1"]["moved"] is True


# --- rotate -------------------------------------------------------------------------------------------

def test_rotate_makes_the_next_key_for_each_algorithm_and_prints_the_records(site):
    for selector in ("s1", "ed1"):
        site.publish("example.com", selector)
    run("activate", "example.com", "--config", site.ini)
    result = run("rotate", "example.com", "--config", site.ini)
    assert result.exit_code == 0, result.output
    for selector, algorithm in ((f"s{TODAY}", "rsa"), (f"ed{TODAY}", "ed25519")):
        txt = load_private_key(site.keys / f"example.com/{selector}.key").dns_txt()
        assert f"Publish a TXT record at {selector}._domainkey.example.com with this value:\n\n{txt}\n" \
            in result.stdout
        assert f"{selector} ({algorithm}) is pending: " in result.stdout
    assert f"s{TODAY} (rsa) is pending: s1 signs until then, and stays published 7 days after." in result.stdout
    states = site.keys_json()
    assert (states[f"example.com/s{TODAY}"]["state"], states[f"example.com/s{TODAY}"]["after"]) == ("pending", "s1")


def test_once_the_new_key_is_active_the_old_one_retires_and_keys_says_when_to_remove_it(site):
    site.publish("example.com", "s1")
    run("activate", "example.com", "s1", "--config", site.ini)
    assert run("rotate", "example.com", "--config", site.ini, "--algorithm", "rsa").exit_code == 0
    site.publish("example.com", f"s{TODAY}")
    assert run("activate", "example.com", f"s{TODAY}", "--config", site.ini).exit_code == 0
    states = site.keys_json()
    assert states[f"example.com/s{TODAY}"]["signing"] is True
    assert states["example.com/s1"]["state"] == "retiring" and states["example.com/s1"]["signing"] is False
    assert states["example.com/s1"]["next"].startswith("keep the record published; remove this record after ")


def test_rotate_while_a_key_of_that_algorithm_waits_for_its_record_makes_no_second_key(site):
    result = run("rotate", "example.com", "--config", site.ini, "--algorithm", "rsa")
    assert result.exit_code == 0
    assert result.stdout.startswith("rsa: s1 is already pending (since ")
    assert "no new key. publish this record: TXT at s1._domainkey.example.com" in result.stdout
    assert sorted(p.name for p in (site.keys / "example.com").glob("*.key")) == ["ed1.key", "s1.key"]


@pytest.mark.parametrize("args, words", [
    (["example.net"], "example.net is not in [Domains] and is not the DefaultDomain; add it first"),
    (["example.com", "--selector", "s2"], "one --selector cannot name both new keys"),
    (["example.com", "--bits", "512"], "under 1024 bits verifiers refuse the key"),
    (["example.com", "--algorithm", "ed25519", "--bits", "2048"], "a key size applies to RSA keys only"),
])
def test_rotate_refuses_bad_requests_with_exit_2(site, args, words):
    result = run("rotate", *args, "--config", site.ini)
    assert result.exit_code == 2 and words in result.stderr
    assert sorted(p.name for p in (site.keys / "example.com").glob("*.key")) == ["ed1.key", "s1.key"]


def test_the_installed_commands_keep_their_exit_codes(site):
    command = Path(sys.executable).with_name("salmon-dkim")
    pending = subprocess.run([command, "activate", "example.com", "s1", "--config", site.ini], capture_output=True)
    site.publish("example.com", "s1")
    active = subprocess.run([command, "activate", "example.com", "s1", "--config", site.ini], capture_output=True)
    listed = subprocess.run([command, "keys", "--config", site.ini, "--json"], capture_output=True, text=True)
    assert (pending.returncode, active.returncode, listed.returncode) == (1, 0, 0)
    assert {k["selector"]: k["state"] for k in json.loads(listed.stdout)} == {
        "s1": "active", "ed1": "pending", "sh1": "pending"}
