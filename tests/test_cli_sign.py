"""salmon-dkim sign."""
import json
import os

import pytest
from click.testing import CliRunner
from conftest import KEYS, MESSAGES, message
from peers import have_opendkim, opendkim_results

from salmon_dkim.cli import main

PLAIN = MESSAGES / "plain.eml"


@pytest.fixture
def config(keys_dir, tmp_path):
    path = tmp_path / "salmon_dkim.ini"
    path.write_text(f"[Signing]\nKeysDir = {keys_dir}\n[Domains]\n  [[example.com]]\n  Selectors = s1, ed1\n"
                    f"[DNS]\nZoneFile = {KEYS / 'keys.zone'}\n"
                    f"[Logging]\nActivityLog = {tmp_path / 'logs' / 'activity.jsonl'}\n")
    return path


def test_sign_does_not_sign_with_a_key_dns_does_not_publish(keys_dir, tmp_path):
    """The issue's own trial: sign gave d=example.net; s=n1 for an unpublished key."""
    assert run("keygen", "example.net", "--selector", "n1", "--keys-dir", keys_dir).exit_code == 0
    ini = tmp_path / "net.ini"
    ini.write_text(f"[Signing]\nKeysDir = {keys_dir}\n[Domains]\n  [[example.net]]\n  Selectors = n1\n"
                   f"[DNS]\nZoneFile = {KEYS / 'keys.zone'}\n")
    result = run("sign", "--config", ini, "--domain", "example.net", PLAIN)
    assert result.exit_code == 1 and result.stdout == ""
    assert "n1" in result.stderr and "pending" in result.stderr, result.stderr


def run(*args, stdin: bytes = None):
    return CliRunner().invoke(main, [str(a) for a in args], input=stdin)


# --- sign ---------------------------------------------------------------------------------------

@pytest.mark.skipif(not have_opendkim(), reason="opendkim not installed")
def test_sign_prints_the_signed_message_a_peer_verifies(config):
    result = run("sign", "--config", config, PLAIN)
    assert result.exit_code == 0, result.stderr
    assert result.stdout_bytes.endswith(message("plain.eml"))
    assert [r.result for r in opendkim_results(result.stdout_bytes, KEYS / "keys.zone")] == ["pass", "pass"]


def test_sign_reads_standard_input_and_writes_crlf(config):
    result = run("sign", "--config", config, stdin=message("lf-only.eml"))
    assert result.exit_code == 0
    assert result.stdout_bytes.startswith(b"DKIM-Signature: v=1; a=rsa-sha256;")
    assert result.stdout_bytes.endswith(message("lf-only.eml").replace(b"\n", b"\r\n"))


def test_sign_with_explicit_key_needs_no_configuration(keys_dir):
    result = run("sign", "--domain", "example.org", "--selector", "s2048",
                 "--key", keys_dir / "example.org/s2048.key", PLAIN)
    assert result.exit_code == 0
    assert b" d=example.org; s=s2048;" in result.stdout_bytes


def test_sign_domain_option_forces_the_signing_domain(config, keys_dir):
    result = run("sign", "--config", config, "--domain", "example.com", "--selector", "ed1", PLAIN)
    assert result.exit_code == 0 and result.stdout_bytes.count(b"DKIM-Signature:") == 1
    assert b"a=ed25519-sha256" in result.stdout_bytes


def test_sign_without_a_key_prints_nothing_and_says_why(config, tmp_path):
    other = message("plain.eml").replace(b"example.com>", b"example.net>")
    result = run("sign", "--config", config, stdin=other)
    assert result.exit_code == 1 and result.stdout_bytes == b""
    assert "not signed: no signing key for example.net" in result.stderr
    lines = [json.loads(line) for line in (tmp_path / "logs/activity.jsonl").read_text().splitlines()]
    [entry] = [e for e in lines if e["event"] != "key"]  # the key check records its keys' activation too
    assert entry["event"] == "unsigned"


def test_sign_with_a_refused_key_exits_1(keys_dir):
    os.chmod(keys_dir / "example.com/s1.key", 0o644)
    key = keys_dir / "example.com/s1.key"
    result = run("sign", "--domain", "example.com", "--selector", "s1", "--key", key, PLAIN)
    assert result.exit_code == 1 and result.stdout_bytes == b""
    assert "chmod 600" in result.stderr and result.stderr.count("\n") == 1


@pytest.mark.parametrize("args", [
    ["--selector", "s1"],
    ["--domain", "example.com", "--key", "k.key"],
    ["--domain", "example.com", "--selector", "s1", "--key", "/nonexistent.key"],
    ["--config", "/nonexistent.ini"],
])
def test_sign_bad_arguments_exit_2(args):
    result = run("sign", *args, PLAIN)
    assert result.exit_code == 2 and result.stdout_bytes == b""


def test_sign_unreadable_message_exits_2(config, tmp_path):
    result = run("sign", "--config", config, tmp_path / "missing.eml")
    assert result.exit_code == 2 and "cannot read" in result.stderr
