"""Wiring for a Salmon app: build salmon-dkim's parts once, at boot, from one INI file.

In ``config/boot.py``::

    from salmon_dkim import glue
    from salmon_dkim.salmon.receivers import LMTPReceiver, Receivers, SMTPReceiver

    dkim = glue.install("config/salmon_dkim.ini")       # before Router.load(...)
    settings.relay = dkim.relay(host="smarthost.example.net", port=25)
    settings.receiver = Receivers(SMTPReceiver("0.0.0.0", 25),
                                  SMTPReceiver("0.0.0.0", 587, role="submission"))

``install`` makes the context the one that bare ``@dkim_verify``,
``@dkim_sign``, ``SigningRelay()`` and the receivers use.  A second context
(another INI file) is built with ``DKIM.from_config`` and passed explicitly:
``@dkim_verify(other)``.

A :class:`DKIM` holds: ``settings`` (frozen Settings), ``keys`` (KeyStore:
each key file read once), ``resolver`` (zone file, or live DNS with the TTL
cache), ``activity`` (ActivityLog), ``signer``, ``verifier`` and ``lifecycle``
(the key lifecycle: a background thread re-checks pending keys every
``PendingKeyCheckSeconds`` so a published key signs without a restart; None
with ``RequirePublishedKeys = No``).  ``close()`` stops that thread.
"""
from __future__ import annotations

import logging
import sys
import os
import threading
from dataclasses import dataclass
from typing import Dict, List, NoReturn, Optional, Union

from salmon_dkim.activity import ActivityLog
from salmon_dkim.config import ConfigError, Settings, load_settings
from salmon_dkim.dns.resolver import TXTResolver, resolver_from_settings
from salmon_dkim.core.keys import KeyStore
from salmon_dkim.core.lifecycle import KeyLifecycle
from salmon_dkim.core.signer import Signer
from salmon_dkim.core.verifier import Verifier

PathLike = Union[str, "os.PathLike[str]"]
# seconds start-up waits for the first DNS check of pending keys; the rest goes on in the background
FIRST_CHECK_SECONDS = 10.0


@dataclass(frozen=True)
class DKIM:
    """Everything a Salmon app needs for DKIM, built once from Settings."""

    settings: Settings
    keys: KeyStore
    resolver: TXTResolver
    activity: ActivityLog
    signer: Signer
    verifier: Verifier
    lifecycle: Optional[KeyLifecycle] = None

    @classmethod
    def from_settings(cls, settings: Settings, *, resolver: Optional[TXTResolver] = None,
                      check_keys: bool = True) -> "DKIM":
        """Build from checked Settings; ``resolver`` replaces the one [DNS] describes (tests).

        With ``check_keys`` every signing key is loaded now, and an unusable one
        (readable by others, encrypted, too weak) stops start-up with a ConfigError
        naming each, rather than mail going out unsigned later.  With the key
        lifecycle, pending keys are checked against DNS first (up to
        FIRST_CHECK_SECONDS), and the keys that sign are the ones loaded.
        """
        logging.getLogger("salmon_dkim").setLevel(settings.logging.log_level)
        keys = KeyStore(recheck_seconds=1.0)  # a rotated key file is noticed within a second
        resolver = resolver if resolver is not None else resolver_from_settings(settings.dns)
        activity = ActivityLog.from_settings(settings.logging)
        signing = settings.signing
        lifecycle = None
        if signing.enabled and signing.require_published_keys and (signing.domains or signing.default
                                                                    or signing.sender_selectors):
            lifecycle = KeyLifecycle.from_settings(settings, keys=keys, activity=activity)
            lifecycle.start(wait=FIRST_CHECK_SECONDS)
        signer = Signer(settings, keys=keys, activity=activity, lifecycle=lifecycle)
        if check_keys and settings.signing.enabled:
            problems = signer.check_keys()
            if problems:
                if lifecycle is not None:
                    lifecycle.stop()
                source = settings.source or "<defaults>"
                raise ConfigError(f"{source}: [Domains]: unusable signing keys: " + "; ".join(problems))
        if settings.metrics.listen is not None:  # [Metrics] Listen: one endpoint per process, fed by the log
            from salmon_dkim.metrics import serve_metrics  # noqa: PLC0415 (prometheus only when asked for)
            metrics = serve_metrics(settings, activity, resolver)
            if lifecycle is not None:
                _feed_key_states(metrics, lifecycle)
        # the decorator writes one "verify" line per message with the outcome, so the Verifier writes none
        return cls(settings, keys, resolver, activity, signer, Verifier(settings, resolver), lifecycle)

    @classmethod
    def from_config(cls, path: Optional[PathLike] = None, **kwargs) -> "DKIM":
        """Build from an INI file (ConfigError names file, option and problem); kwargs as from_settings."""
        return cls.from_settings(load_settings(path), **kwargs)

    def close(self) -> None:
        """Stop the key lifecycle's thread (the process may also just exit: it is a daemon thread)."""
        if self.lifecycle is not None:
            self.lifecycle.stop()
            with _key_feeds_lock:
                for feeds in _key_feeds.values():
                    if self.lifecycle in feeds:
                        feeds.remove(self.lifecycle)

    def install(self) -> "DKIM":
        """Make this the context of bare decorators, SigningRelay() and receivers."""
        global _installed
        _installed = self
        return self

    def relay(self, host: str = "127.0.0.1", port: int = 25, **kwargs):
        """A SigningRelay using this context's Signer (``salmon.server.Relay`` arguments)."""
        from salmon_dkim.salmon.relay import SigningRelay  # noqa: PLC0415 (core users need no Salmon)
        kwargs.setdefault("resolver", self.resolver)
        return SigningRelay(host, port, signer=self.signer, **kwargs)


_installed: Optional[DKIM] = None

# Contexts that share a metrics endpoint (and often a keys folder) report each key state once.
_key_feeds: Dict[int, List[KeyLifecycle]] = {}
_key_feeds_lock = threading.Lock()


def _feed_key_states(metrics, lifecycle: KeyLifecycle) -> None:
    with _key_feeds_lock:
        feeds = _key_feeds.get(id(metrics))
        if feeds is None:
            feeds = _key_feeds[id(metrics)] = []

            def states(feeds=feeds):
                with _key_feeds_lock:
                    current = list(feeds)
                return sorted({state for each in current for state in each.key_states()})

            metrics.add_key_states(states)
        feeds.append(lifecycle)


def install(config: Union[PathLike, Settings, DKIM, None] = None, **kwargs) -> DKIM:
    """Build (from an INI path or Settings) and install the boot-time context; returns it.

    Meant for config/boot.py: a configuration that cannot be used (a bad INI value, an unusable
    key, a port already taken by a receiver built after it) stops ``salmon start`` with one line
    on standard error and in the log, naming the file, option and problem, and exit status 2.
    """
    _one_line_errors_at_boot()
    try:
        if isinstance(config, DKIM):
            return config.install()
        if isinstance(config, Settings):
            return DKIM.from_settings(config, **kwargs).install()
        return DKIM.from_config(config, **kwargs).install()
    except ConfigError as exc:
        stop_boot(exc)


def stop_boot(error: ConfigError) -> NoReturn:
    """End start-up on a configuration error: one line on standard error and in the log, exit status 2."""
    _say(error)
    raise SystemExit(2)


def _say(error: ConfigError) -> None:
    log = logging.getLogger("salmon_dkim")
    if log.hasHandlers():  # the app's log (a daemon's standard error goes nowhere)
        log.error("cannot start: %s", error)
    print(f"salmon-dkim: cannot start: {error}", file=sys.stderr, flush=True)


def _one_line_errors_at_boot() -> None:
    """A ConfigError that reaches the top of boot.py (a receiver's port taken) is one line, not a traceback."""
    previous = sys.excepthook
    if getattr(previous, "salmon_dkim", False):
        return

    def hook(kind, value, tb):
        if isinstance(value, ConfigError):
            _say(value)
            return
        previous(kind, value, tb)

    hook.salmon_dkim = True
    sys.excepthook = hook


def installed() -> Optional[DKIM]:
    """The installed context, or None."""
    return _installed


def current() -> DKIM:
    """The installed context; a clear error when config/boot.py did not install one."""
    if _installed is None:
        raise RuntimeError("salmon-dkim has no context: call salmon_dkim.salmon.context.install(\"salmon_dkim.ini\") "
                           "in config/boot.py before Router.load(), or pass one: @dkim_verify(context)")
    return _installed
