"""salmon-dkim dmarc-report: the RFC 7489 aggregate report for one domain and period, from the activity log."""
from __future__ import annotations

import socket
import sys
from datetime import datetime
from typing import Optional

import click

from salmon_dkim.activity import read_activity
from salmon_dkim.cli import main
from salmon_dkim.cli.common import settings_or_stop, stop
from salmon_dkim.core.dmarc_report import NothingToReport, aggregate_report, parse_time


def _time(option: str, text: str) -> datetime:
    try:
        return parse_time(text)
    except ValueError:
        stop(2, f"{option} {text!r} is not an ISO 8601 time; write it as 2024-05-01 or 2024-05-01T00:00:00Z")


@main.command("dmarc-report")
@click.option("--domain", required=True, help="The domain whose DMARC record the report is for.")
@click.option("--since", required=True, help="Start of the period (ISO 8601, UTC unless a zone is given).")
@click.option("--until", "until", required=True, help="End of the period, not included (ISO 8601).")
@click.option("--config", "config_file", type=click.Path(dir_okay=False),
              help="salmon_dkim.ini, for [Logging] ActivityLog.")
@click.option("--org-name", help="The reporting organization (default: this host's name).")
@click.option("--email", help="Contact address of the reporter (default: postmaster@ this host).")
def dmarc_report(domain: str, since: str, until: str, config_file: Optional[str], org_name: Optional[str],
                 email: Optional[str]) -> None:
    """Write the DMARC aggregate report (RFC 7489 appendix C XML) for DOMAIN to standard output."""
    begin, end = _time("--since", since), _time("--until", until)
    if end <= begin:
        stop(2, f"--until {until} is not after --since {since}")
    settings = settings_or_stop(config_file)
    path = settings.logging.activity_log
    if path is None:
        stop(2, "no activity log to read: give --config with a salmon_dkim.ini whose [Logging] ActivityLog is set")
    try:
        entries = read_activity(path)
    except OSError as exc:
        stop(2, f"{path}: cannot be read: {exc.strerror or exc}")
    host = socket.getfqdn()
    try:
        report = aggregate_report(entries, domain, begin, end, org_name=org_name or host,
                                  email=email or f"postmaster@{host}")
    except NothingToReport as exc:
        stop(1, f"Nothing to report: {exc} in {path}.", err=True)
    sys.stdout.buffer.write(report.xml)
    sys.stdout.buffer.flush()
    skipped = f"; {report.skipped} log entries skipped as malformed" if report.skipped else ""
    click.echo(f"{report.messages} messages in {report.records} records for {domain}{skipped}", err=True)
