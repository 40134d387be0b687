"""salmon-dkim passwd: add, change or remove a submission user in the credentials file.

The file is ``[Submission] CredentialsFile`` of ``--config`` or ``--file PATH``;
it is written atomically, mode 0600, never through a symbolic link (see
:mod:`salmon_dkim.salmon.auth`).  A running server notices the change at the
next login.  The password is asked twice on a terminal, or read from the first
line of standard input with ``--password-stdin``; it is never printed, nor is
its hash.
"""
from __future__ import annotations

import getpass
import sys
from pathlib import Path
from typing import Optional

import click

from salmon_dkim.cli import main
from salmon_dkim.cli.common import settings_or_stop, stop
from salmon_dkim.salmon.auth import (CredentialsError, hash_password, read_credentials, user_name_problem,
                                     write_credentials)


def _credentials_path(path: Optional[str], config: Optional[str]) -> Path:
    if path is not None:
        return Path(path)
    found = settings_or_stop(config, "error: ").submission.credentials_file
    if found is None:
        where = config or "the defaults"
        stop(2, f"error: no credentials file: [Submission] CredentialsFile is not set in {where}; "
                "set it or give --file PATH")
    return found


def _password(from_stdin: bool) -> str:
    if from_stdin:
        line = sys.stdin.buffer.readline()
        try:
            password = line.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError:
            stop(2, "error: the password on standard input is not UTF-8; nothing changed")
    elif not sys.stdin.isatty():
        stop(2, "error: no terminal to ask for the password on; pipe it in with --password-stdin")
    else:
        try:
            password = getpass.getpass("Password: ")
            again = getpass.getpass("Password again: ")
        except (EOFError, KeyboardInterrupt):
            stop(2, "\nerror: no password given; nothing changed")
        if password != again:
            stop(2, "error: the two passwords differ; nothing changed")
    if not password:
        stop(2, "error: the password is empty; nothing changed")
    return password


@main.command("passwd")
@click.argument("user")
@click.option("--config", type=click.Path(dir_okay=False),
              help="salmon_dkim.ini: its [Submission] CredentialsFile is the file to change.")
@click.option("--file", "path", type=click.Path(dir_okay=False),
              help="The credentials file to change (instead of CredentialsFile of --config).")
@click.option("--password-stdin", is_flag=True, help="Read the password from the first line of standard input.")
@click.option("--delete", is_flag=True, help="Remove USER instead of setting a password.")
def passwd(user: str, config: Optional[str], path: Optional[str], password_stdin: bool, delete: bool) -> None:
    """Add USER or change USER's password for SMTP AUTH on the submission listener (or --delete USER)."""
    problem = user_name_problem(user)
    if problem:
        stop(2, f"error: {problem}")
    if delete and password_stdin:
        stop(2, "error: --delete takes no password; leave out --password-stdin")
    target = _credentials_path(path, config)
    try:
        users = read_credentials(target)
        if delete:
            if user not in users:
                stop(2, f"error: {user} is not in {target}; nothing changed")
            del users[user]
            done = f"removed {user} from {target}"
        else:
            done = f"changed the password of {user} in {target}" if user in users else f"added {user} to {target}"
            users[user] = hash_password(_password(password_stdin))
        write_credentials(target, users)
    except CredentialsError as exc:
        stop(2, f"error: {exc}")
    except OSError as exc:
        stop(2, f"error: cannot write {target}: {exc.strerror or exc}")
    click.echo(done)
