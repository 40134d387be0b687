"""salmon-dkim keygen, dns-record, check-dns: make a key pair, publish it, check what DNS serves.

Keys live at ``KEYS_DIR/DOMAIN/SELECTOR.key`` (mode 0600) beside
``SELECTOR.dns``, the TXT record as a zone-file line (both made by
:func:`salmon_dkim.core.keys.generate_key`).  A key is never overwritten:
rotation is a new selector (``salmon-dkim rotate``), published, switched to,
and the old one retired.  ``check-dns`` is
:func:`salmon_dkim.core.lifecycle.check_key_record`, as the running server checks.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import click

from salmon_dkim.cli import main
from salmon_dkim.cli.common import settings_or_stop, stop
from salmon_dkim.core.keys import (GeneratedKey, KeyFileError, KeyGenerationError, PrivateKey, dated_selector,
                                   generate_key, key_name, key_size, load_private_key, zone_line)
from salmon_dkim.core.lifecycle import check_key_record, record_resolver
from salmon_dkim.dns.resolver import DNSError, TXTResolver, ZoneResolver

_LABELS = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9])?(?:\.[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9])?)*")


def _dns_name(kind: str, value: str) -> str:
    """A domain or selector as DNS labels (IDNA for non-ASCII), safe to use as a file name."""
    name = value.strip().rstrip(".")
    try:
        name = name.encode("idna").decode("ascii")
    except UnicodeError:
        pass
    if len(name) > 253 or not _LABELS.fullmatch(name.lower()):
        raise click.BadParameter(f"{value!r} is not a valid {kind} (DNS labels: letters, digits, hyphens)")
    return name


def dns_domain(ctx, param, value: str) -> str:
    """click callback: a DOMAIN argument as checked DNS labels (exit 2 otherwise)."""
    return _dns_name("domain", value).lower()


def dns_selector(ctx, param, value):
    """click callback: a SELECTOR as checked DNS labels, or None."""
    return None if value is None else _dns_name("selector", value)


def _key_path(keys_dir: str, domain: str, selector: str) -> Path:
    return Path(keys_dir) / domain / f"{selector}.key"


def _load(keys_dir: str, domain: str, selector: str) -> PrivateKey:
    try:
        return load_private_key(_key_path(keys_dir, domain, selector))
    except KeyFileError as exc:
        stop(2, f"error: {exc}")


def checked_key_size(algorithm: str, bits) -> int:
    """The key size checked as generate_key will (BadParameter, exit 2, when refused)."""
    try:
        return key_size(algorithm, bits)
    except KeyGenerationError as exc:
        raise click.BadParameter(str(exc), param_hint="--bits") from None


def print_new_key(made: GeneratedKey, check_hint: str) -> None:
    """Where the key and its record are, the record to publish, and the command that checks it."""
    size = "Ed25519" if made.private.algorithm == "ed25519" else f"RSA {made.private.bits}-bit"
    click.echo(f"Private key: {made.key_path} ({size}, mode 0600; keep it secret, back it up)")
    click.echo(f"DNS record:  {made.dns_path}")
    click.echo(f"\nPublish a TXT record at {key_name(made.selector, made.domain)} with this value:\n\n{made.txt}\n")
    click.echo(f"As a zone-file line:\n\n{made.zone_line}\n")
    if made.private.algorithm == "ed25519":
        click.echo("Not every receiver checks Ed25519 signatures yet: sign with an RSA selector as well.\n")
    click.echo(check_hint)


@main.command("keygen")
@click.argument("domain", callback=dns_domain)
@click.option("--selector", callback=dns_selector, help="Selector name (default: s + today's date, UTC).")
@click.option("--algorithm", type=click.Choice(["rsa", "ed25519"]), default="rsa", show_default=True)
@click.option("--bits", type=int, help="RSA key size: 1024, 2048 (default), 3072 or 4096.")
@click.option("--keys-dir", default="keys", show_default=True, help="Folder holding DOMAIN/SELECTOR.key.")
@click.option("--testing", is_flag=True, help="Publish with t=y: verifiers treat the domain as testing DKIM.")
def keygen(domain: str, selector, algorithm: str, bits, keys_dir: str, testing: bool) -> None:
    """Make a new key pair for DOMAIN and the TXT record to publish for it."""
    checked_key_size(algorithm, bits)  # before anything is made
    folder = Path(keys_dir) / domain
    selector = selector or dated_selector([folder])
    for path in (folder / f"{selector}.key", folder / f"{selector}.dns"):
        if os.path.lexists(path):  # lexists: a symlink there counts, wherever it points
            stop(2, f"error: {path} already exists and is never overwritten; pick another selector "
                     f"(rotate: salmon-dkim rotate {domain} makes the next key and retires this one)")
    try:
        made = generate_key(keys_dir, domain, selector, algorithm=algorithm, bits=bits, testing=testing)
    except KeyGenerationError as exc:
        stop(2, f"error: {exc}")
    print_new_key(made, f"Once published, check it: salmon-dkim check-dns {domain} {selector} --keys-dir {keys_dir}")


@main.command("dns-record")
@click.argument("domain", callback=dns_domain)
@click.argument("selector", callback=dns_selector)
@click.option("--keys-dir", default="keys", show_default=True, help="Folder holding DOMAIN/SELECTOR.key.")
@click.option("--testing", is_flag=True, help="Include t=y (testing).")
def dns_record(domain: str, selector: str, keys_dir: str, testing: bool) -> None:
    """Print the TXT record (a zone-file line) for an existing key."""
    private = _load(keys_dir, domain, selector)
    click.echo(zone_line(selector, domain, private.dns_txt(testing)))


def _resolver(zone, dns_settings) -> TXTResolver:
    try:
        return ZoneResolver(zone) if zone else record_resolver(dns_settings)
    except DNSError as exc:
        stop(2, f"error: {exc}")


@main.command("check-dns")
@click.argument("domain", callback=dns_domain)
@click.argument("selector", callback=dns_selector)
@click.option("--keys-dir", help="Folder holding DOMAIN/SELECTOR.key (default: KeysDir of --config, else keys).")
@click.option("--zone", type=click.Path(dir_okay=False), help="Answer DNS from this zone file instead.")
@click.option("--config", type=click.Path(dir_okay=False),
              help="salmon_dkim.ini: its [DNS] name servers, port, timeout and zone file are used.")
def check_dns(domain: str, selector: str, keys_dir, zone, config) -> None:
    """Check that DNS publishes the public half of DOMAIN/SELECTOR.key (exit 0 only then)."""
    settings = settings_or_stop(config, "error: ")
    keys_dir = keys_dir or (str(settings.signing.keys_dir) if config else "keys")
    private = _load(keys_dir, domain, selector)
    check = check_key_record(_resolver(zone, settings.dns), domain, selector, private)
    for warning in check.warnings:
        click.echo(warning, err=True)
    stop(0 if check.good else 1, check.message, err=False)
