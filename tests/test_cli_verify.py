"""salmon-dkim verify: exit codes, --json shape, stdin, --config and --zone, as DESIGN.md says."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import KEYS, MESSAGES
from peers import have_mail_dkim, mail_dkim_sign

from salmon_dkim.cli import main

ZONE = str(KEYS / "keys.zone")


@pytest.fixture(scope="module")
def signed(tmp_path_factory) -> Path:
    if not have_mail_dkim():  # only the tests of a signed message need it
        pytest.skip("Mail::DKIM is not installed")
    path = tmp_path_factory.mktemp("cli") / "signed.eml"
    path.write_bytes(mail_dkim_sign((MESSAGES / "plain.eml").read_bytes(), "example.com", "s1",
                                    KEYS / "example.com.rsa2048.key"))
    return path


def run(*args, input=None):
    return CliRunner().invoke(main, ["verify", *args], input=input)


def test_passing_signature_exits_0_and_prints_a_line(signed):
    result = run("--zone", ZONE, str(signed))
    assert result.exit_code == 0
    assert result.output.startswith("pass      dkim d=example.com s=s1 a=rsa-sha256: good rsa-sha256")


def test_json_is_one_array_of_objects_with_the_documented_keys(signed):
    result = run("--zone", ZONE, "--json", str(signed))
    assert result.exit_code == 0
    assert json.loads(result.output) == [{"type": "dkim", "domain": "example.com", "selector": "s1",
                                          "algorithm": "rsa-sha256", "result": "pass",
                                          "reason": "good rsa-sha256 signature, 2048-bit key"}]


def test_unsigned_message_prints_empty_array_and_exits_1():
    result = run("--zone", ZONE, "--json", str(MESSAGES / "plain.eml"))
    assert (result.exit_code, result.output) == (1, "[]\n")


def test_unsigned_message_in_human_form_says_so():
    result = run("--zone", ZONE, str(MESSAGES / "plain.eml"))
    assert (result.exit_code, result.output) == (1, "no DKIM signature\n")


def test_failing_signature_exits_1(signed):
    result = run("--zone", ZONE, "--json", input=signed.read_bytes().replace(b"noon", b"one"))
    assert result.exit_code == 1
    assert [r["result"] for r in json.loads(result.output)] == ["fail"]


def test_message_is_read_from_stdin(signed):
    assert run("--zone", ZONE, input=signed.read_bytes()).exit_code == 0


def test_unreadable_message_exits_2(tmp_path):
    result = run("--zone", ZONE, str(tmp_path / "missing.eml"))
    assert result.exit_code == 2 and "cannot read" in result.output


def test_unreadable_zone_file_exits_2(signed, tmp_path):
    result = run("--zone", str(tmp_path / "missing.zone"), str(signed))
    assert result.exit_code == 2 and "missing.zone" in result.output


def test_bad_configuration_exits_2_naming_the_option(signed, tmp_path):
    ini = tmp_path / "bad.ini"
    ini.write_text("[Verification]\nMaxSignatures = many\n")
    result = run("--config", str(ini), "--zone", ZONE, str(signed))
    assert result.exit_code == 2 and "MaxSignatures" in result.output


def test_unknown_option_exits_2(signed):
    assert run("--nonsense", str(signed)).exit_code == 2


def test_configuration_settings_apply(signed, tmp_path):
    ini = tmp_path / "strict.ini"
    ini.write_text(f"[Verification]\nMinKeyBits = 4096\n[DNS]\nZoneFile = {ZONE}\n")
    result = run("--config", str(ini), "--json", str(signed))
    assert result.exit_code == 1
    assert json.loads(result.output)[0]["result"] == "policy"


def test_installed_command_reads_stdin_and_exits_by_result(signed):
    script = Path(sys.executable).with_name("salmon-dkim")
    proc = subprocess.run([str(script), "verify", "--json", "--zone", ZONE], input=signed.read_bytes(),
                          capture_output=True)
    assert proc.returncode == 0 and json.loads(proc.stdout)[0]["result"] == "pass"


@pytest.mark.parametrize("data, results", [
    (b"", []),
    (bytes(range(256)) * 50, []),
    (b"DKIM-Signature: v=1; broken\r\n\r\nbody\r\n", ["neutral"]),
])
def test_garbage_input_exits_1_with_a_json_array(data, results):
    result = run("--zone", ZONE, "--json", input=data)
    assert result.exit_code == 1
    assert [r["result"] for r in json.loads(result.output)] == results
