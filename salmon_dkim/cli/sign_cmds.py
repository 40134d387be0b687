"""salmon-dkim sign: sign a message by hand.

``sign`` prints the signed message and nothing else, or prints nothing and
says on stderr why it could not sign (exit 1): a script can never mistake an
unsigned message for a signed one.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import sys
from types import MappingProxyType
from typing import NoReturn, Optional

import click

from salmon_dkim.activity import ActivityLog
from salmon_dkim.cli import main
from salmon_dkim.cli.common import read_message, settings_or_stop, stop
from salmon_dkim.config import DomainKeys, Settings
from salmon_dkim.core.keys import KeyStore
from salmon_dkim.core.lifecycle import KeyLifecycle
from salmon_dkim.core.signer import Signer, SigningError


def _stop(command: str, code: int, message: str) -> NoReturn:
    stop(code, f"salmon-dkim {command}: {message}", err=True)


def _settings(command: str, config_file: Optional[str]) -> Settings:
    return settings_or_stop(config_file, f"salmon-dkim {command}: ")


def _with_key(settings: Settings, domain: str, selector: str, key_file: Optional[str]) -> Settings:
    """Settings whose only key is this one, for DOMAIN, whatever the configuration says."""
    path = key_file or settings.signing.keys_dir / domain / f"{selector}.key"
    entry = DomainKeys(domain, (selector,), (path,))
    signing = dataclasses.replace(settings.signing, domains=MappingProxyType({domain: entry}),
                                  default=None, sender_selectors=MappingProxyType({}),
                                  skip_senders=(), enabled=True)
    return dataclasses.replace(settings, signing=signing)


@main.command("sign")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="salmon_dkim.ini to read.")
@click.option("--domain", help="Sign as this domain (d=) whatever the From header says.")
@click.option("--selector", help="With --domain: sign with KeysDir/DOMAIN/SELECTOR.key.")
@click.option("--key", "key_file", type=click.Path(dir_okay=False),
              help="With --domain and --selector: the private key file to sign with.")
@click.argument("message", required=False)
def sign_command(config_file: Optional[str], domain: Optional[str], selector: Optional[str],
                 key_file: Optional[str], message: Optional[str]) -> None:
    """Sign MESSAGE (or standard input); write the signed message to standard output."""
    if (selector or key_file) and not (domain and selector):
        _stop("sign", 2, "--selector and --key need --domain, and --key needs --selector")
    settings = _settings("sign", config_file)
    data = read_message(message, "salmon-dkim sign: ")
    domain = domain.lower().rstrip(".") if domain else None
    if key_file and not os.path.isfile(key_file):
        _stop("sign", 2, f"cannot read key file {key_file}: no such file")
    if selector:
        settings = _with_key(settings, domain, selector, key_file)
    # without --config, signing by hand leaves no activity log behind in the current folder
    activity = ActivityLog.from_settings(settings.logging) if config_file else ActivityLog(None)
    # the reason goes to stderr once, below, not again through the logging fallback
    logging.getLogger("salmon_dkim").addHandler(logging.NullHandler())
    keys = KeyStore()
    lifecycle = None
    if config_file and not selector and settings.signing.require_published_keys:
        # as the server would: only keys whose record DNS publishes sign (the shared key stands in)
        lifecycle = KeyLifecycle.from_settings(settings, keys=keys, activity=activity)
        lifecycle.refresh()
    try:
        result = Signer(settings, keys, activity, lifecycle=lifecycle).sign(data, domain=domain)
    except SigningError as exc:
        _stop("sign", 1, f"not signed: {exc}")
    finally:
        activity.close()  # the line is written before the command ends, not by a thread left behind
    if result.unsigned_reason:
        _stop("sign", 1, f"not signed: {result.unsigned_reason}")
    sys.stdout.buffer.write(result.message)
    sys.stdout.buffer.flush()
