"""salmon-dkim sign, log, stats: sign a message by hand; read the activity log.

``sign`` prints the signed message and nothing else, or prints nothing and
says on stderr why it could not sign (exit 1): a script can never mistake an
unsigned message for a signed one.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import sys
from collections import Counter
from types import MappingProxyType
from typing import List, NoReturn, Optional, Sequence

import click

from salmon_dkim.activity import ActivityLog, read_activity
from salmon_dkim.cli import main
from salmon_dkim.cli.common import read_message, settings_or_stop, stop
from salmon_dkim.config import DomainKeys, Settings
from salmon_dkim.core.keys import KeyStore
from salmon_dkim.core.signer import Signer, SigningError

EVENTS = ("sign", "unsigned", "verify", "skip-verify")
COLUMN_LIMITS = {"message-id": 40}


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
    activity = None if config_file else ActivityLog(None)
    # the reason goes to stderr once, below, not again through the logging fallback
    logging.getLogger("salmon_dkim").addHandler(logging.NullHandler())
    try:
        result = Signer(settings, KeyStore(), activity).sign(data, domain=domain)
    except SigningError as exc:
        _stop("sign", 1, f"not signed: {exc}")
    if result.unsigned_reason:
        _stop("sign", 1, f"not signed: {result.unsigned_reason}")
    sys.stdout.buffer.write(result.message)
    sys.stdout.buffer.flush()


# --- the activity log --------------------------------------------------------------------------------

def _log_path(command: str, settings: Settings):
    path = settings.logging.activity_log
    if path is None:
        _stop(command, 2, "no activity log configured ([Logging] ActivityLog); give --config FILE")
    return path


def _entries(command: str, path, **filters) -> List[dict]:
    try:
        return read_activity(path, **filters)
    except OSError as exc:
        _stop(command, 2, f"cannot read the activity log {path}: {exc.strerror or exc}")


def _row(entry: dict) -> List[str]:
    results = [r for r in entry.get("results") or () if isinstance(r, dict)]
    if entry.get("event") == "verify":
        d = ",".join(dict.fromkeys(str(r.get("d") or "?") for r in results))
        s = ",".join(str(r.get("s") or "?") for r in results)
        outcome = ",".join(str(r.get("result")) for r in results) or "none"
        reasons = [str(r.get("reason")) for r in results if r.get("result") != "pass" and r.get("reason")]
        reason = entry.get("reason") or "; ".join(reasons)
        if entry.get("action"):
            outcome += f" ({entry['action']})"
    else:
        d, s, outcome = (str(entry.get(k) or "") for k in ("d", "s", "algorithm"))
        reason = entry.get("reason") or ""
    return [str(entry.get("time", "")), str(entry.get("event", "")), str(entry.get("message_id") or "-"),
            d, s, outcome, str(reason)]


def format_table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> str:
    """Columns padded to their widest cell (the last one left ragged); long cells cut with '…'."""
    cut = [[_cut(cell, COLUMN_LIMITS.get(name)) for cell, name in zip(row, header)] for row in rows]
    table = [list(header)] + cut
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    return "\n".join(("  ".join(cell.ljust(w) for cell, w in zip(row[:-1], widths)) + "  " + row[-1])
                     .rstrip(" ") for row in table)


def _cut(text: str, limit: Optional[int]) -> str:
    return text if limit is None or len(text) <= limit else text[:limit - 1] + "…"


@main.command("log")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="salmon_dkim.ini to read.")
@click.option("--domain", help="Only entries for this d= domain.")
@click.option("--last", type=click.IntRange(min=1), default=20, show_default=True,
              help="How many of the most recent entries.")
@click.option("--event", type=click.Choice(EVENTS), help="Only entries of this kind.")
def log_command(config_file: Optional[str], domain: Optional[str], last: int, event: Optional[str]) -> None:
    """Print recent activity (signed, unsigned, verified) as a table."""
    path = _log_path("log", _settings("log", config_file))
    entries = _entries("log", path, event=event, domain=domain, last=last)
    if not entries:
        click.echo(f"no entries in {path}")
        return
    header = ["time", "event", "message-id", "d=", "s=", "algorithm/result", "reason"]
    click.echo(format_table([_row(e) for e in entries], header))


@main.command("stats")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="salmon_dkim.ini to read.")
def stats_command(config_file: Optional[str]) -> None:
    """Print counts from the activity log: signed, unsigned by reason, verify results."""
    path = _log_path("stats", _settings("stats", config_file))
    entries = _entries("stats", path)
    if not entries:
        click.echo(f"no entries in {path}")
        return
    by_event = Counter(e.get("event") for e in entries)
    click.echo(f"{len(entries)} entries in {path}, {entries[0].get('time')} to {entries[-1].get('time')}")
    signed, unsigned, results, skipped = Counter(), Counter(), Counter(), Counter()
    for e in entries:
        if e.get("event") == "sign":
            for selector in str(e.get("s") or "?").split(","):
                signed[f"d={e.get('d')} s={selector}"] += 1
        elif e.get("event") == "unsigned":
            unsigned[str(e.get("reason") or "?")] += 1
        elif e.get("event") == "verify":
            words = [str(r.get("result")) for r in e.get("results") or () if isinstance(r, dict)]
            results.update(words or ["none (no signature)"])
        elif e.get("event") == "skip-verify":
            skipped[str(e.get("reason") or "?")] += 1
    for title, count, counter in (("signed messages", by_event["sign"], signed),
                                  ("unsigned messages", by_event["unsigned"], unsigned),
                                  ("verified messages", by_event["verify"], results),
                                  ("verification skipped", by_event["skip-verify"], skipped)):
        click.echo(f"\n{title}: {count}")
        width = max((len(k) for k in counter), default=0)
        for key, n in counter.most_common():
            click.echo(f"  {key.ljust(width)}  {n:>6}")
