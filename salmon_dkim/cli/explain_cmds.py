"""salmon-dkim explain: each signature's result and, for one that did not pass, what most likely changed.

Per signature: the result, domain, selector and algorithm, the short reason
(as our Authentication-Results gives it), what was found and what to do.
Exit 0 when a signature passes, 1 when none does, 2 on unreadable input, a
bad configuration or a zone file that cannot be read (as ``verify``).
"""
from __future__ import annotations

import re
import sys
import textwrap
from typing import List, Optional

import click

from salmon_dkim.cli import main
from salmon_dkim.cli.common import read_message, settings_or_stop, stop
from salmon_dkim.core.explain import Explanation, explain
from salmon_dkim.core.message import Message, MessageFormatError
from salmon_dkim.core.results import SignatureResult
from salmon_dkim.core.verifier import Verifier, signature_kind
from salmon_dkim.dns.resolver import DNSError, resolver_from_settings

PREFIX = "salmon-dkim explain: "
WIDTH = 78


def _shown(text: str) -> str:
    """Text from a message as printed here: control and 8-bit characters become "?"."""
    return re.sub(r"[^\x20-\x7e]", "?", text)


def _block(result: SignatureResult, why: Explanation) -> List[str]:
    lines = [f"{result.result:<9} {result.type} d={_shown(result.domain) or '?'} "
             f"s={_shown(result.selector) or '?'} a={_shown(result.algorithm) or '?'}",
             textwrap.fill(_shown(why.short), WIDTH, initial_indent="  ", subsequent_indent="  ")]
    if result.result != "pass":
        if why.detail and why.detail != why.short:
            lines.append(textwrap.fill(_shown(why.detail), WIDTH, initial_indent="  What changed: ",
                                       subsequent_indent="    "))
        if why.advice:
            lines.append(textwrap.fill(_shown(why.advice), WIDTH, initial_indent="  What to do: ",
                                       subsequent_indent="    "))
    return lines


@main.command("explain")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="salmon_dkim.ini to read.")
@click.option("--zone", "zone_file", type=click.Path(dir_okay=False),
              help="Answer DNS from this zone file instead of the network.")
@click.argument("message", required=False)
def explain_command(config_file: Optional[str], zone_file: Optional[str], message: Optional[str]) -> None:
    """Each signature of MESSAGE (or standard input) and, for a failing one, what most likely changed."""
    settings = settings_or_stop(config_file, PREFIX)
    try:
        resolver = resolver_from_settings(settings.dns, zone_file=zone_file)
    except (DNSError, ImportError, OSError) as exc:
        stop(2, f"{PREFIX}no DNS source: {exc}")
    data = read_message(message, PREFIX)
    report = Verifier(settings, resolver).verify(data)
    try:
        parsed: Optional[Message] = Message.parse(data)
    except MessageFormatError:
        parsed = None  # the verifier's reason (permerror: message format) says why
    positions = [i for i, (name, _) in enumerate(parsed.fields) if signature_kind(name)] if parsed else []
    lines: List[str] = []
    if not report.results:
        lines.append("no DKIM signature" + (f" ({report.unverified_reason})" if report.unverified_reason else ""))
    for n, result in enumerate(report.results):
        if parsed is not None and n < len(positions) and not report.unverified_reason:
            why = explain(parsed, result, resolver, settings, position=positions[n])
        else:
            why = Explanation(result.reason, result.reason)
        lines += _block(result, why)
    if report.not_checked:
        lines.append(f"{report.not_checked} more signature(s) not checked (MaxSignatures)")
    click.echo("\n".join(lines))
    sys.exit(0 if report.passed else 1)
