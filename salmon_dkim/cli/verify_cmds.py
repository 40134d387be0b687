"""salmon-dkim verify: every signature of a message file (or stdin), one line or JSON object each.

Exit 0 when at least one signature passes, 1 when none does, 2 on
unreadable input, a bad configuration or a zone file that cannot be read.
"""
from __future__ import annotations

import json
import sys
from typing import Optional

import click

from salmon_dkim.cli import main
from salmon_dkim.cli.common import read_message, settings_or_stop, stop
from salmon_dkim.dns.resolver import DNSError, resolver_from_settings
from salmon_dkim.core.verifier import VerificationReport, Verifier


PREFIX = "salmon-dkim verify: "


def _table(report: VerificationReport) -> str:
    if not report.results:
        lines = ["no DKIM signature" + (f" ({report.unverified_reason})" if report.unverified_reason else "")]
    else:
        lines = [f"{r.result:<9} {r.type} d={r.domain or '?'} s={r.selector or '?'} "
                 f"a={r.algorithm or '?'}: {r.reason}" for r in report.results]
    if report.not_checked:
        lines.append(f"{report.not_checked} more signature(s) not checked (MaxSignatures)")
    if report.adsp:
        lines.append(f"ADSP {report.adsp}: {report.adsp_reason}")
    return "\n".join(lines)


@main.command("verify")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="salmon_dkim.ini to read.")
@click.option("--zone", "zone_file", type=click.Path(dir_okay=False),
              help="Answer DNS from this zone file instead of the network.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON array, one object per signature.")
@click.argument("message", required=False)
def verify_command(config_file: Optional[str], zone_file: Optional[str], as_json: bool,
                   message: Optional[str]) -> None:
    """Verify every DKIM signature of MESSAGE (or standard input)."""
    settings = settings_or_stop(config_file, PREFIX)
    try:
        resolver = resolver_from_settings(settings.dns, zone_file=zone_file)
    except (DNSError, ImportError, OSError) as exc:
        stop(2, f"{PREFIX}no DNS source: {exc}")
    report = Verifier(settings, resolver).verify(read_message(message, PREFIX))
    if as_json:
        click.echo(json.dumps([r.as_json() for r in report.results]))
    else:
        click.echo(_table(report))
    sys.exit(0 if report.passed else 1)
