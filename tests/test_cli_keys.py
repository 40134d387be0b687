"""salmon-dkim keygen, dns-record and check-dns, run as a user runs them."""
import base64
import datetime
import json
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import KEYS, private_copy
from cryptography.hazmat.primitives import serialization

from salmon_dkim.cli import main
from salmon_dkim.dns.resolver import ZoneResolver
from salmon_dkim.core.keys import load_private_key, parse_key_record, zone_line

NAME = "s1._domainkey.example.com"


def run(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def zone(tmp_path, *records: str):
    """A zone file with TXT records at s1._domainkey.example.com."""
    path = tmp_path / "test.zone"
    path.write_text("".join(zone_line("s1", "example.com", r) + "\n" for r in records))
    return path


def published_txt(selector: str, domain: str = "example.com") -> str:
    return ZoneResolver(KEYS / "keys.zone").txt(f"{selector}._domainkey.{domain}")[0].decode()


def check(keys_dir, zone_path, selector="s1"):
    return run("check-dns", "example.com", selector, "--keys-dir", keys_dir, "--zone", zone_path)


# --- keygen -------------------------------------------------------------------

def test_acceptance_keygen_then_check_dns_passes_and_another_key_is_a_mismatch(tmp_path):
    k = tmp_path / "K"
    assert run("keygen", "example.com", "--selector", "s1", "--keys-dir", k).exit_code == 0
    good = check(k, k / "example.com/s1.dns")
    assert good.exit_code == 0, good.output
    other = check(k, KEYS / "keys.zone")
    assert other.exit_code == 1
    assert other.stdout.startswith("mismatch: s1._domainkey.example.com publishes a different key")
    assert len(other.stdout.splitlines()) == 1


def test_acceptance_through_the_installed_command(tmp_path):
    command = Path(sys.executable).with_name("salmon-dkim")
    k = tmp_path / "K"
    subprocess.run([command, "keygen", "example.com", "--selector", "s1", "--keys-dir", k], check=True,
                   capture_output=True)
    good = subprocess.run([command, "check-dns", "example.com", "s1", "--keys-dir", k,
                           "--zone", k / "example.com/s1.dns"], capture_output=True, text=True)
    bad = subprocess.run([command, "check-dns", "example.com", "s1", "--keys-dir", k,
                          "--zone", KEYS / "keys.zone"], capture_output=True, text=True)
    assert good.returncode == 0, good.stdout + good.stderr
    assert bad.returncode == 1 and bad.stdout.startswith("mismatch: ")


@pytest.mark.parametrize("algorithm, bits", [("rsa", 1024), ("rsa", 3072), ("ed25519", None)])
def test_keygen_makes_a_key_of_the_asked_algorithm_and_size(tmp_path, algorithm, bits):
    args = ["keygen", "example.com", "--selector", "s1", "--keys-dir", tmp_path, "--algorithm", algorithm]
    result = run(*args, *(["--bits", bits] if bits else []))
    assert result.exit_code == 0, result.output
    key = load_private_key(tmp_path / "example.com/s1.key")
    assert (key.algorithm, key.bits) == (algorithm, bits or 256)
    assert check(tmp_path, tmp_path / "example.com/s1.dns").exit_code == 0


def test_keygen_default_is_rsa_2048_in_keys_folder_private_to_its_owner(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert run("keygen", "example.com", "--selector", "s1").exit_code == 0
    key_path = tmp_path / "keys/example.com/s1.key"
    assert load_private_key(key_path).bits == 2048
    assert mode(key_path) == 0o600
    assert mode(key_path.parent) == 0o700


def test_keygen_prints_record_where_to_publish_it_and_the_files(tmp_path):
    result = run("keygen", "example.com", "--selector", "s1", "--keys-dir", tmp_path, "--algorithm", "ed25519")
    txt = load_private_key(tmp_path / "example.com/s1.key").dns_txt()
    assert f"Publish a TXT record at {NAME} with this value:\n\n{txt}\n" in result.stdout
    assert zone_line("s1", "example.com", txt) in result.stdout
    assert f"{tmp_path}/example.com/s1.key" in result.stdout and f"{tmp_path}/example.com/s1.dns" in result.stdout


def test_dns_file_is_a_zone_file_with_the_record(tmp_path):
    run("keygen", "example.com", "--selector", "s1", "--keys-dir", tmp_path)
    key = load_private_key(tmp_path / "example.com/s1.key")
    records = ZoneResolver(tmp_path / "example.com/s1.dns").txt(NAME)
    assert records == [key.dns_txt().encode()]
    assert all(len(s) <= 255 for s in (tmp_path / "example.com/s1.dns").read_text().split('"')[1::2])


def test_keygen_testing_publishes_t_y_and_check_dns_warns_but_passes(tmp_path):
    run("keygen", "example.com", "--selector", "s1", "--keys-dir", tmp_path, "--algorithm", "ed25519", "--testing")
    dns_file = tmp_path / "example.com/s1.dns"
    assert parse_key_record(ZoneResolver(dns_file).txt(NAME)[0]).flags == ("y",)
    result = check(tmp_path, dns_file)
    assert result.exit_code == 0
    assert result.stderr.startswith(f"warning: {NAME} has t=y (testing)")
    assert result.stdout.startswith(f"ok: {NAME} publishes the public key of")


def test_default_selector_is_dated_and_never_reused(tmp_path):
    today = datetime.datetime.now(datetime.timezone.utc).strftime("s%Y%m%d")
    for _ in range(2):
        assert run("keygen", "example.com", "--keys-dir", tmp_path, "--algorithm", "ed25519").exit_code == 0
    assert sorted(p.name for p in (tmp_path / "example.com").glob("*.key")) == [f"{today}-2.key", f"{today}.key"]


@pytest.mark.parametrize("planted", ["s1.dns", "s1.key"])
def test_keygen_never_writes_through_a_symlink_planted_at_its_file_names(tmp_path, planted):
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    (tmp_path / "K/example.com").mkdir(parents=True)
    (tmp_path / "K/example.com" / planted).symlink_to(victim)
    result = run("keygen", "example.com", "--selector", "s1", "--keys-dir", tmp_path / "K")
    assert result.exit_code == 2
    assert f"{planted} already exists and is never overwritten" in result.stderr
    assert victim.read_text() == "precious\n"
    assert [p.name for p in (tmp_path / "K/example.com").iterdir()] == [planted]  # nothing written beside it


def test_keygen_never_creates_the_target_of_a_dangling_symlink(tmp_path):
    (tmp_path / "K/example.com").mkdir(parents=True)
    (tmp_path / "K/example.com/s1.dns").symlink_to(tmp_path / "created-elsewhere")
    assert run("keygen", "example.com", "--selector", "s1", "--keys-dir", tmp_path / "K").exit_code == 2
    assert not (tmp_path / "created-elsewhere").exists()


def test_keygen_never_overwrites_a_key(keys_dir):
    before = (keys_dir / "example.com/ed1.key").read_bytes()
    result = run("keygen", "example.com", "--selector", "ed1", "--keys-dir", keys_dir, "--algorithm", "ed25519")
    assert result.exit_code == 2
    assert "ed1.key already exists and is never overwritten; pick another selector" in result.stderr
    assert (keys_dir / "example.com/ed1.key").read_bytes() == before


@pytest.mark.parametrize("args, words", [
    (["--bits", "512"], "under 1024 bits verifiers refuse the key"),
    (["--bits", "1536"], "choose one of 1024, 2048, 3072, 4096"),
    (["--algorithm", "ed25519", "--bits", "2048"], "--bits: a key size applies to RSA keys only"),
    (["--algorithm", "dsa"], "'dsa' is not one of 'rsa', 'ed25519'"),
    (["--selector", "../s1"], "'../s1' is not a valid selector"),
])
def test_keygen_refuses_bad_arguments(tmp_path, args, words):
    result = run("keygen", "example.com", "--keys-dir", tmp_path, *args)
    assert result.exit_code == 2
    assert words in result.stderr
    assert not list(tmp_path.rglob("*.key"))


def test_keygen_refuses_a_domain_that_is_not_a_domain(tmp_path):
    result = run("keygen", "../etc", "--keys-dir", tmp_path)
    assert result.exit_code == 2 and "'../etc' is not a valid domain" in result.stderr


# --- dns-record ---------------------------------------------------------------

def test_dns_record_prints_the_zone_line_keygen_wrote(tmp_path):
    run("keygen", "example.com", "--selector", "s1", "--keys-dir", tmp_path, "--algorithm", "ed25519")
    result = run("dns-record", "example.com", "s1", "--keys-dir", tmp_path)
    assert result.exit_code == 0
    assert result.stdout in (tmp_path / "example.com/s1.dns").read_text()


def test_dns_record_of_a_test_key_is_its_published_record(keys_dir):
    result = run("dns-record", "example.com", "s1", "--keys-dir", keys_dir)
    assert result.stdout.strip() == zone_line("s1", "example.com", published_txt("s1"))


def test_dns_record_of_a_missing_key_says_so(tmp_path):
    result = run("dns-record", "example.com", "nope", "--keys-dir", tmp_path)
    assert result.exit_code == 2 and "example.com/nope.key cannot be read" in result.stderr


def test_dns_record_refuses_a_group_readable_key(keys_dir):
    (keys_dir / "example.com/s1.key").chmod(0o644)
    result = run("dns-record", "example.com", "s1", "--keys-dir", keys_dir)
    assert result.exit_code == 2 and "(mode 0644); run chmod 600 on it" in result.stderr


# --- check-dns ----------------------------------------------------------------

def test_check_dns_passes_when_the_published_key_is_the_private_keys(keys_dir, zone_file):
    for selector in ("s1", "ed1", "weak1024"):
        result = check(keys_dir, zone_file, selector)
        assert result.exit_code == 0, result.output
        assert result.stderr == ""


def test_check_dns_accepts_a_bare_pkcs1_publication(keys_dir, tmp_path):
    key = load_private_key(keys_dir / "example.com/s1.key")
    der = key.key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)
    result = check(keys_dir, zone(tmp_path, "v=DKIM1; k=rsa; p=" + base64.b64encode(der).decode()))
    assert result.exit_code == 0, result.output


def test_check_dns_not_published(keys_dir, tmp_path):
    result = check(keys_dir, zone(tmp_path), "s1")
    assert (result.exit_code, result.stdout) == (1, f"not published: no TXT record at {NAME}\n")


def test_check_dns_revoked(keys_dir, tmp_path):
    result = check(keys_dir, zone(tmp_path, "v=DKIM1; k=rsa; p="))
    assert result.exit_code == 1 and result.stdout.startswith(f"revoked: the record at {NAME} has an empty p=")


def test_check_dns_malformed_names_the_tag(keys_dir, tmp_path):
    result = check(keys_dir, zone(tmp_path, "v=DKIM1; k=rsa; p=%%%"))
    assert result.exit_code == 1
    assert result.stdout == f"malformed: the record at {NAME} has a bad p: p= is not valid base64\n"


def test_check_dns_unknown_key_type_is_malformed_k(keys_dir, tmp_path):
    result = check(keys_dir, zone(tmp_path, "v=DKIM1; k=dsa; p=AAAA"))
    assert result.exit_code == 1 and result.stdout.startswith(f"malformed: the record at {NAME} has a bad k:")


def test_check_dns_key_type_differs(keys_dir, tmp_path):
    result = check(keys_dir, zone(tmp_path, published_txt("ed1")))
    assert result.exit_code == 1
    assert result.stdout.startswith(f"key type differs: {NAME} publishes k=ed25519 but ")
    assert "s1.key is rsa" in result.stdout


def test_check_dns_too_weak(keys_dir, tmp_path):
    result = check(keys_dir, zone(tmp_path, published_txt("weak512")))
    assert result.exit_code == 1
    assert result.stdout.startswith(f"too weak: {NAME} publishes a 512-bit RSA key; verifiers refuse keys under 1024")


def test_check_dns_mismatch(keys_dir, tmp_path):
    result = check(keys_dir, zone(tmp_path, published_txt("s2048", "example.org")))
    assert result.exit_code == 1
    assert result.stdout.startswith(f"mismatch: {NAME} publishes a different key from the public half of ")


def test_check_dns_more_than_one_dkim_record(keys_dir, tmp_path):
    result = check(keys_dir, zone(tmp_path, published_txt("s1"), published_txt("s2048", "example.org")))
    assert result.exit_code == 1
    assert result.stdout == (f"multiple records: 2 TXT records at {NAME} (2 of them DKIM key records); a key needs "
                             "exactly one, verifiers refuse it (permerror): remove the others\n")


def test_check_dns_refuses_the_right_key_beside_another_txt_record_as_verifiers_do(keys_dir, tmp_path):
    result = check(keys_dir, zone(tmp_path, "google-site-verification=abc", published_txt("s1")))
    assert result.exit_code == 1
    assert result.stdout.startswith(f"multiple records: 2 TXT records at {NAME} (1 of them DKIM key records)")


def test_check_dns_and_verify_give_one_answer_for_a_name_with_two_txt_records(keys_dir, tmp_path):
    two = zone(tmp_path, published_txt("s1"), "google-site-verification=abc")
    message = tmp_path / "message.eml"
    message.write_bytes(b"From: alice@example.com\r\nSubject: hi\r\n\r\nHello.\r\n")
    signed = run("sign", "--domain", "example.com", "--selector", "s1", "--key", keys_dir / "example.com/s1.key",
                 message)
    assert signed.exit_code == 0, signed.output
    message.write_bytes(signed.stdout_bytes)
    verified = CliRunner().invoke(main, ["verify", "--json", "--zone", str(two), str(message)])
    assert [r["result"] for r in json.loads(verified.stdout)] == ["permerror"]
    assert check(keys_dir, two).exit_code == 1
    one = zone(tmp_path, published_txt("s1"))
    verified = CliRunner().invoke(main, ["verify", "--json", "--zone", str(one), str(message)])
    assert [r["result"] for r in json.loads(verified.stdout)] == ["pass"]
    assert check(keys_dir, one).exit_code == 0


def test_check_dns_hash_list_without_sha256_is_unusable(keys_dir, tmp_path):
    result = check(keys_dir, zone(tmp_path, published_txt("s1").replace("k=rsa;", "k=rsa; h=sha1;")))
    assert result.exit_code == 1 and result.stdout.startswith(f"unusable: {NAME} has h=sha1")


def test_check_dns_missing_private_key_is_exit_2(tmp_path, zone_file):
    result = check(tmp_path, zone_file)
    assert result.exit_code == 2 and "example.com/s1.key cannot be read" in result.stderr


def test_check_dns_refuses_a_weak_private_key_with_exit_2(tmp_path, zone_file):
    private_copy(KEYS / "example.com.rsa512.key", tmp_path / "example.com/weak512.key")
    result = check(tmp_path, zone_file, "weak512")
    assert result.exit_code == 2 and "512-bit RSA key, under the 1024-bit minimum" in result.stderr


def test_check_dns_unreadable_zone_file_is_exit_2(keys_dir, tmp_path):
    bad = tmp_path / "bad.zone"
    bad.write_text("this is not ( a zone\n")
    result = check(keys_dir, bad)
    assert result.exit_code == 2 and "cannot be read as a zone file" in result.stderr


# --- check-dns over live DNS (a real dnsmasq on 127.0.0.1) ----------------------

def live_config(tmp_path, dns_section: str, keys_dir) -> Path:
    path = tmp_path / "salmon_dkim.ini"
    path.write_text(f"[Signing]\nKeysDir = {keys_dir}\n{dns_section}Timeout = 0.5\n")
    return path


def test_check_dns_over_live_dns_passes_with_the_configured_name_server(tmp_path, keys_dir,
                                                                          keys_dns_server):
    config = live_config(tmp_path, keys_dns_server.ini(), keys_dir)
    result = run("check-dns", "example.com", "ed1", "--config", config)
    assert result.exit_code == 0, result.output


def test_check_dns_over_live_dns_says_not_published_for_nxdomain(tmp_path, keys_dir, keys_dns_server):
    config = live_config(tmp_path, keys_dns_server.ini(), keys_dir)
    result = run("check-dns", "example.com", "nosuch", "--config", config, "--keys-dir", keys_dir)
    assert result.exit_code == 2  # no private key for that selector either
    private_copy(KEYS / "example.com.rsa2048.key", keys_dir / "example.com" / "nosuch.key")
    result = run("check-dns", "example.com", "nosuch", "--config", config)
    assert result.exit_code == 1 and result.stdout.startswith("not published:")


def test_check_dns_temporary_failure_says_could_not_fetch(tmp_path, keys_dir, black_hole):
    section = f"[DNS]\nNameservers = 127.0.0.1\nPort = {black_hole.port}\n"
    result = run("check-dns", "example.com", "s1", "--config", live_config(tmp_path, section, keys_dir))
    assert result.exit_code == 1
    assert result.stdout.startswith("could not fetch: temporary DNS failure")
