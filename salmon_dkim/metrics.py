"""Prometheus metrics of a running app: ``[Metrics] Listen = 127.0.0.1:9325`` (empty = off).

Counted from the activity log (a listener sees each entry as it is recorded):
messages signed and verified, policy actions and scores, time spent signing
and verifying.  Read when Prometheus scrapes: DNS lookups, cache hits,
misses, timeouts and failures (from each resolver's ``stats``), key states
(from a callable the key manager gives), and activity log lines dropped.

Label values are bounded, so a stranger cannot grow the metrics: ``domain`` is
a domain of the [Domains] signing table or "other"; ``result`` is an RFC 8601
word (none, pass, fail, policy, neutral, temperror, permerror) or "other";
``action`` is accept, reject, tempfail or skip.

One endpoint per process and address: every DKIM context built with the same
``Listen`` (an app with several INI files) feeds the same metrics.
"""
from __future__ import annotations

import logging
import threading
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Tuple

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from salmon_dkim.activity import ActivityLog, results_of
from salmon_dkim.config import ConfigError

log = logging.getLogger(__name__)

RESULTS = ("none", "pass", "fail", "policy", "neutral", "temperror", "permerror")
# a message's result is its best signature's: one pass is enough for DMARC and for our policy
RESULT_RANK = ("pass", "policy", "fail", "neutral", "temperror", "permerror")
ACTIONS = ("accept", "reject", "tempfail", "skip")
DNS_COUNTERS = (("lookups", ("lookups",), "DNS lookups made"),
                ("hits", ("cache_hits",), "DNS answers served from the cache"),
                ("misses", ("cache_misses",), "DNS lookups the cache could not answer"),
                ("timeouts", ("timeouts",), "DNS lookups that timed out"),
                ("failures", ("servfails", "failures"), "DNS lookups that failed (SERVFAIL, REFUSED, network)"))
"""Exported name, the resolver's DNSStats counters it sums (salmon_dkim.dns.live), help text."""
SECONDS_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
SCORE_BUCKETS = (-5.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.5, 5.0, 10.0)

KeyStates = Callable[[], Iterable[Tuple[str, str, str]]]


class Metrics:
    """The counters of one process; :meth:`observe` one activity entry, :meth:`scrape` the text."""

    def __init__(self, domains: Iterable[str] = ()) -> None:
        self.registry = CollectorRegistry()
        self.domains = {d.lower().rstrip(".") for d in domains}
        self._lock = threading.Lock()
        self._logs: List[ActivityLog] = []
        self._dns_sources: List[Callable[[], Any]] = []
        self._key_states: List[KeyStates] = []
        r = self.registry
        self.signed = Counter("salmon_dkim_signed_messages", "Messages signed, by signing domain (d=)",
                              ["domain"], registry=r)
        self.unsigned = Counter("salmon_dkim_unsigned_messages",
                                "Messages sent on without a signature (the activity log says why)", registry=r)
        self.verified = Counter("salmon_dkim_verified_messages",
                                "Messages verified, by their best DKIM result (none: no signature)",
                                ["result"], registry=r)
        self.signatures = Counter("salmon_dkim_verified_signatures",
                                  "Signatures checked, by d= domain and result", ["domain", "result"], registry=r)
        self.actions = Counter("salmon_dkim_policy_actions",
                               "What policy did with received messages (skip: not verified)", ["action"],
                               registry=r)
        self.score = Histogram("salmon_dkim_policy_score", "Score policy gave a verified message",
                               buckets=SCORE_BUCKETS, registry=r)
        self.sign_seconds = Histogram("salmon_dkim_sign_seconds", "Time spent signing a message",
                                      buckets=SECONDS_BUCKETS, registry=r)
        self.verify_seconds = Histogram("salmon_dkim_verify_seconds", "Time spent verifying a message",
                                        buckets=SECONDS_BUCKETS, registry=r)
        self.errors = Counter("salmon_dkim_metrics_errors",
                              "Activity entries the metrics could not count (malformed)", registry=r)
        r.register(_ReadAtScrape(self))

    # -- fed by the activity log -------------------------------------------------------------

    def watch(self, activity: ActivityLog) -> None:
        """Count every entry ``activity`` records from now on (once, however often called)."""
        with self._lock:
            if any(known is activity for known in self._logs):
                return
            self._logs.append(activity)
        activity.subscribe(self.observe)

    def observe(self, entry: dict) -> None:
        """Count one activity entry; a malformed one is counted as an error, never raised."""
        try:
            self._observe(entry)
        except (TypeError, ValueError, AttributeError):
            self.errors.inc()

    def _observe(self, entry: dict) -> None:
        event = entry.get("event")
        if event == "sign":
            self.signed.labels(self.domain_label(entry.get("d"))).inc()
            _observe_ms(self.sign_seconds, entry.get("ms"))
        elif event == "unsigned":
            self.unsigned.inc()
        elif event == "verify":
            results = results_of(entry)
            words = [result_label(r.get("result")) for r in results]
            for result, word in zip(results, words):
                self.signatures.labels(self.domain_label(result.get("d")), word).inc()
            self.verified.labels(_best(words)).inc()
            if entry.get("action") in ACTIONS:
                self.actions.labels(entry["action"]).inc()
            if isinstance(entry.get("score"), (int, float)):
                self.score.observe(float(entry["score"]))
            _observe_ms(self.verify_seconds, entry.get("ms"))
        elif event == "skip-verify":
            self.actions.labels("skip").inc()

    def domain_label(self, domain: Any) -> str:
        """The domain if it is one we sign for, else "other": strangers' domains make no new series."""
        name = str(domain or "").lower().rstrip(".")
        return name if name in self.domains else "other"

    # -- read at scrape time -----------------------------------------------------------------

    def add_domains(self, domains: Iterable[str]) -> None:
        self.domains |= {d.lower().rstrip(".") for d in domains}

    def add_dns_stats(self, source: Callable[[], Any]) -> None:
        """``source()`` returns an object with integer ``lookups``, ``hits``, ``misses``, ``timeouts``,
        ``failures`` (or None while there is none); read at every scrape, summed over sources."""
        with self._lock:
            self._dns_sources.append(source)

    def add_key_states(self, source: KeyStates) -> None:
        """``source()`` returns (domain, selector, state) for every key; read at every scrape."""
        with self._lock:
            self._key_states.append(source)

    def scrape(self) -> bytes:
        """The metrics in Prometheus's text format, as the endpoint serves them."""
        return generate_latest(self.registry)


def result_label(word: Any) -> str:
    word = str(word or "").lower()
    return word if word in RESULTS else "other"


def _best(words: List[str]) -> str:
    for word in RESULT_RANK:
        if word in words:
            return word
    return words[0] if words else "none"


def _observe_ms(histogram: Histogram, ms: Any) -> None:
    if isinstance(ms, (int, float)) and ms >= 0:
        histogram.observe(ms / 1000.0)


class _ReadAtScrape(Collector):
    """DNS counters, key states and dropped log lines, read from their owners when scraped."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator:
        m = self.metrics
        with m._lock:
            logs, dns_sources, key_states = list(m._logs), list(m._dns_sources), list(m._key_states)
        dropped = CounterMetricFamily("salmon_dkim_activity_dropped_lines",
                                      "Activity log lines lost (queue full or file not writable)")
        dropped.add_metric([], sum(a.dropped for a in logs))
        yield dropped
        pending = GaugeMetricFamily("salmon_dkim_activity_pending_lines", "Activity log lines waiting for the disk")
        pending.add_metric([], sum(a.pending for a in logs))
        yield pending
        yield from self._dns(dns_sources)
        yield from self._keys(key_states)

    def _dns(self, sources) -> Iterator:
        stats = {}
        for source in sources:
            try:
                found = source()
            except Exception:  # noqa: BLE001 (a scrape must not fail over one source)
                log.exception("metrics: reading DNS stats from %r failed", source)
                continue
            if found is not None:
                stats[id(found)] = found  # contexts may share a cache: count it once
        if not stats:
            return  # no resolver reports yet: no series rather than made-up zeros
        for name, counters, text in DNS_COUNTERS:
            family = CounterMetricFamily(f"salmon_dkim_dns_{name}", text)
            family.add_metric([], sum(int(getattr(s, c, 0) or 0) for s in stats.values() for c in counters))
            yield family

    def _keys(self, sources) -> Iterator:
        if not sources:
            return
        family = GaugeMetricFamily("salmon_dkim_key_state", "1 for each key's current state",
                                   labels=["domain", "selector", "state"])
        for source in sources:
            try:
                for domain, selector, state in source():
                    family.add_metric([str(domain), str(selector), str(state)], 1)
            except Exception:  # noqa: BLE001
                log.exception("metrics: reading key states from %r failed", source)
        yield family


# -- the endpoint -----------------------------------------------------------------------------

_endpoints: Dict[Tuple[str, int], Metrics] = {}
_endpoints_lock = threading.Lock()


def serve_metrics(settings, activity: ActivityLog, resolver: Any = None) -> Optional[Metrics]:
    """Start (once per process and address) the endpoint ``settings.metrics.listen`` names and feed it.

    Counts what ``activity`` records, labels the [Domains] of ``settings``, and
    reads ``resolver.stats`` at each scrape.  None when [Metrics] Listen is empty.
    Raises ConfigError when the address cannot be listened on.
    """
    address = settings.metrics.listen
    if address is None:
        return None
    with _endpoints_lock:
        metrics = _endpoints.get(address)
        if metrics is None:
            metrics = Metrics()
            host, port = address
            try:
                start_http_server(port, addr=host, registry=metrics.registry)
            except OSError as exc:
                source = settings.source or "<defaults>"
                raise ConfigError(f"{source}: [Metrics] Listen: cannot listen on {host}:{port} "
                                  f"({exc.strerror or exc}); choose a free port or leave Listen empty") from None
            log.info("Prometheus metrics on http://%s:%d/metrics", host, port)
            _endpoints[address] = metrics
    signing = settings.signing
    metrics.add_domains(list(signing.domains) + ([signing.default.domain] if signing.default else []))
    metrics.watch(activity)
    if resolver is not None:
        metrics.add_dns_stats(lambda: getattr(resolver, "stats", None))
    return metrics


def metrics_at(address: Tuple[str, int]) -> Optional[Metrics]:
    """The metrics served at ``address`` in this process (for a key manager's ``add_key_states``)."""
    return _endpoints.get(address)
