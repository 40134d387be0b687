"""What every salmon-dkim command shares: stopping with an exit code, the INI file, the message."""
from __future__ import annotations

import sys
from typing import NoReturn, Optional

import click

from salmon_dkim.config import ConfigError, Settings, load_settings


def stop(code: int, message: str, *, err: Optional[bool] = None) -> NoReturn:
    """Print ``message`` and exit with ``code``; errors (exit 2) go to standard error."""
    click.echo(message, err=code == 2 if err is None else err)
    raise click.exceptions.Exit(code)


def settings_or_stop(config_file: Optional[str], prefix: str = "") -> Settings:
    """The checked settings of ``config_file`` (defaults without one); a bad file exits 2."""
    try:
        return load_settings(config_file, check_key_files=False)
    except ConfigError as exc:
        stop(2, f"{prefix}{exc}")


def read_message(path: Optional[str], prefix: str = "") -> bytes:
    """The message in ``path``, or standard input for none or "-"; unreadable exits 2."""
    try:
        if path is None or path == "-":
            return sys.stdin.buffer.read()
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        stop(2, f"{prefix}cannot read {path or 'standard input'}: {exc.strerror or exc}")
