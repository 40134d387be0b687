"""salmon-dkim keys, activate, rotate: the key lifecycle from the command line.

``keys`` lists every key of the configuration with its state (pending,
active, retiring, retired), whether DNS publishes its record, since when, and
what to do next.  ``activate`` checks a domain's records now: a pending key
whose record matches becomes active, in every server sharing the keys folder
within a second.  ``rotate`` makes the next key of a domain (pending) and
prints the record to publish.  The states are those of
:mod:`salmon_dkim.core.lifecycle`, the same the running server uses.
"""
from __future__ import annotations

import json
import logging
from typing import List, NoReturn, Optional

import click

from salmon_dkim.cli import main
from salmon_dkim.cli.common import settings_or_stop, stop
from salmon_dkim.cli.keys_cmds import checked_key_size, dns_domain, dns_selector, print_new_key
from salmon_dkim.cli.log_cmds import format_table, printable
from salmon_dkim.config import Settings
from salmon_dkim.core.keys import KeyGenerationError
from salmon_dkim.core.lifecycle import KeyLifecycle, KeyStatus, LifecycleError, iso
from salmon_dkim.dns.resolver import DNSError

STATE_ORDER = {"active": 0, "pending": 1, "retiring": 2, "retired": 3, "unused": 4}
RECORD_WORDS = {"ok": "published", "unchecked": "-", "temperror": "unknown (DNS failed)"}
HEADER = ["domain", "selector", "key", "state", "record", "since", "next"]


def _stop(command: str, message: str) -> NoReturn:
    stop(2, f"salmon-dkim {command}: {message}", err=True)


def _lifecycle(command: str, config_file: Optional[str]) -> KeyLifecycle:
    settings: Settings = settings_or_stop(config_file, f"salmon-dkim {command}: ")
    # what the lifecycle logs for a server is printed here in the commands' own words
    logging.getLogger("salmon_dkim").addHandler(logging.NullHandler())
    return KeyLifecycle.from_settings(settings)


def _key(st: KeyStatus) -> str:
    if st.algorithm == "rsa":
        return f"rsa-{st.bits}" if st.bits else "rsa"
    return st.algorithm or "?"


def _since(st: KeyStatus) -> str:
    stamp = iso(st.since)
    return stamp[:16].replace("T", " ") + "Z" if stamp else "-"


@main.command("keys")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="salmon_dkim.ini to read.")
@click.option("--json", "as_json", is_flag=True, help="One JSON array of keys, for scripts.")
def keys_command(config_file: Optional[str], as_json: bool) -> None:
    """Every key with its state, its DNS record, since when, and what to do next."""
    lifecycle = _lifecycle("keys", config_file)
    try:
        statuses = lifecycle.refresh(everything=True, write=False)
    except (LifecycleError, DNSError) as exc:
        _stop("keys", str(exc))
    statuses.sort(key=lambda st: (st.domain, STATE_ORDER.get(st.state, 9), st.selector))
    if as_json:
        click.echo(json.dumps([st.as_dict() for st in statuses], indent=1))
        return
    if not statuses:
        click.echo("no keys: name them in [Domains] Selectors (salmon-dkim keygen DOMAIN makes one)")
        return
    rows = [[printable(cell) for cell in (st.domain, st.selector, _key(st), st.label,
                                          RECORD_WORDS.get(st.record, st.record), _since(st), st.next_step)]
            for st in statuses]
    click.echo(format_table(rows, HEADER))
    for st in statuses:
        if st.record_trouble:
            click.echo(f"\nWARNING: {st.domain} {st.selector} signs but its record is {st.record}: {st.detail}",
                       err=True)


@main.command("activate")
@click.argument("domain", callback=dns_domain)
@click.argument("selector", required=False, callback=dns_selector)
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="salmon_dkim.ini to read.")
def activate_command(domain: str, selector: Optional[str], config_file: Optional[str]) -> None:
    """Check DOMAIN's records now: a pending key whose record matches becomes active (exit 0)."""
    lifecycle = _lifecycle("activate", config_file)
    if domain not in lifecycle.domains():
        _stop("activate", f"{domain} is not in [Domains] and is not the DefaultDomain")
    try:
        statuses = lifecycle.refresh(domain=domain, selector=selector, strict=True)
    except (LifecycleError, DNSError) as exc:
        _stop("activate", str(exc))
    if not statuses:
        known = ", ".join(st.selector for st in lifecycle.statuses() if st.domain == domain)
        _stop("activate", f"{domain} has no key {selector}; its keys: {known or 'none'}")
    if selector is None:
        statuses = [st for st in statuses if st.state in ("pending", "active")] or statuses
    for st in statuses:
        if st.state == "pending":
            click.echo(f"pending: {st.domain} {st.selector}: {st.detail or 'not checked'}; "
                       f"next: {st.next_step}")
        elif st.state == "active":
            line = f"active: {st.domain} {st.selector} since {_since(st)}"
            click.echo(line + (f"; but its record is {st.record}: {st.detail}" if st.record_trouble else ""))
        else:
            click.echo(f"{st.state}: {st.domain} {st.selector}: {st.next_step}")
    pending = any(st.state == "pending" for st in statuses)
    raise click.exceptions.Exit(0 if not pending and any(st.state == "active" for st in statuses) else 1)


@main.command("rotate")
@click.argument("domain", callback=dns_domain)
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="salmon_dkim.ini to read.")
@click.option("--algorithm", type=click.Choice(["rsa", "ed25519"]),
              help="Make only a key of this algorithm (default: one for each the domain signs with).")
@click.option("--bits", type=int, help="RSA key size (default: the size of the key it replaces, else 2048).")
@click.option("--selector", callback=dns_selector, help="The new selector (default: s or ed + today's date, UTC).")
def rotate_command(domain: str, config_file: Optional[str], algorithm: Optional[str], bits: Optional[int],
                   selector: Optional[str]) -> None:
    """Make DOMAIN's next key (pending until its record is published) and print the record."""
    if bits is not None:
        checked_key_size(algorithm or "rsa", bits)
    lifecycle = _lifecycle("rotate", config_file)
    try:
        rotations = lifecycle.rotate(domain, algorithm=algorithm, bits=bits, selector=selector)
    except (LifecycleError, KeyGenerationError) as exc:
        _stop("rotate", str(exc))
    s = lifecycle.signing
    config = f" --config {config_file}" if config_file else ""
    lines: List[str] = []
    for rotation in rotations:
        old = rotation.replaces
        if rotation.key is None:
            waiting = rotation.waiting
            click.echo(f"{rotation.algorithm}: {waiting.selector} is already pending (since {_since(waiting)}); "
                       f"no new key. {waiting.next_step}\n")
            continue
        made = rotation.key
        print_new_key(made, f"Then: salmon-dkim activate {domain} {made.selector}{config} "
                            f"(a running server does within {s.pending_check_seconds:g} s of the record appearing)")
        after = (f"{old.selector} signs until then, and stays published {s.retire_after_days:g} days after"
                 if old else "until then the domain's mail gets the shared signature, if there is one")
        lines.append(f"{made.selector} ({rotation.algorithm}) is pending: {after}. Not published in "
                     f"{s.pending_key_days:g} days, it is moved to {lifecycle.retired_folder(domain)}.")
        click.echo("")
    for line in lines:
        click.echo(line)
    if lines and not s.require_published_keys:
        click.echo("RequirePublishedKeys = No: servers sign with the Selectors listed only; list the new selector "
                   "in [Domains] Selectors once its record is published, and restart", err=True)
