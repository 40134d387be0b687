"""ARC (RFC 8617): sealing and chain verification, checked against Mail::DKIM and dkimpy."""
import subprocess
from dataclasses import replace
from types import MappingProxyType

import dkim
import pytest

from conftest import message
from peers import mail_dkim_arc_verify
from salmon_dkim.core.arc import (ARCError, ARCSealer, arc_instance_count, arc_result, arrival_arc_result,
                             sealer_from_settings)
from salmon_dkim.core.message import Message, to_crlf
from salmon_dkim.core.tags import parse_tags
from salmon_dkim.config import DNSSettings, DomainKeys, ListSettings, Settings, SigningSettings
from salmon_dkim.dns.resolver import NoRecord, ZoneResolver
from salmon_dkim.core.keys import KeyStore, load_private_key

ARRIVAL = b"Authentication-Results: mx.example.net; dkim=pass header.d=example.org header.b=abcd\r\n"
SETTINGS = Settings()

def dkimpy_arc_verify(data: bytes, zone_file) -> bytes:
    resolver = ZoneResolver(zone_file)

    def dnsfunc(name, timeout=5):
        try:
            return resolver.txt(name.decode())[0]
        except NoRecord:
            return None
    return dkim.arc_verify(data, dnsfunc=dnsfunc)[0]


class CountingResolver:
    def __init__(self, resolver):
        self.resolver, self.names = resolver, []

    def txt(self, name):
        self.names.append(name)
        return self.resolver.txt(name)


@pytest.fixture
def sealer(keys_dir):
    return ARCSealer("example.com", "s1", load_private_key(keys_dir / "example.com/s1.key"),
                     "mx.example.net", clock=lambda: 1795450000)


@pytest.fixture
def resolver(zone_file):
    return ZoneResolver(zone_file)


@pytest.fixture
def sealed(sealer):
    return sealer.seal(ARRIVAL + to_crlf(message("plain.eml")))


def second_hop(data: bytes, keys_dir) -> bytes:
    key = load_private_key(keys_dir / "example.org/s2048.key")
    hop = ARCSealer("example.org", "s2048", key, "lists.example.org")
    return hop.seal(b"Authentication-Results: lists.example.org; arc=pass\r\n" + data, "pass")


def test_sealed_message_passes_our_check(sealed, resolver):
    assert arc_result(sealed, resolver, SETTINGS) == ("pass",
                                                      "1 ARC set verified, last sealed by example.com")


def test_sealed_message_passes_mail_dkim(sealed, zone_file):
    assert mail_dkim_arc_verify(sealed, zone_file) == "pass"


def test_sealed_message_passes_dkimpy(sealed, zone_file):
    assert dkimpy_arc_verify(sealed, zone_file) == b"pass"


def test_first_set_has_cv_none_and_our_arrival_results(sealed):
    assert b"ARC-Seal: i=1; a=rsa-sha256; t=1795450000; cv=none; d=example.com; s=s1;" in sealed
    assert b"ARC-Authentication-Results: i=1; mx.example.net;\r\n dkim=pass header.d=example.org" in sealed


def test_second_hop_extends_the_chain(sealed, keys_dir, resolver, zone_file):
    chained = second_hop(sealed, keys_dir)
    assert arc_instance_count(chained) == 2
    assert b"cv=pass" in chained
    assert arc_result(chained, resolver, SETTINGS)[0] == "pass"
    assert mail_dkim_arc_verify(chained, zone_file) == "pass"


def test_message_without_arc_is_none(resolver):
    assert arc_result(to_crlf(message("plain.eml")), resolver, SETTINGS) == ("none", "no ARC sets")


def test_changed_body_fails(sealed, resolver, zone_file):
    tampered = sealed.replace(b"noon", b"one")
    result, reason = arc_result(tampered, resolver, SETTINGS)
    assert (result, "body hash does not match" in reason) == ("fail", True)
    assert mail_dkim_arc_verify(tampered, zone_file) == "fail"


def test_changed_signed_header_fails(sealed, resolver):
    result, reason = arc_result(sealed.replace(b"Lunch on Friday", b"Lunch on Monday"), resolver, SETTINGS)
    assert result == "fail" and "ARC-Message-Signature i=1 does not verify" in reason


def test_changed_arc_authentication_results_breaks_the_seal(sealed, resolver):
    result, reason = arc_result(sealed.replace(b"header.b=abcd\r\nAuth", b"header.b=abce\r\nAuth"),
                                resolver, SETTINGS)
    assert (result, reason.startswith("ARC-Seal i=1 does not verify")) == ("fail", True)


def test_chain_with_a_missing_seal_fails(sealed, keys_dir, resolver):
    chained = second_hop(sealed, keys_dir)
    start = chained.index(b"ARC-Seal: i=1")
    end = chained.index(b"ARC-Message-Signature: i=1")
    assert arc_result(chained[:start] + chained[end:], resolver, SETTINGS) == \
        ("fail", "ARC set i=1 has no arc-seal")


def test_chain_with_a_gap_fails(sealed, keys_dir, resolver):
    chained = second_hop(sealed, keys_dir).replace(b"i=2;", b"i=3;")
    assert arc_result(chained, resolver, SETTINGS)[1] == \
        "ARC instances are not 1..N in sequence: i=2 is missing"


def test_seal_reporting_failure_ends_the_chain(sealer, sealed, keys_dir, resolver, zone_file):
    key = load_private_key(keys_dir / "example.org/s2048.key")
    failed = ARCSealer("example.org", "s2048", key, "lists.example.org").seal(sealed, "fail")
    assert b"cv=fail" in failed
    assert arc_result(failed, resolver, SETTINGS) == ("fail", "ARC-Seal i=2 has cv=fail, not cv=pass")
    assert mail_dkim_arc_verify(failed, zone_file) == "fail"


def test_missing_key_fails_with_its_name(sealer, resolver):
    other = ARCSealer("example.net", "nokey", sealer.key, "mx.example.net")
    result = arc_result(other.seal(to_crlf(message("plain.eml"))), resolver, SETTINGS)
    assert result == ("fail", "no key published at nokey._domainkey.example.net (NXDOMAIN or no TXT)")


def test_chain_longer_than_max_arc_instances_fails_without_lookups(sealed, keys_dir, resolver):
    chained = second_hop(sealed, keys_dir)
    counting = CountingResolver(resolver)
    settings = replace(SETTINGS, lists=ListSettings(max_arc_instances=1))
    assert arc_result(chained, counting, settings) == ("fail", "2 ARC sets, more than MaxARCInstances (1)")
    assert counting.names == []


def test_lookups_per_message_are_capped(sealed, keys_dir, resolver):
    chained = second_hop(sealed, keys_dir)  # needs two keys: example.org, then example.com
    settings = replace(SETTINGS, dns=DNSSettings(max_lookups_per_message=1))
    result, reason = arc_result(chained, resolver, settings)
    assert result == "fail" and "lookup limit" in reason


def test_each_key_is_looked_up_once(sealed, keys_dir, resolver):
    counting = CountingResolver(resolver)
    assert arc_result(second_hop(sealed, keys_dir), counting, SETTINGS)[0] == "pass"
    assert sorted(counting.names) == ["s1._domainkey.example.com", "s2048._domainkey.example.org"]


def test_sealing_stops_at_max_arc_instances(sealer, sealed):
    with pytest.raises(ARCError, match="already carries 1 ARC sets; MaxARCInstances is 1"):
        sealer.seal(sealed, "pass", max_instances=1)


def test_sealing_an_unchecked_chain_is_refused(sealer, sealed):
    with pytest.raises(ARCError, match="not checked"):
        sealer.seal(sealed)


def test_arrival_arc_result_reads_our_authentication_results():
    data = b"Authentication-Results: mx.example.net;\r\n dkim=pass header.d=a.example; arc=pass\r\n" \
           b"Authentication-Results: evil.example; arc=fail\r\nFrom: a@a.example\r\n\r\nhi\r\n"
    assert arrival_arc_result(data, "mx.example.net") == "pass"
    assert arrival_arc_result(data, "other.example") is None


def test_arrival_arc_result_ignores_arc_words_quoted_in_a_reason():
    data = (b'Authentication-Results: mx.example.net; dkim=none reason="header line \'x; arc=pass\'";'
            b" arc=fail\r\nFrom: a@a.example\r\n\r\nhi\r\n")
    assert arrival_arc_result(data, "mx.example.net") == "fail"


def test_we_verify_a_chain_sealed_by_mail_dkim(keys_dir, resolver):
    script = r"""
use strict; use warnings; use Mail::DKIM::ARC::Signer; use Mail::DKIM::PrivateKey;
my $s = Mail::DKIM::ARC::Signer->new(Algorithm => 'rsa-sha256', Domain => 'example.com',
    SrvId => 'mx.example.net', Selector => 's1', KeyFile => $ARGV[0], Chain => 'none',
    Headers => 'from:to:subject:date:message-id', Timestamp => 1795450000);
binmode STDIN; local $/; $s->PRINT(scalar <STDIN>); $s->CLOSE;
print $s->as_string;
"""
    data = ARRIVAL + to_crlf(message("plain.eml"))
    done = subprocess.run(["perl", "-e", script, str(keys_dir / "example.com/s1.key")], input=data,
                          capture_output=True, timeout=30, check=True)
    assert done.stdout.startswith(b"ARC-Seal:"), done.stdout + done.stderr
    assert arc_result(to_crlf(done.stdout) + data, resolver, SETTINGS)[0] == "pass"


def test_sealer_from_settings_uses_the_domains_rsa_key(keys_dir):
    files = (keys_dir / "example.com/ed1.key", keys_dir / "example.com/s1.key")
    entry = DomainKeys("example.com", ("ed1", "s1"), files)
    settings = Settings(signing=SigningSettings(domains=MappingProxyType({"example.com": entry})))
    sealer = sealer_from_settings(settings, "Example.COM", KeyStore())
    assert (sealer.domain, sealer.selector, sealer.algorithm) == ("example.com", "s1", "rsa-sha256")
    assert sealer_from_settings(settings, "example.org", KeyStore()) is None


def test_ed25519_seal_passes_our_check(keys_dir, resolver):
    key = load_private_key(keys_dir / "example.com/ed1.key")
    sealed = ARCSealer("example.com", "ed1", key, "mx.example.net").seal(to_crlf(message("multipart.eml")))
    assert b"a=ed25519-sha256" in sealed
    assert arc_result(sealed, resolver, SETTINGS)[0] == "pass"


# -- the chain in the Verifier's report and our Authentication-Results ----------------

def test_verifier_reports_an_arriving_chain_and_the_header_says_arc_pass(sealed, resolver):
    from salmon_dkim.core.authres import header_for, parse
    from salmon_dkim.core.verifier import Verifier
    report = Verifier(SETTINGS, resolver).verify(sealed)
    assert (report.arc, report.arc_reason) == ("pass", "1 ARC set verified, last sealed by example.com")
    header = header_for("mx.example.org", report)
    assert [(r.method, r.result) for r in parse(header)[1]] == [("dkim", "none"), ("arc", "pass")]


def test_verifier_reports_a_broken_chain_as_arc_fail_with_its_reason(sealed, resolver):
    from salmon_dkim.core.authres import header_for
    from salmon_dkim.core.verifier import Verifier
    report = Verifier(SETTINGS, resolver).verify(sealed.replace(b"noon", b"one"))
    assert report.arc == "fail"
    assert b"arc=fail reason=" in header_for("mx.example.org", report)


def test_verifier_leaves_arc_out_without_a_chain_or_when_switched_off(sealed, resolver):
    from salmon_dkim.core.verifier import Verifier
    assert Verifier(SETTINGS, resolver).verify(to_crlf(message("plain.eml"))).arc is None
    off = replace(SETTINGS, lists=ListSettings(arc_verify=False))
    assert Verifier(off, resolver).verify(sealed).arc is None


def test_verifier_survives_an_arc_instance_too_long_for_int(resolver):
    from salmon_dkim.core.verifier import Verifier
    data = b"ARC-Seal: i=" + b"1" * 5000 + b"; cv=none\r\n" + to_crlf(message("plain.eml"))
    report = Verifier(SETTINGS, resolver).verify(data)
    assert report.arc == "fail" and report.internal_error is None
    assert arc_instance_count(data) > 50


# -- a failed chain is not continued (RFC 8617 section 5.1) ---------------------------------------------

def test_a_chain_found_broken_here_is_sealed_cv_fail_over_our_own_set_only(sealed, keys_dir, resolver, zone_file):
    key = load_private_key(keys_dir / "example.org/s2048.key")
    failed = ARCSealer("example.org", "s2048", key, "lists.example.org").seal(sealed.replace(b"noon", b"one"),
                                                                                "fail")
    assert b"ARC-Seal: i=2; a=rsa-sha256; t=" in failed and b"cv=fail" in failed
    assert arc_result(failed, resolver, SETTINGS) == ("fail", "ARC-Seal i=2 has cv=fail, not cv=pass")
    # dkimpy 1.1.8 answers None for a chain whose newest seal says cv=fail (the draft's answer);
    # RFC 8617 section 5.2 step 2 makes it "fail".  Either way: not a pass.
    assert dkimpy_arc_verify(failed, zone_file) in (b"fail", None)


def test_sealing_a_chain_whose_newest_seal_says_fail_is_refused(sealed, keys_dir):
    key = load_private_key(keys_dir / "example.org/s2048.key")
    failed = ARCSealer("example.org", "s2048", key, "lists.example.org").seal(sealed, "fail")
    third = ARCSealer("example.com", "s1", load_private_key(keys_dir / "example.com/s1.key"), "mx.example.net")
    for cv in ("pass", "fail", "none"):
        with pytest.raises(ARCError, match=r"newest ARC-Seal \(i=2\) already says cv=fail; a failed chain is "
                                           r"not continued \(RFC 8617 section 5.1\)"):
            third.seal(failed, cv)


def test_a_malformed_chain_whose_newest_seal_says_fail_is_refused_too(sealed, keys_dir):
    key = load_private_key(keys_dir / "example.org/s2048.key")
    failed = ARCSealer("example.org", "s2048", key, "lists.example.org").seal(sealed, "fail")
    malformed = failed.replace(b"ARC-Message-Signature: i=1;", b"X-Removed: i=1;")  # i=1 has no AMS now
    with pytest.raises(ARCError, match="already says cv=fail"):
        ARCSealer("example.com", "s1", load_private_key(keys_dir / "example.com/s1.key"),
                  "mx.example.net").seal(malformed, "pass")


# -- a tag list with an empty item makes the set invalid (RFC 6376 section 3.2) --------------------------

@pytest.mark.parametrize("field, old, new", [
    (b"ARC-Seal", b"d=example.com; s=s1;", b"d=example.com;; s=s1;"),
    (b"ARC-Seal", b"ARC-Seal: i=1;", b"ARC-Seal: ;i=1;"),
    (b"ARC-Message-Signature", b"d=example.com; s=s1;", b"d=example.com; s=s1;;"),
])
def test_an_empty_tag_list_item_fails_the_chain_and_says_so(sealed, resolver, zone_file, field, old, new):
    start = sealed.index(field + b":")
    unfolded = sealed[:start] + sealed[start:].replace(b";\r\n s=", b"; s=", 1)
    assert old in unfolded[start:start + 300]
    edited = unfolded[:start] + unfolded[start:].replace(old, new, 1)
    result, reason = arc_result(edited, resolver, SETTINGS)
    assert result == "fail"
    assert reason.startswith(f"{field.decode()} i=1 is malformed: empty tag list element"), reason
    assert dkimpy_arc_verify(edited, zone_file) == b"fail"


# -- options a forwarder needs: [DomainKeys] ARCDomain, ARCSelector, ARCKeyFile, ARCHeaders ----------------

def _settings_with(keys_dir, **lists):
    entry = DomainKeys("example.com", ("s1",), (keys_dir / "example.com/s1.key",))
    return Settings(signing=SigningSettings(keys_dir=keys_dir, domains=MappingProxyType({"example.com": entry})),
                    lists=replace(ListSettings(), **lists))


def test_arc_selector_names_the_sealing_key_under_keys_dir(keys_dir):
    sealer = sealer_from_settings(_settings_with(keys_dir, arc_domain="example.org", arc_selector="s2048"),
                                  None, KeyStore())
    assert (sealer.domain, sealer.selector, sealer.algorithm) == ("example.org", "s2048", "rsa-sha256")


def test_arc_key_file_replaces_the_keys_dir_layout(keys_dir, tmp_path):
    from conftest import KEYS, private_copy
    path = private_copy(KEYS / "example.org.rsa2048.key", tmp_path / "elsewhere" / "arc.key")
    settings = _settings_with(keys_dir, arc_domain="example.org", arc_selector="s2048", arc_key_file=path)
    assert sealer_from_settings(settings, None, KeyStore()).key.path == path


def test_without_arc_options_a_forwarder_seals_as_the_default_domain_or_not_at_all(keys_dir):
    settings = _settings_with(keys_dir)
    assert sealer_from_settings(settings, None, KeyStore()) is None
    default = DomainKeys("example.com", ("s1",), (keys_dir / "example.com/s1.key",))
    settings = replace(settings, signing=replace(settings.signing, default=default))
    assert sealer_from_settings(settings, None, KeyStore()).domain == "example.com"


def test_arc_headers_are_what_the_message_signature_signs(keys_dir, resolver, zone_file):
    settings = _settings_with(keys_dir, arc_domain="example.com", arc_headers=("from", "subject"))
    sealed = sealer_from_settings(settings, None, KeyStore()).seal(to_crlf(message("plain.eml")))
    ams = Message.parse(sealed).values(b"arc-message-signature")[0]
    assert parse_tags(ams)[b"h"].replace(b"\r\n ", b"") == b"from:subject"
    assert arc_result(sealed, resolver, SETTINGS)[0] == "pass"
    assert dkimpy_arc_verify(sealed, zone_file) == b"pass"


@pytest.mark.parametrize("text, expected", [
    ("ARCKeyFile = arc.key\n", "[DomainKeys] ARCKeyFile: needs ARCSelector"),
    ("ARCDomain = example.com\nARCSelector = nosuch\n",
     "[DomainKeys] ARCSelector: key file {keys}/example.com/nosuch.key for ARC selector 'nosuch' is missing"),
    ("ARCHeaders = subject, to\n", "[DomainKeys] ARCHeaders: must include 'from'"),
    ("ARCHeaders = from, arc-seal\n", "[DomainKeys] ARCHeaders: must not include 'arc-seal'"),
])
def test_arc_options_that_cannot_work_stop_loading_with_one_line(tmp_path, keys_dir, text, expected):
    from salmon_dkim.config import ConfigError, load_settings
    path = tmp_path / "arc.ini"
    path.write_text(f"[Signing]\nKeysDir = {keys_dir}\n[DomainKeys]\n{text}")
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert expected.format(keys=keys_dir) in str(info.value) and "\n" not in str(info.value)


def test_arc_options_load_into_the_list_settings(tmp_path, keys_dir):
    from salmon_dkim.config import load_settings
    path = tmp_path / "arc.ini"
    path.write_text(f"[Signing]\nKeysDir = {keys_dir}\n[DomainKeys]\nARCDomain = Example.ORG.\n"
                    "ARCSelector = s2048\nARCHeaders = From, Subject\n")
    lists = load_settings(path).lists
    assert (lists.arc_domain, lists.arc_selector, lists.arc_key_file, lists.arc_headers) == (
        "example.org", "s2048", None, ("from", "subject"))


def test_a_key_dns_does_not_publish_yet_seals_nothing_and_an_active_one_does(keys_dir, tmp_path, zone_file):
    from salmon_dkim.config import load_settings
    from salmon_dkim.core.arc import sealer_from_settings
    from salmon_dkim.core.keys import KeyStore, generate_key
    from salmon_dkim.core.lifecycle import KeyLifecycle

    generate_key(keys_dir, "example.net", "n1")
    ini = tmp_path / "lists.ini"
    ini.write_text(f"[Signing]\nKeysDir = {keys_dir}\n[Domains]\n  [[example.net]]\n  Selectors = n1\n"
                   f"  [[example.com]]\n  Selectors = s1\n[DNS]\nZoneFile = {zone_file}\n")
    settings, store = load_settings(ini), KeyStore()
    lifecycle = KeyLifecycle.from_settings(settings, keys=store)
    lifecycle.refresh()
    assert sealer_from_settings(settings, "example.net", store, lifecycle) is None  # pending: its record is not out
    assert sealer_from_settings(settings, "example.com", store, lifecycle).selector == "s1"
