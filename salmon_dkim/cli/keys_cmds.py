"""salmon-dkim keygen, dns-record, check-dns: make a key pair, publish it, check what DNS serves.

Keys live at ``KEYS_DIR/DOMAIN/SELECTOR.key`` (mode 0600) beside
``SELECTOR.dns``, the TXT record as a zone-file line.  A key is never
overwritten: rotation is a new selector, published, switched to, and the old
one retired.
"""
from __future__ import annotations

import dataclasses
import datetime
import os
import re
from pathlib import Path
from typing import List

import click
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from salmon_dkim.cli import main
from salmon_dkim.cli.common import settings_or_stop, stop
from salmon_dkim.dns.resolver import DNSError, NoRecord, TemporaryDNSError, TXTResolver, ZoneResolver
from salmon_dkim.core.keys import (MIN_RSA_BITS, KeyFileError, KeyRecordError, PrivateKey, key_name,
                              load_private_key, parse_key_record, zone_line)

RSA_SIZES = (1024, 2048, 3072, 4096)
_LABELS = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9])?(?:\.[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9])?)*")
_DKIM_RECORD = re.compile(rb"^\s*v\s*=\s*DKIM1\s*(;|$)|(^|;)\s*p\s*=")


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


def _domain(ctx, param, value: str) -> str:
    return _dns_name("domain", value).lower()


def _selector(ctx, param, value):
    return None if value is None else _dns_name("selector", value)


def _key_path(keys_dir: str, domain: str, selector: str) -> Path:
    return Path(keys_dir) / domain / f"{selector}.key"


def _load(keys_dir: str, domain: str, selector: str) -> PrivateKey:
    try:
        return load_private_key(_key_path(keys_dir, domain, selector))
    except KeyFileError as exc:
        stop(2, f"error: {exc}")


def _dated_selector(folder: Path) -> str:
    """s20261123, or s20261123-2 (-3, ...) when that selector already exists."""
    base = datetime.datetime.now(datetime.timezone.utc).strftime("s%Y%m%d")
    selector, n = base, 1
    while os.path.lexists(folder / f"{selector}.key") or os.path.lexists(folder / f"{selector}.dns"):
        n += 1
        selector = f"{base}-{n}"
    return selector


def _write_new(path: Path, data: bytes, mode: int) -> None:
    """A new file, never one that exists, nor through a symlink planted at its name (FileExistsError).

    Created with its mode in one step: a key is never readable by others, not even briefly.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _key_size(algorithm: str, bits) -> int:
    """The RSA size asked for (2048 by default), or 256 for Ed25519; BadParameter (exit 2) otherwise."""
    if algorithm == "ed25519":
        if bits is not None:
            raise click.BadParameter("--bits applies to RSA keys only; Ed25519 keys have a fixed size",
                                     param_hint="--bits")
        return 256
    bits = 2048 if bits is None else bits
    if bits not in RSA_SIZES:
        why = f"under {MIN_RSA_BITS} bits verifiers refuse the key (RFC 8301)" if bits < MIN_RSA_BITS \
            else "choose one of " + ", ".join(map(str, RSA_SIZES))
        raise click.BadParameter(f"{bits} is not an accepted RSA key size: {why}; 2048 is a good choice",
                                 param_hint="--bits")
    return bits


def _new_private_key(algorithm: str, bits: int, path: Path) -> PrivateKey:
    """A fresh key written to path (mode 0600, never over an existing file)."""
    key = ed25519.Ed25519PrivateKey.generate() if algorithm == "ed25519" else rsa.generate_private_key(65537, bits)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        _write_new(path, pem, 0o600)
    except FileExistsError:
        stop(2, f"error: {path} already exists and is never overwritten; pick another selector")
    except OSError as exc:
        stop(2, f"error: cannot write {path}: {exc.strerror}")
    return PrivateKey(algorithm, key, bits, path)


@main.command("keygen")
@click.argument("domain", callback=_domain)
@click.option("--selector", callback=_selector, help="Selector name (default: s + today's date, UTC).")
@click.option("--algorithm", type=click.Choice(["rsa", "ed25519"]), default="rsa", show_default=True)
@click.option("--bits", type=int, help="RSA key size: 1024, 2048 (default), 3072 or 4096.")
@click.option("--keys-dir", default="keys", show_default=True, help="Folder holding DOMAIN/SELECTOR.key.")
@click.option("--testing", is_flag=True, help="Publish with t=y: verifiers treat the domain as testing DKIM.")
def keygen(domain: str, selector, algorithm: str, bits, keys_dir: str, testing: bool) -> None:
    """Make a new key pair for DOMAIN and the TXT record to publish for it."""
    bits = _key_size(algorithm, bits)
    folder = Path(keys_dir) / domain
    selector = selector or _dated_selector(folder)
    key_path, dns_path = folder / f"{selector}.key", folder / f"{selector}.dns"
    for path in (key_path, dns_path):
        if os.path.lexists(path):  # lexists: a symlink there counts, wherever it points
            stop(2, f"error: {path} already exists and is never overwritten; pick another selector "
                     f"(rotate: new selector, publish it, switch signing to it, then retire the old one)")
    private = _new_private_key(algorithm, bits, key_path)
    txt = private.dns_txt(testing)
    line = zone_line(selector, domain, txt)
    try:
        _write_new(dns_path, f"; DKIM key {selector} for {domain}: publish this TXT record\n{line}\n"
                   .encode("ascii"), 0o644)
    except OSError as exc:
        stop(2, f"error: cannot write {dns_path}: {exc.strerror} (the key {key_path} was written; "
                 f"remove it before trying again)")
    size = "Ed25519" if algorithm == "ed25519" else f"RSA {bits}-bit"
    click.echo(f"Private key: {key_path} ({size}, mode 0600; keep it secret, back it up)")
    click.echo(f"DNS record:  {dns_path}")
    click.echo(f"\nPublish a TXT record at {key_name(selector, domain)} with this value:\n\n{txt}\n")
    click.echo(f"As a zone-file line:\n\n{line}\n")
    if algorithm == "ed25519":
        click.echo("Not every receiver checks Ed25519 signatures yet: sign with an RSA selector as well.\n")
    click.echo(f"Once published, check it: salmon-dkim check-dns {domain} {selector} --keys-dir {keys_dir}")


@main.command("dns-record")
@click.argument("domain", callback=_domain)
@click.argument("selector", callback=_selector)
@click.option("--keys-dir", default="keys", show_default=True, help="Folder holding DOMAIN/SELECTOR.key.")
@click.option("--testing", is_flag=True, help="Include t=y (testing).")
def dns_record(domain: str, selector: str, keys_dir: str, testing: bool) -> None:
    """Print the TXT record (a zone-file line) for an existing key."""
    private = _load(keys_dir, domain, selector)
    click.echo(zone_line(selector, domain, private.dns_txt(testing)))


def _resolver(zone, dns_settings) -> TXTResolver:
    if zone:
        try:
            return ZoneResolver(zone)
        except DNSError as exc:
            stop(2, f"error: {exc}")
    from salmon_dkim.dns.resolver import resolver_from_settings  # noqa: PLC0415 (live DNS only when asked for)
    # A check must see what DNS serves now, not what an earlier lookup cached.
    return resolver_from_settings(dataclasses.replace(dns_settings, cache_size=0, cache_file=None))


def _published(resolver: TXTResolver, name: str) -> bytes:
    """The one DKIM key record at name; stops with exit 1 saying why there is none."""
    try:
        records: List[bytes] = resolver.txt(name)
    except NoRecord:
        stop(1, f"not published: no TXT record at {name}")
    except TemporaryDNSError as exc:
        stop(1, f"could not fetch: temporary DNS failure looking up {name} ({exc}); try again later")
    except DNSError as exc:
        stop(1, f"could not fetch: {exc}")
    if not records:
        stop(1, f"not published: no TXT record at {name}")
    if len(records) > 1:  # the verifier's rule (core/keyfetch.py): one answer to one question
        keys = sum(1 for r in records if _DKIM_RECORD.search(r))
        stop(1, f"multiple records: {len(records)} TXT records at {name} ({keys} of them DKIM key records); "
                 f"a key needs exactly one, verifiers refuse it (permerror): remove the others")
    return records[0]


@main.command("check-dns")
@click.argument("domain", callback=_domain)
@click.argument("selector", callback=_selector)
@click.option("--keys-dir", help="Folder holding DOMAIN/SELECTOR.key (default: KeysDir of --config, else keys).")
@click.option("--zone", type=click.Path(dir_okay=False), help="Answer DNS from this zone file instead.")
@click.option("--config", type=click.Path(dir_okay=False),
              help="salmon_dkim.ini: its [DNS] name servers, port, timeout and zone file are used.")
def check_dns(domain: str, selector: str, keys_dir, zone, config) -> None:
    """Check that DNS publishes the public half of DOMAIN/SELECTOR.key (exit 0 only then)."""
    settings = settings_or_stop(config, "error: ")
    keys_dir = keys_dir or (str(settings.signing.keys_dir) if config else "keys")
    private = _load(keys_dir, domain, selector)
    name = key_name(selector, domain)
    try:
        record = parse_key_record(_published(_resolver(zone, settings.dns), name))
    except KeyRecordError as exc:
        stop(1, f"malformed: the record at {name} has a bad {exc.tag or 'tag list'}: {exc}")
    fix = f"publish the record from salmon-dkim dns-record {domain} {selector}"
    if record.revoked:
        stop(1, f"revoked: the record at {name} has an empty p= (key revoked); {fix}")
    if record.key_type != private.algorithm:
        stop(1, f"key type differs: {name} publishes k={record.key_type} but {private.path} is "
                 f"{private.algorithm}; {fix}")
    if record.key_type == "rsa" and record.bits() < MIN_RSA_BITS:
        stop(1, f"too weak: {name} publishes a {record.bits()}-bit RSA key; verifiers refuse keys under "
                 f"{MIN_RSA_BITS} bits (RFC 8301); {fix}")
    if not record.matches(private):
        stop(1, f"mismatch: {name} publishes a different key from the public half of {private.path}; {fix}")
    if record.hashes is not None and "sha256" not in record.hashes:
        stop(1, f"unusable: {name} has h={':'.join(record.hashes)}, which refuses sha256 signatures; "
                 f"remove h= or add sha256")
    if "*" not in record.services and "email" not in record.services:
        stop(1, f"unusable: {name} has s={':'.join(record.services)}, not for email; remove s= or add email")
    if record.testing:
        click.echo(f"warning: {name} has t=y (testing): verifiers may ignore failures; remove t=y when done",
                   err=True)
    click.echo(f"ok: {name} publishes the public key of {private.path} ({record.key_type}, {record.bits()} bits)")
