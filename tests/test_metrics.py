"""The Prometheus endpoint: counted from the activity log, bounded labels, scraped over HTTP."""
import smtplib
import socket
import urllib.request
from types import SimpleNamespace

import pytest
from conftest import message
from prometheus_client.parser import text_string_to_metric_families
from salmonserver import HOST, start_dkim_app

from salmon_dkim.activity import ActivityLog
from salmon_dkim.config import ConfigError, Settings, load_settings
from salmon_dkim.config.settings import MetricsSettings
from salmon_dkim.core.signer import Signer
from salmon_dkim.metrics import Metrics, serve_metrics


def samples(text) -> dict:
    """{(name, ((label, value), ...)): value} of every sample in a scrape."""
    if isinstance(text, bytes):
        text = text.decode()
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(scraped: dict, name: str, **labels) -> float:
    return scraped.get((name, tuple(sorted(labels.items()))), 0.0)


def verify_entry(*results, action="accept", score=0.0, ms=None):
    entry = {"event": "verify", "results": [{"d": d, "s": "s1", "result": r} for d, r in results],
             "action": action, "score": score}
    if ms is not None:
        entry["ms"] = ms
    return entry


# --- counting ---------------------------------------------------------------------------------------

def test_signed_messages_are_counted_by_our_domains_and_other():
    metrics = Metrics(domains=["example.com"])
    for d in ("example.com", "EXAMPLE.COM.", "stranger.example", None):
        metrics.observe({"event": "sign", "d": d})
    metrics.observe({"event": "unsigned", "reason": "no signing key"})
    scraped = samples(metrics.scrape())
    assert value(scraped, "salmon_dkim_signed_messages_total", domain="example.com") == 2
    assert value(scraped, "salmon_dkim_signed_messages_total", domain="other") == 2
    assert value(scraped, "salmon_dkim_unsigned_messages_total") == 1
    assert {labels for name, labels in scraped if name == "salmon_dkim_signed_messages_total"} == \
        {(("domain", "example.com"),), (("domain", "other"),)}


def test_verified_messages_by_best_result_and_signatures_by_domain_and_result():
    metrics = Metrics(domains=["example.com"])
    metrics.observe(verify_entry(("example.com", "fail"), ("example.com", "pass")))
    metrics.observe(verify_entry(("spam.example", "permerror"), action="reject", score=5.0))
    metrics.observe(verify_entry())
    metrics.observe(verify_entry(("x.example", "made-up-word<script>")))
    metrics.observe({"event": "skip-verify", "reason": "trusted peer"})
    scraped = samples(metrics.scrape())
    assert value(scraped, "salmon_dkim_verified_messages_total", result="pass") == 1
    assert value(scraped, "salmon_dkim_verified_messages_total", result="permerror") == 1
    assert value(scraped, "salmon_dkim_verified_messages_total", result="none") == 1
    assert value(scraped, "salmon_dkim_verified_messages_total", result="other") == 1
    assert value(scraped, "salmon_dkim_verified_signatures_total", domain="example.com", result="fail") == 1
    assert value(scraped, "salmon_dkim_verified_signatures_total", domain="other", result="permerror") == 1
    assert value(scraped, "salmon_dkim_policy_actions_total", action="accept") == 3
    assert value(scraped, "salmon_dkim_policy_actions_total", action="reject") == 1
    assert value(scraped, "salmon_dkim_policy_actions_total", action="skip") == 1
    assert value(scraped, "salmon_dkim_policy_score_count") == 4
    assert value(scraped, "salmon_dkim_policy_score_bucket", le="2.5") == 3
    assert value(scraped, "salmon_dkim_policy_score_bucket", le="5.0") == 4


def test_time_spent_signing_and_verifying_goes_into_histograms():
    metrics = Metrics()
    metrics.observe({"event": "sign", "d": "example.com", "ms": 1.5})
    metrics.observe({"event": "sign", "d": "example.com", "ms": 30})
    metrics.observe({"event": "sign", "d": "example.com"})  # an older line without ms
    metrics.observe(verify_entry(("example.com", "pass"), ms=0.4))
    scraped = samples(metrics.scrape())
    assert value(scraped, "salmon_dkim_sign_seconds_count") == 2
    assert value(scraped, "salmon_dkim_sign_seconds_sum") == pytest.approx(0.0315)
    assert value(scraped, "salmon_dkim_sign_seconds_bucket", le="0.002") == 1
    assert value(scraped, "salmon_dkim_verify_seconds_bucket", le="0.0005") == 1


def test_malformed_entries_are_counted_as_errors_not_raised():
    metrics = Metrics()
    metrics.observe(["not", "an", "entry"])
    metrics.observe({"event": "verify", "results": [{"d": "x", "result": "pass"}], "score": "high"})
    assert value(samples(metrics.scrape()), "salmon_dkim_metrics_errors_total") == 1


def test_entries_recorded_in_the_activity_log_are_counted_once(tmp_path):
    metrics = Metrics(domains=["example.com"])
    activity = ActivityLog(None)
    metrics.watch(activity)
    metrics.watch(activity)
    activity.record("sign", d="example.com")
    assert value(samples(metrics.scrape()), "salmon_dkim_signed_messages_total", domain="example.com") == 1


def test_dns_counters_are_read_from_the_resolvers_stats_at_scrape_time():
    metrics = Metrics()
    assert not any(name.startswith("salmon_dkim_dns") for name, _ in samples(metrics.scrape()))
    from salmon_dkim.dns.live import DNSStats
    stats = DNSStats(lookups=3, cache_hits=10, cache_misses=3, timeouts=1, servfails=2, failures=1)
    metrics.add_dns_stats(lambda: stats)
    metrics.add_dns_stats(lambda: stats)  # two contexts sharing one resolver count it once
    metrics.add_dns_stats(lambda: None)  # a resolver without stats
    stats.add("cache_hits")
    scraped = samples(metrics.scrape())
    assert value(scraped, "salmon_dkim_dns_lookups_total") == 3
    assert value(scraped, "salmon_dkim_dns_hits_total") == 11
    assert value(scraped, "salmon_dkim_dns_misses_total") == 3
    assert value(scraped, "salmon_dkim_dns_timeouts_total") == 1
    assert value(scraped, "salmon_dkim_dns_failures_total") == 3


def test_key_states_come_from_the_callable_given():
    metrics = Metrics()
    assert not any(name == "salmon_dkim_key_state" for name, _ in samples(metrics.scrape()))
    metrics.add_key_states(lambda: [("example.com", "s1", "active"), ("example.com", "s2", "pending")])
    scraped = samples(metrics.scrape())
    assert value(scraped, "salmon_dkim_key_state", domain="example.com", selector="s2", state="pending") == 1


def test_listen_is_checked_when_the_ini_is_loaded(tmp_path):
    ini = tmp_path / "m.ini"
    ini.write_text("[Metrics]\nListen = [::1]:9325\n")
    assert load_settings(ini).metrics.listen == ("::1", 9325)
    ini.write_text("[Metrics]\nListen = 9325\n")
    with pytest.raises(ConfigError, match=r"\[Metrics\] Listen: '9325' is not HOST:PORT"):
        load_settings(ini)
    assert load_settings(None).metrics.listen is None


def test_an_address_in_use_stops_start_up_with_one_line():
    with socket.socket() as busy:
        busy.bind((HOST, 0))
        busy.listen()
        settings = Settings(metrics=MetricsSettings(listen=(HOST, busy.getsockname()[1])))
        with pytest.raises(ConfigError, match=r"\[Metrics\] Listen: cannot listen on 127\.0\.0\.1:\d+ "
                                              r"\(Address already in use\); choose a free port"):
            serve_metrics(settings, ActivityLog(None))


# --- the running app -----------------------------------------------------------------------------

def scrape(port: int) -> dict:
    with urllib.request.urlopen(f"http://{HOST}:{port}/metrics", timeout=5) as response:
        assert response.status == 200
        return samples(response.read())


def test_a_running_app_counts_the_mail_it_signs_and_verifies(tmp_path):
    with start_dkim_app(tmp_path) as app:
        signer = Signer(load_settings(app.configs["main"]), activity=ActivityLog(None))
        good = signer.sign(message("plain.eml")).message
        before = scrape(app.metrics_port)
        with app.smtp() as client:
            client.sendmail("alice@example.com", ["m0@live.test"], good)  # live DNS: dnsmasq, counted
            client.sendmail("alice@example.com", ["m1@inbound.test"], good)
            client.sendmail("alice@example.com", ["m2@inbound.test"], message("plain.eml"))
            with pytest.raises(smtplib.SMTPDataError):
                client.sendmail("alice@example.com", ["m3@reject.test"],
                                good.replace(b"Shall we meet at noon?", b"Shall we meet at one?"))
        with app.submission() as client:
            client.sendmail("alice@example.com", ["out@remote.example"], message("plain.eml"))
        after = scrape(app.metrics_port)

    def added(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert added("salmon_dkim_verified_messages_total", result="pass") == 2
    assert added("salmon_dkim_dns_lookups_total") >= 1 and added("salmon_dkim_dns_misses_total") >= 1
    assert added("salmon_dkim_verified_messages_total", result="none") == 1
    assert added("salmon_dkim_verified_messages_total", result="fail") == 1
    assert added("salmon_dkim_verified_signatures_total", domain="example.com", result="fail") == 1
    assert added("salmon_dkim_policy_actions_total", action="reject") == 1
    assert added("salmon_dkim_policy_actions_total", action="accept") == 3
    assert added("salmon_dkim_signed_messages_total", domain="example.com") == 1
    assert value(after, "salmon_dkim_activity_dropped_lines_total") == 0
