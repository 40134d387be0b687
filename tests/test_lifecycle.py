"""The key lifecycle: pending until DNS publishes a key, active, superseded by a newer key, retired.

Records come from dnsmasq on 127.0.0.1 (tests/dnsserver.py), added and removed
as the tests go; time is an injected clock, so seven days pass in a line.
"""
import json
import logging
import threading
from types import MappingProxyType

import pytest
from conftest import KEYS, message, private_copy
from dnsserver import start_black_hole, start_dns_server

from salmon_dkim.activity import ActivityLog, read_activity
from salmon_dkim.config import ConfigError, DomainKeys, Settings, SigningSettings, load_settings
from salmon_dkim.core.keys import key_name, load_private_key, zone_line
from salmon_dkim.core.lifecycle import STATE_FILE, KeyLifecycle, LifecycleError, check_key_record
from salmon_dkim.core.message import Message
from salmon_dkim.core.signer import Signer, SigningError
from salmon_dkim.dns.resolver import ZoneResolver

LOCAL = ["example.com", "example.org", "shared.test"]  # dnsmasq answers NXDOMAIN under these
DAY = 86400
PLAIN = message("plain.eml")


class Clock:
    """Seconds since the epoch that move only when the test says."""

    def __init__(self, now: int = 1_800_000_000) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, days: float = 0, seconds: float = 0) -> None:
        self.now += int(days * DAY + seconds)


@pytest.fixture
def dns():
    with start_dns_server({}, local_domains=LOCAL, ttl=1) as server:
        yield server


@pytest.fixture
def keys(tmp_path):
    """example.com s1 (RSA 2048) and ed1 (Ed25519), shared.test sh1 (RSA 2048)."""
    root = tmp_path / "keys"
    for dest, src in {"example.com/s1.key": "example.com.rsa2048.key", "example.com/ed1.key": "example.com.ed25519.key",
                      "shared.test/sh1.key": "example.org.rsa2048.key"}.items():
        private_copy(KEYS / src, root / dest)
    return root


def txt(keys_dir, domain: str, selector: str) -> str:
    return load_private_key(keys_dir / domain / f"{selector}.key").dns_txt()


def publish(dns, keys_dir, domain: str, selector: str) -> None:
    dns.add(key_name(selector, domain), txt(keys_dir, domain, selector))


def entry(keys_dir, domain, *selectors, enabled=True) -> DomainKeys:
    return DomainKeys(domain, selectors, tuple(keys_dir / domain / f"{s}.key" for s in selectors), enabled=enabled)


def signing(keys_dir, *entries, default=None, **options) -> SigningSettings:
    return SigningSettings(keys_dir=keys_dir, domains=MappingProxyType({e.domain: e for e in entries}),
                           default=default, **options)


def lifecycle_of(settings: SigningSettings, dns, clock, activity=None) -> KeyLifecycle:
    return KeyLifecycle(settings, lambda: dns.resolver(timeout=1), clock=clock, activity=activity)


def state_of(lifecycle, selector: str, domain: str = "example.com"):
    return next(st for st in lifecycle.statuses() if st.domain == domain and st.selector == selector)


def recorded(keys_dir) -> dict:
    return json.loads((keys_dir / STATE_FILE).read_text())["keys"]


# --- pending, then active ---------------------------------------------------------------------------

def test_a_key_is_pending_until_dns_publishes_its_record(keys, dns):
    example = entry(keys, "example.com", "s1")
    lifecycle = lifecycle_of(signing(keys, example), dns, Clock())
    [status] = lifecycle.refresh()
    assert (status.state, status.record) == ("pending", "missing")
    assert status.detail == "not published: no TXT record at s1._domainkey.example.com"
    assert status.next_step.startswith("publish this record: TXT at s1._domainkey.example.com")
    assert lifecycle.signing_keys(example) == ((), "example.com has no active key: s1 pending "
                                                   "(not published: no TXT record at s1._domainkey.example.com)")


def test_publishing_the_record_makes_the_key_active_and_records_when(keys, dns):
    example, clock = entry(keys, "example.com", "s1"), Clock()
    lifecycle = lifecycle_of(signing(keys, example), dns, clock)
    lifecycle.refresh()
    clock.advance(seconds=30)
    publish(dns, keys, "example.com", "s1")
    [status] = lifecycle.refresh()
    assert (status.state, status.record, status.since) == ("active", "ok", clock.now)
    assert lifecycle.signing_keys(example) == ((("s1", keys / "example.com/s1.key"),), "")
    assert recorded(keys)["example.com/s1"] == {
        "seen": "2027-01-15T08:00:00Z", "verified": "2027-01-15T08:00:30Z", "algorithm": "rsa",
        "record": "ok", "record_since": "2027-01-15T08:00:30Z"}


def test_a_record_of_another_key_leaves_the_key_pending_and_says_mismatch(keys, dns):
    dns.add(key_name("s1", "example.com"), txt(keys, "shared.test", "sh1"))
    [status] = lifecycle_of(signing(keys, entry(keys, "example.com", "s1")), dns, Clock()).refresh()
    assert (status.state, status.record) == ("pending", "mismatch")
    assert status.detail.startswith("mismatch: s1._domainkey.example.com publishes a different key")


def test_check_key_record_is_the_check_dns_comparison(keys, dns):
    publish(dns, keys, "example.com", "ed1")
    check = check_key_record(dns.resolver(), "example.com", "ed1", load_private_key(keys / "example.com/ed1.key"))
    assert check.good and check.message.startswith("ok: ed1._domainkey.example.com publishes the public key of")


# --- pending too long --------------------------------------------------------------------------------

def test_a_key_never_published_is_moved_to_retired_after_pending_key_days(keys, dns, tmp_path, caplog):
    clock, activity = Clock(), ActivityLog(tmp_path / "activity.jsonl")
    (keys / "example.com/s1.dns").write_text("; the record keygen wrote\n")
    lifecycle = lifecycle_of(signing(keys, entry(keys, "example.com", "s1")), dns, clock, activity)
    lifecycle.refresh()
    clock.advance(days=7, seconds=-1)
    lifecycle.refresh()
    assert (keys / "example.com/s1.key").exists()
    clock.advance(seconds=1)
    with caplog.at_level(logging.WARNING, "salmon_dkim"):
        lifecycle.refresh()
    assert not (keys / "example.com/s1.key").exists() and not (keys / "example.com/s1.dns").exists()
    assert (keys / "retired/example.com/s1.key").read_bytes() == (KEYS / "example.com.rsa2048.key").read_bytes()
    assert (keys / "retired/example.com/s1.dns").exists()
    status = state_of(lifecycle, "s1")
    assert (status.state, status.moved) == ("retired", True)
    assert "example.com/s1 was pending for 7 days and its record never matched: moved to" in caplog.text
    activity.flush()
    [event] = read_activity(tmp_path / "activity.jsonl", event="key")
    assert (event["d"], event["s"], event["state"]) == ("example.com", "s1", "retired")
    assert event["reason"].startswith(f"moved to {keys / 'retired/example.com'}: never published in 7 days")


def test_a_key_published_within_pending_key_days_is_never_moved(keys, dns):
    clock = Clock()
    lifecycle = lifecycle_of(signing(keys, entry(keys, "example.com", "s1")), dns, clock)
    lifecycle.refresh()
    clock.advance(days=6)
    publish(dns, keys, "example.com", "s1")
    lifecycle.refresh()
    clock.advance(days=30)
    [status] = lifecycle.refresh()
    assert status.state == "active" and (keys / "example.com/s1.key").exists()


# --- active keys and their records ------------------------------------------------------------------

def test_an_active_key_whose_record_disappears_keeps_signing_and_is_flagged(keys, dns, caplog):
    example, clock = entry(keys, "example.com", "s1"), Clock()
    publish(dns, keys, "example.com", "s1")
    lifecycle = lifecycle_of(signing(keys, example, active_check_seconds=3600), dns, clock)
    lifecycle.refresh()
    dns.remove(key_name("s1", "example.com"))
    clock.advance(seconds=3600)
    with caplog.at_level(logging.WARNING, "salmon_dkim"):
        [status] = lifecycle.refresh()
    assert (status.state, status.label, status.record_trouble) == ("active", "active, RECORD MISSING", True)
    assert lifecycle.signing_keys(example)[0] == (("s1", keys / "example.com/s1.key"),)
    assert lifecycle.key_states() == [("example.com", "s1", "active, RECORD MISSING")]
    assert "DKIM key s1 of example.com is active but its record is missing" in caplog.text
    assert status.next_step.startswith("RECORD MISSING: publish the record again")
    assert recorded(keys)["example.com/s1"]["record"] == "missing"


def test_a_dns_outage_changes_nothing(keys, dns):
    example, clock = entry(keys, "example.com", "s1"), Clock()
    publish(dns, keys, "example.com", "s1")
    settings = signing(keys, example, active_check_seconds=1)
    lifecycle_of(settings, dns, clock).refresh()
    with start_black_hole() as hole:
        silent = KeyLifecycle(settings, lambda: hole.resolver(timeout=0.2), clock=clock)
        clock.advance(days=30)
        [status] = silent.refresh()
    assert (status.state, status.label, status.record) == ("active", "active", "temperror")
    assert recorded(keys)["example.com/s1"]["record"] == "ok"


def test_active_keys_are_looked_up_only_every_active_check_seconds(keys, dns):
    clock = Clock()
    publish(dns, keys, "example.com", "s1")
    lifecycle = lifecycle_of(signing(keys, entry(keys, "example.com", "s1"), active_check_seconds=600), dns, clock)
    lifecycle.refresh()
    queries = dns.log().count("query[TXT] s1._domainkey.example.com")
    clock.advance(seconds=599)
    lifecycle.refresh()
    assert dns.log().count("query[TXT] s1._domainkey.example.com") == queries
    clock.advance(seconds=1)
    lifecycle.refresh()
    assert dns.log().count("query[TXT] s1._domainkey.example.com") == queries + 1


# --- rotation ---------------------------------------------------------------------------------------

def test_rotate_makes_the_next_key_of_each_algorithm_pending(keys, dns):
    example, clock = entry(keys, "example.com", "s1", "ed1"), Clock()
    publish(dns, keys, "example.com", "s1")
    publish(dns, keys, "example.com", "ed1")
    lifecycle = lifecycle_of(signing(keys, example), dns, clock)
    lifecycle.refresh()
    rsa, ed = lifecycle.rotate("example.com")
    assert (rsa.key.selector, rsa.key.private.bits, rsa.replaces.selector) == ("s20270115", 2048, "s1")
    assert (ed.key.selector, ed.key.private.algorithm, ed.replaces.selector) == ("ed20270115", "ed25519", "ed1")
    assert recorded(keys)["example.com/s20270115"] == {"seen": "2027-01-15T08:00:00Z", "after": "s1"}
    assert [s for s, _ in lifecycle.signing_keys(example)[0]] == ["s1", "ed1"]  # until the new ones are published
    again = lifecycle.rotate("example.com")
    assert [(r.key, r.waiting.selector) for r in again] == [(None, "s20270115"), (None, "ed20270115")]
    assert sorted(p.name for p in (keys / "example.com").glob("*.key")) == [
        "ed1.key", "ed20270115.key", "s1.key", "s20270115.key"]


def test_a_newer_active_key_supersedes_the_old_which_retires_after_retire_after_days(keys, dns):
    example, clock = entry(keys, "example.com", "s1"), Clock()
    publish(dns, keys, "example.com", "s1")
    lifecycle = lifecycle_of(signing(keys, example), dns, clock)
    lifecycle.refresh()
    [rotation] = lifecycle.rotate("example.com")
    clock.advance(days=1)
    publish(dns, keys, "example.com", rotation.key.selector)
    lifecycle.refresh()
    assert lifecycle.signing_keys(example)[0] == ((rotation.key.selector, rotation.key.key_path),)
    old = state_of(lifecycle, "s1")
    assert (old.state, old.superseded_by, old.since) == ("retiring", rotation.key.selector, clock.now)
    assert old.next_step == "keep the record published; remove this record after 2027-01-23 08:00Z"
    clock.advance(days=7)
    lifecycle.refresh()
    old = state_of(lifecycle, "s1")
    assert old.state == "retired" and old.next_step == "remove this record (TXT at s1._domainkey.example.com)"


def test_rotate_refuses_a_domain_it_does_not_know_or_with_no_key(keys, dns):
    lifecycle = lifecycle_of(signing(keys, entry(keys, "example.com", "s1")), dns, Clock())
    with pytest.raises(LifecycleError, match="example.net is not in \\[Domains\\]"):
        lifecycle.rotate("example.net")
    (keys / "example.com/s1.key").chmod(0o644)
    with pytest.raises(LifecycleError, match="example.com has no key to rotate from"):
        lifecycle.rotate("example.com")


# --- several servers, one keys folder ---------------------------------------------------------------

def test_a_server_that_cannot_see_dns_learns_activation_from_the_shared_state_file(keys, dns):
    example = entry(keys, "example.com", "s1")
    settings = signing(keys, example)
    seeing = lifecycle_of(settings, dns, Clock())
    with start_black_hole() as hole:
        blind = KeyLifecycle(settings, lambda: hole.resolver(timeout=0.2), clock=Clock(1_800_000_100))
        blind.refresh()
        publish(dns, keys, "example.com", "s1")
        seeing.refresh()
        blind.refresh()
    assert blind.signing_keys(example) == seeing.signing_keys(example)
    assert [(st.state, st.since) for st in blind.statuses()] == [(st.state, st.since) for st in seeing.statuses()]


def test_the_first_time_a_record_matched_stands_whoever_sees_it_later(keys, dns):
    settings = signing(keys, entry(keys, "example.com", "s1"))
    publish(dns, keys, "example.com", "s1")
    first, later = lifecycle_of(settings, dns, Clock()), lifecycle_of(settings, dns, Clock(1_800_000_500))
    first.refresh()
    later.refresh()
    assert recorded(keys)["example.com/s1"]["verified"] == "2027-01-15T08:00:00Z"
    assert state_of(later, "s1").since == 1_800_000_000


def test_servers_writing_at_once_leave_one_whole_state_file(keys, dns):
    settings = signing(keys, entry(keys, "example.com", "s1", "ed1"))
    publish(dns, keys, "example.com", "s1")
    servers = [lifecycle_of(settings, dns, Clock(1_800_000_000 + n)) for n in range(4)]
    threads = [threading.Thread(target=s.refresh) for s in servers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    entries = recorded(keys)
    assert entries["example.com/s1"]["verified"] == min(e["seen"] for e in entries.values())
    assert set(entries) == {"example.com/s1", "example.com/ed1"}
    assert not list(keys.glob(".lifecycle.*"))  # no temporary file left behind


def test_a_state_file_that_is_not_json_is_never_overwritten(keys, dns, caplog):
    (keys / STATE_FILE).write_text("{ not json")
    publish(dns, keys, "example.com", "s1")
    example = entry(keys, "example.com", "s1")
    lifecycle = lifecycle_of(signing(keys, example), dns, Clock())
    with caplog.at_level(logging.ERROR, "salmon_dkim"):
        lifecycle.refresh()
    assert (keys / STATE_FILE).read_text() == "{ not json"
    assert "is not a key lifecycle state file" in caplog.text
    assert lifecycle.signing_keys(example)[0]  # the record is there: the key signs from memory


# --- the Signer -------------------------------------------------------------------------------------

class Zone:
    """Zone text the lifecycle reads at every check (as it reads [DNS] ZoneFile), changed by the test."""

    def __init__(self, keys_dir) -> None:
        self.keys_dir, self.lines = keys_dir, []

    def publish(self, domain: str, selector: str) -> None:
        self.lines.append(zone_line(selector, domain, txt(self.keys_dir, domain, selector)))

    def resolver(self):
        return ZoneResolver.from_text("\n".join(self.lines) + "\n")


def signer_of(keys_dir, zone, *entries, default=None, tmp_path=None, **options):
    settings = Settings(signing=signing(keys_dir, *entries, default=default, **options))
    activity = ActivityLog(tmp_path / "activity.jsonl" if tmp_path else None)
    lifecycle = KeyLifecycle(settings.signing, zone.resolver, activity=activity)
    lifecycle.refresh()
    return Signer(settings, activity=activity, lifecycle=lifecycle)


def signed_by(result) -> list:
    return [(s.domain, s.selector) for s in result.signatures]


def test_a_pending_key_does_not_sign_the_shared_key_does_and_says_why(keys, tmp_path):
    zone = Zone(keys)
    zone.publish("shared.test", "sh1")
    signer = signer_of(keys, zone, entry(keys, "example.com", "s1"), default=entry(keys, "shared.test", "sh1"),
                       tmp_path=tmp_path)
    assert signed_by(signer.sign(PLAIN)) == [("shared.test", "sh1")]
    signer.activity.flush()
    [line] = read_activity(tmp_path / "activity.jsonl", event="sign")
    assert line["d"] == "shared.test" and line["reason"] == (
        "signed with the shared key: example.com has no active key: s1 pending "
        "(not published: no TXT record at s1._domainkey.example.com)")


def test_without_a_shared_key_mail_of_a_pending_domain_goes_unsigned_saying_why(keys):
    signer = signer_of(keys, Zone(keys), entry(keys, "example.com", "s1"))
    result = signer.sign(PLAIN)
    assert result.message == PLAIN and result.unsigned_reason == (
        "example.com has no active key: s1 pending (not published: no TXT record at s1._domainkey.example.com); "
        "no default key")


def test_shared_signature_always_signs_with_both_the_domains_own_first(keys):
    zone = Zone(keys)
    for domain, selector in (("example.com", "s1"), ("example.com", "ed1"), ("shared.test", "sh1")):
        zone.publish(domain, selector)
    signer = signer_of(keys, zone, entry(keys, "example.com", "s1", "ed1"),
                       default=entry(keys, "shared.test", "sh1"), shared_signature="always")
    result = signer.sign(PLAIN)
    assert signed_by(result) == [("example.com", "s1"), ("example.com", "ed1"), ("shared.test", "sh1")]
    assert Message(result.message).fields[0][1].startswith(b" v=1; a=rsa-sha256; c=relaxed/relaxed; d=example.com")


def test_a_domain_with_enabled_no_gets_only_the_shared_signature(keys):
    zone = Zone(keys)
    zone.publish("example.com", "s1")
    zone.publish("shared.test", "sh1")
    signer = signer_of(keys, zone, entry(keys, "example.com", "s1", enabled=False),
                       default=entry(keys, "shared.test", "sh1"))
    assert signed_by(signer.sign(PLAIN)) == [("shared.test", "sh1")]


def test_a_pending_key_that_cannot_be_read_fails_closed(keys):
    zone = Zone(keys)
    zone.publish("shared.test", "sh1")
    (keys / "example.com/s1.key").chmod(0o644)
    signer = signer_of(keys, zone, entry(keys, "example.com", "s1"), default=entry(keys, "shared.test", "sh1"))
    with pytest.raises(SigningError, match="s1 of example.com cannot be used: .* run chmod 600"):
        signer.sign(PLAIN)


def test_a_sender_key_still_pending_leaves_the_choice_to_the_domain_table(keys):
    private_copy(KEYS / "example.org.rsa2048.key", keys / "example.com/alice1.key")
    zone = Zone(keys)
    zone.publish("example.com", "s1")
    settings = Settings(signing=signing(keys, entry(keys, "example.com", "s1"),
                                        sender_selectors=MappingProxyType({"alice@example.com": "alice1"})))
    lifecycle = KeyLifecycle(settings.signing, zone.resolver)
    lifecycle.refresh()
    signer = Signer(settings, activity=ActivityLog(None), lifecycle=lifecycle)
    assert signed_by(signer.sign(PLAIN, sender="alice@example.com")) == [("example.com", "s1")]
    zone.publish("example.com", "alice1")
    lifecycle.refresh()
    assert signed_by(signer.sign(PLAIN, sender="alice@example.com")) == [("example.com", "alice1")]


# --- configuration ----------------------------------------------------------------------------------

def test_the_ini_names_the_lifecycle_options(tmp_path, keys):
    path = tmp_path / "dkim.ini"
    path.write_text(f"[Signing]\nKeysDir = {keys}\nSharedSignature = always\nPendingKeyDays = 3\n"
                    "RetireAfterDays = 2\nPendingKeyCheckSeconds = 5\nActiveKeyCheckSeconds = 60\n"
                    "[Domains]\n[[example.com]]\nSelectors = s1\nEnabled = No\n")
    s = load_settings(path).signing
    assert (s.shared_signature, s.pending_key_days, s.retire_after_days) == ("always", 3, 2)
    assert (s.pending_check_seconds, s.active_check_seconds, s.domains["example.com"].enabled) == (5, 60, False)
    path.write_text("[Signing]\nSharedSignature = sometimes\n")
    with pytest.raises(ConfigError, match="SharedSignature: 'sometimes' is not valid here; expected one of "
                                          "'fallback', 'always'"):
        load_settings(path)


def test_a_listed_key_moved_to_retired_does_not_stop_start_up(tmp_path, keys):
    (keys / "retired/example.com").mkdir(parents=True)
    (keys / "example.com/s1.key").rename(keys / "retired/example.com/s1.key")
    path = tmp_path / "dkim.ini"
    path.write_text(f"[Signing]\nKeysDir = {keys}\n[Domains]\n[[example.com]]\nSelectors = s1\n")
    assert load_settings(path).signing.domains["example.com"].selectors == ("s1",)
    path.write_text(f"[Signing]\nKeysDir = {keys}\nRequirePublishedKeys = No\n[Domains]\n[[example.com]]\n"
                    "Selectors = s1\n")
    with pytest.raises(ConfigError, match="key file .* for selector 's1' is missing"):
        load_settings(path)
