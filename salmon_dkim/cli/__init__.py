"""The ``salmon-dkim`` command line: short commands, exit codes scripts can rely on.

Exit codes: 0 success, 1 the check or operation said no, 2 bad arguments or
unreadable input (click's own usage errors are 2 as well).
"""
import click

from salmon_dkim import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="salmon-dkim")
def main() -> None:
    """DKIM keys, DNS records, signing and verification for Salmon."""


# Each module registers its commands on ``main`` when imported.
from salmon_dkim.cli import (cache_cmds, dmarc_cmds, explain_cmds, keys_cmds, lifecycle_cmds,  # noqa: E402,F401
                             log_cmds, monitor_cmds, passwd_cmds, sign_cmds, verify_cmds)
