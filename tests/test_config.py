"""The INI file: defaults, the documented example, and one clear line per mistake."""
import dataclasses
import re
from pathlib import Path

import pytest
from configobj import ConfigObj

from salmon_dkim.config import SPEC_PATH, ConfigError, Settings, load_settings

CONF = Path(__file__).parent.parent / "conf" / "salmon_dkim.ini"


def write(tmp_path, text: str) -> Path:
    path = tmp_path / "salmon_dkim.ini"
    path.write_text(text)
    return path


def error_of(path) -> str:
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(str(path))
    return message


def test_the_types_defaults_are_the_specs_defaults():
    from dataclasses import fields, replace
    loaded = load_settings()
    built = Settings()
    for section in fields(Settings):
        if section.name in ("source",):
            continue
        ours, theirs = getattr(built, section.name), getattr(loaded, section.name)
        if section.name == "verification":
            theirs = replace(theirs, authserv_id="")  # the host name when the INI gives none
        if section.name == "signing":
            theirs = replace(theirs, keys_dir=Path("keys"))  # made absolute from the current folder
        assert ours == theirs, section.name


def test_no_file_gives_every_default():
    settings = load_settings()
    assert settings.signing.header_canon == "relaxed" and settings.signing.body_canon == "relaxed"
    assert settings.signing.expire_seconds == 7 * 86400
    assert settings.signing.oversign_headers == ("from", "to", "cc", "subject", "date", "message-id", "reply-to",
                                                 "in-reply-to", "references", "mime-version", "content-type")
    assert settings.verification.max_signatures == 5
    assert settings.verification.clock_drift == 300
    assert settings.verification.temperror_action == "tempfail"
    assert settings.lists.strip_sigs_from_list_mail is True
    assert settings.dns.zone_file is None and settings.dns.timeout == 3.0
    assert settings.logging.activity_log is None  # nothing written to the current folder unasked


def test_documented_file_holds_the_defaults():
    documented, defaults = load_settings(CONF), load_settings()
    for section in ("verification", "lists", "dns"):
        assert getattr(documented, section) == getattr(defaults, section)
    ignore_paths = {"keys_dir"}
    for field in dataclasses.fields(documented.signing):
        if field.name not in ignore_paths:
            assert getattr(documented.signing, field.name) == getattr(defaults.signing, field.name), field.name


def test_documented_file_lists_every_option_with_a_comment():
    spec = ConfigObj(str(SPEC_PATH), list_values=False, _inspec=True)
    lines = CONF.read_text().splitlines()
    for section, options in spec.items():
        for option in options:
            if option.startswith("__") or isinstance(options[option], dict):
                continue
            at = next((i for i, line in enumerate(lines) if re.match(rf"{option}\s*=", line)), None)
            assert at is not None, f"[{section}] {option} is not in {CONF.name}"
            assert lines[at - 1].startswith("#"), f"[{section}] {option} has no comment"


def test_settings_are_frozen():
    settings = load_settings()
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.verification.max_signatures = 9


def test_relative_paths_are_taken_from_the_file_folder(tmp_path):
    (tmp_path / "zone").write_text("")
    settings = load_settings(write(tmp_path, "[DNS]\nZoneFile = zone\n[Signing]\nKeysDir = k\n"))
    assert settings.dns.zone_file == tmp_path / "zone"
    assert settings.signing.keys_dir == tmp_path / "k"


def test_domain_table_resolves_key_files(tmp_path, keys_dir):
    path = write(tmp_path, f"[Signing]\nKeysDir = {keys_dir}\n"
                           "[Domains]\n[[Example.COM]]\nSelectors = s1, ed1\nIncludeSubdomains = Yes\n")
    entry = load_settings(path).signing.domains["example.com"]
    assert entry.selectors == ("s1", "ed1")
    assert entry.key_files == (keys_dir / "example.com/s1.key", keys_dir / "example.com/ed1.key")
    assert entry.include_subdomains is True


def test_default_key_needs_domain_and_selectors(tmp_path, keys_dir):
    path = write(tmp_path, f"[Signing]\nKeysDir = {keys_dir}\nDefaultDomain = example.com\n"
                           "DefaultSelectors = s1\n")
    assert load_settings(path).signing.default.domain == "example.com"
    message = error_of(write(tmp_path, "[Signing]\nDefaultDomain = example.com\n"))
    assert "DefaultDomain and DefaultSelectors go together" in message


@pytest.mark.parametrize("text, expected", [
    ("[Verification]\nMaxSignature = 3\n", "[Verification] MaxSignature: unknown option"),
    ("[Verifcation]\n", "[Verifcation]: unknown section"),
    ("[Verification]\nADSP = maybe\n", "[Verification] ADSP: 'maybe' is not valid here; expected Yes or No"),
    ("[DNS]\nTimeout = fast\n", "[DNS] Timeout: 'fast' is not valid here; expected a number"),
    ("[Verification]\nMaxSignatures = 0\n",
     "[Verification] MaxSignatures: '0' is too small; the least allowed is 1"),
    ("[DNS]\nTimeout = 600\n", "[DNS] Timeout: '600' is too big; the most allowed is 60"),
    ("[Verification]\nTempErrorAction = bounce\n",
     "[Verification] TempErrorAction: 'bounce' is not valid here; expected one of 'tempfail', 'accept'"),
    ("[Signing]\nCanonicalization = nofws\n", "[Signing] Canonicalization: 'nofws' is not valid here"),
    ("[Verification]\nTrustedIPs = 10.0.0.0/8, nope\n",
     "[Verification] TrustedIPs: 'nope' is not an IP address or CIDR network"),
    ("[DNS]\nNameservers = 1.2.3.x\n", "[DNS] Nameservers: '1.2.3.x' is not an IP address"),
    ("[DNS]\nZoneFile = missing.zone\n", "missing.zone does not exist"),
    ("[Signing]\nHeaders = subject, to\n", "[Signing] Headers: must include 'from'"),
    ("[Domains]\n[[example.com]]\nIncludeSubdomains = Yes\n",
     "[Domains] [[example.com]] Selectors: required option is missing"),
    ("[Domains]\n[[example.com]]\nSelectors = s1\n", "key file"),
    ("[Domains]\n[[example.com]]\nSelectors = s1, s2\nKeyFiles = a.key\n",
     "KeyFiles: gives 1 files for 2 selectors"),
    ("[Signing\nEnabled = Yes\n", "cannot be parsed"),
    # issue 8: each of these crashed with a traceback or loaded and then broke mail
    ("[Signing]\nKeysDir =\n", "[Signing] KeysDir: is empty"),
    ("[Signing]\nExpireDays = nan\n", "[Signing] ExpireDays: 'nan' is not valid here; expected a number"),
    ("[DNS]\nTimeout = nan\n", "[DNS] Timeout: 'nan' is not valid here; expected a number"),
    ("[Verification]\nPassScore = -inf\n", "[Verification] PassScore: '-inf' is not valid here"),
    ("[Domains]\n[[example.com]]\nSelectors = s1\nIncludeSubdomains = maybe\n",
     "[Domains] [[example.com]] IncludeSubdomains: 'maybe' is not valid here; expected Yes or No"),
    ("Timeout = 5\n[DNS]\n", "Timeout: is an option of [DNS], written above every section; move it under [DNS]"),
    ("Verification = 1\n", "Verification: is a section, written here as an option"),
    ("[DNS]\nPort = 53\nPort = 54\n", "Duplicate keyword name at line 3. ('Port = 54')"),
    ("[Domains]\n[[..]]\nSelectors = s1\n", "[Domains] [[..]]: '..' is not a domain name"),
    ("[Domains]\n[[example.com]]\nSelectors = s 1\n", "[Domains] [[example.com]] Selectors: 's 1' is not a selector"),
    ("[SenderSelectors]\nalice@example.com = a;b\n", "[SenderSelectors] alice@example.com: 'a;b' is not a selector"),
    ("[Signing]\nKeysDir = a\x00b\n", "[Signing] KeysDir: 'a\\x00b' holds a control character"),
    ("[Logging]\nActivityLog = .\n", "[Logging] ActivityLog: "),
])
def test_each_mistake_is_one_line_naming_file_option_and_problem(tmp_path, text, expected):
    assert expected in error_of(write(tmp_path, text))


def test_missing_key_file_says_how_to_create_it(tmp_path):
    message = error_of(write(tmp_path, "[Domains]\n[[example.com]]\nSelectors = s1\n"))
    assert "selector 's1' is missing" in message
    assert "salmon-dkim keygen example.com --selector s1" in message


def test_missing_file_is_an_error(tmp_path):
    assert "no such configuration file" in error_of(tmp_path / "absent.ini")


def test_non_utf8_file_is_an_error(tmp_path):
    path = tmp_path / "latin1.ini"
    path.write_bytes(b"[Verification]\nAuthservId = m\xfcnchen\n")
    assert "not UTF-8" in error_of(path)


def test_relative_key_files_are_taken_from_the_files_folder_whatever_keys_dir_is(tmp_path):
    path = write(tmp_path, f"[Signing]\nKeysDir = {tmp_path / 'elsewhere' / 'keys'}\n"
                           "[Domains]\n[[example.com]]\nSelectors = s1\nKeyFiles = mine/s1.key\n")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "s1.key").write_text("not checked here")
    assert load_settings(path).signing.domains["example.com"].key_files == (tmp_path / "mine" / "s1.key",)


def test_a_zone_file_that_is_not_a_zone_file_is_an_error(tmp_path):
    (tmp_path / "keys.key").write_text("-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEI\n")
    message = error_of(write(tmp_path, "[DNS]\nZoneFile = keys.key\n"))
    assert "[DNS] ZoneFile: " in message and "cannot be read as a zone file" in message


@pytest.mark.parametrize("option, value", [
    ("AuthservId", "mx.example.com; arc=pass"), ("AuthservId", "mx example"), ("AuthservId", "mx@example.com"),
    ("AuthservId", "bücher.example"), ("ScoreHeader", "X DKIM Score"), ("ScoreHeader", "X-Score:"),
    ("ScoreHeader", "X-Scöre"), ("AuthenticatedHeader", "X Authenticated"),
])
def test_a_configured_value_that_cannot_be_written_in_a_header_is_an_error_at_load(tmp_path, option, value):
    message = error_of(write(tmp_path, f"[Verification]\n{option} = {value}\n"))
    assert f"[Verification] {option}: " in message


@pytest.mark.parametrize("option", ["Headers", "OversignHeaders"])
@pytest.mark.parametrize("value", ["from, x header", "from, subject:", "from, sübject", "from, \"\""])
def test_a_header_name_to_sign_that_is_not_a_field_name_is_an_error_at_load(tmp_path, option, value):
    message = error_of(write(tmp_path, f"[Signing]\n{option} = {value}\n"))
    assert f"[Signing] {option}: " in message and "is not a header field name" in message


def test_an_empty_key_file_entry_keeps_the_selectors_usual_place(tmp_path, keys_dir):
    path = write(tmp_path, f"[Signing]\nKeysDir = {keys_dir}\n"
                           "[Domains]\n[[example.com]]\nSelectors = s1, ed1\nKeyFiles = \"\", \"\"\n")
    assert load_settings(path).signing.domains["example.com"].key_files == (
        keys_dir / "example.com/s1.key", keys_dir / "example.com/ed1.key")
    path = write(tmp_path, f"[Signing]\nKeysDir = {keys_dir}\n[Domains]\n[[example.com]]\nSelectors = s1\nKeyFiles =\n")
    assert load_settings(path).signing.domains["example.com"].key_files == (keys_dir / "example.com/s1.key",)


def test_an_internationalized_signing_domain_is_kept_as_a_labels(tmp_path, keys_dir):
    (keys_dir / "xn--bcher-kva.example").mkdir()
    (keys_dir / "example.com" / "s1.key").rename(keys_dir / "xn--bcher-kva.example" / "s1.key")
    path = write(tmp_path, f"[Signing]\nKeysDir = {keys_dir}\n[Domains]\n[[Bücher.example]]\nSelectors = s1\n")
    assert list(load_settings(path).signing.domains) == ["xn--bcher-kva.example"]


@pytest.mark.parametrize("text", ["[Signing]\nKeysDir =\n", "[DNS]\nTimeout = nan\n", "Timeout = 5\n",
                                  "[Verification]\nAuthservId = a b\n"])
def test_the_command_line_exits_2_with_one_line_for_a_bad_file(tmp_path, text):
    from click.testing import CliRunner
    from salmon_dkim.cli import main
    path = write(tmp_path, text)
    result = CliRunner().invoke(main, ["verify", "--config", str(path)], input=b"From: a@example.com\r\n\r\n")
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert len(result.output.strip().splitlines()) == 1 and str(path) in result.output
