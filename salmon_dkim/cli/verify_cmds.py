"""salmon-dkim verify: every signature of a message file (or stdin), one line or JSON object each.

With ``--peer-ip IP --mail-from ADDR [--helo NAME]`` also SPF and DMARC, as a
receiver at that session would evaluate them.  Exit 0 when at least one
signature passes, 1 when none does, 2 on unreadable input, bad arguments, a
bad configuration or a zone file that cannot be read.
"""
from __future__ import annotations

import dataclasses
import ipaddress
import json
import sys
from typing import Optional

import click

from salmon_dkim.cli import main
from salmon_dkim.cli.common import read_message, settings_or_stop, stop
from salmon_dkim.dns.resolver import DNSError, resolver_from_settings
from salmon_dkim.core.results import Session, VerificationReport
from salmon_dkim.core.verifier import Verifier


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
    if report.spf is not None:
        lines.append(f"{report.spf.result:<9} spf {report.spf.identity} {report.spf.domain or '?'}: {report.spf.reason}")
    if report.dmarc is not None:
        d = report.dmarc
        lines.append(f"{d.result:<9} dmarc {d.domain or '?'} policy={d.policy or '-'} disposition={d.disposition}: "
                     f"{d.reason}")
    return "\n".join(lines)


@main.command("verify")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="salmon_dkim.ini to read.")
@click.option("--zone", "zone_file", type=click.Path(dir_okay=False),
              help="Answer DNS from this zone file instead of the network.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON array, one object per signature.")
@click.option("--peer-ip", help="Also check SPF and DMARC as a receiver would for a client at this IP address.")
@click.option("--mail-from", help="With --peer-ip: the envelope sender (MAIL FROM); empty for a null sender.")
@click.option("--helo", default="", help="With --peer-ip: the name the client gave in HELO/EHLO.")
@click.argument("message", required=False)
def verify_command(config_file: Optional[str], zone_file: Optional[str], as_json: bool, peer_ip: Optional[str],
                   mail_from: Optional[str], helo: str, message: Optional[str]) -> None:
    """Verify every DKIM signature of MESSAGE (or standard input)."""
    if (peer_ip is None) != (mail_from is None):
        stop(2, f"{PREFIX}--peer-ip and --mail-from go together (SPF and DMARC need both)")
    if peer_ip is not None:
        try:
            ipaddress.ip_address(peer_ip)
        except ValueError:
            stop(2, f"{PREFIX}--peer-ip {peer_ip!r} is not an IP address")
    settings = settings_or_stop(config_file, PREFIX)
    try:
        resolver = resolver_from_settings(settings.dns, zone_file=zone_file)
    except (DNSError, ImportError, OSError) as exc:
        stop(2, f"{PREFIX}no DNS source: {exc}")
    session = None
    if peer_ip is not None:  # as the mx listener would see it: not trusted, so SPF is checked
        settings = dataclasses.replace(settings, verification=dataclasses.replace(settings.verification,
                                                                                  trusted_ips=()))
        session = Session(peer_ip=peer_ip, helo=helo or None, mail_from=mail_from.strip("<>"))
    report = Verifier(settings, resolver).verify(read_message(message, PREFIX), session)
    if as_json:
        extra = [x.as_json() for x in (report.spf, report.dmarc) if x is not None]
        click.echo(json.dumps([r.as_json() for r in report.results] + extra))
    else:
        click.echo(_table(report))
    sys.exit(0 if report.passed else 1)
