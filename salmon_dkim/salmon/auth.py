"""Submission users: a file of Argon2id password hashes, and the authenticator the receivers call.

The file holds one ``USER:HASH`` line per user (``#`` comments and blank lines
allowed), HASH being argon2-cffi's encoded Argon2id hash (salt and
parameters included), as ``salmon-dkim passwd USER`` writes it: atomically,
mode 0600, never through a symbolic link.

An authenticator is any callable ``(user: str, password: str) -> bool``;
:class:`CredentialsFile` is the built-in one.  It looks at the file (one stat)
on every check and reads it again when it changed, so users added or removed
with ``passwd`` count at once, without a restart.  Checking a password costs
Argon2 time (tens of milliseconds): the receivers call it off the event loop.
"""
from __future__ import annotations

import logging
import os
import secrets
import stat
import threading
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple, Union

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

LOG = logging.getLogger("salmon_dkim.salmon.auth")

Authenticator = Callable[[str, str], bool]
PathLike = Union[str, "os.PathLike[str]"]

MAX_USER_LENGTH = 256
_HASHER = PasswordHasher()  # argon2-cffi's defaults: Argon2id, RFC 9106's low-memory profile


class CredentialsError(Exception):
    """A credentials file that cannot be read or used; str() is one line naming the file."""


def user_name_problem(user: str) -> Optional[str]:
    """Why ``user`` cannot be a user name (None when it can): the file format takes no ':' or spaces."""
    if not user:
        return "the user name is empty"
    if len(user) > MAX_USER_LENGTH:
        return f"the user name is longer than {MAX_USER_LENGTH} characters"
    if ":" in user or any(c.isspace() or not c.isprintable() for c in user) or user.startswith("#"):
        return "a user name may not contain ':', spaces or control characters, nor start with '#'"
    return None


def hash_password(password: str) -> str:
    """A fresh salted Argon2id hash of ``password`` (argon2-cffi's encoded form)."""
    return _HASHER.hash(password)


def parse_credentials(text: str, name: str) -> Dict[str, str]:
    """Users and hashes from the file's text; CredentialsError names the file and line of a mistake."""
    users: Dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        user, colon, encoded = line.partition(":")
        problem = user_name_problem(user) if colon else "no ':' between user name and hash"
        if problem is None and not encoded.startswith("$argon2"):
            problem = "the hash is not an Argon2 hash; set the password again with salmon-dkim passwd"
        if problem is None and user in users:
            problem = f"user {user!r} appears twice"
        if problem:
            raise CredentialsError(f"{name}: line {number}: {problem}")
        users[user] = encoded
    return users


def _open_no_follow(path: Path, flags: int, mode: int = 0o600) -> int:
    try:
        return os.open(path, flags | getattr(os, "O_NOFOLLOW", 0), mode)
    except OSError as exc:
        if os.path.islink(path):
            raise CredentialsError(f"{path}: is a symbolic link; give the file itself") from None
        raise CredentialsError(f"{path}: cannot be opened: {exc.strerror or exc}") from None


def read_credentials(path: PathLike) -> Dict[str, str]:
    """The users in ``path`` (none when it does not exist); refuses a symbolic link."""
    path = Path(path)
    if not os.path.lexists(path):
        return {}
    fd = _open_no_follow(path, os.O_RDONLY)
    with os.fdopen(fd, "rb") as f:
        raw = f.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CredentialsError(f"{path}: is not UTF-8 text ({exc.reason})") from None
    return parse_credentials(text, str(path))


def write_credentials(path: PathLike, users: Dict[str, str]) -> None:
    """Replace ``path`` with ``users`` atomically: a new file (mode 0600) renamed over the old one.

    A symbolic link at ``path`` is refused, not followed nor replaced.  Run as root,
    the new file keeps the old one's owner, so a server that dropped its privileges can still read it.
    """
    path = Path(path)
    owner: Optional[Tuple[int, int]] = None
    if os.path.lexists(path):
        st = os.lstat(path)
        if stat.S_ISLNK(st.st_mode):
            raise CredentialsError(f"{path}: is a symbolic link; give the file itself")
        owner = (st.st_uid, st.st_gid)
    text = "".join(f"{user}:{encoded}\n" for user, encoded in users.items())
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
    fd = _open_no_follow(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            if owner is not None and os.geteuid() == 0:
                os.fchown(f.fileno(), *owner)
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


class CredentialsFile:
    """The built-in authenticator: ``CredentialsFile(path)(user, password) -> bool``.

    Thread-safe; the file is read again when its inode, size or modification time
    changes.  A file that becomes unreadable or malformed while running is logged
    and the last good version is kept; at construction it raises CredentialsError.
    """

    def __init__(self, path: PathLike) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._version: Optional[tuple] = None
        self._users: Dict[str, str] = {}
        self._reload(raise_errors=True)
        if not self.path.exists():
            LOG.warning("credentials file %s does not exist: no user can log in until "
                        "'salmon-dkim passwd USER' creates it", self.path)
        # an unknown user costs one verification too, so the time taken does not tell which users exist
        self._decoy = hash_password(secrets.token_urlsafe(16))

    def _stat(self) -> Optional[tuple]:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)

    def _reload(self, raise_errors: bool = False) -> None:
        with self._lock:
            version = self._stat()
            if version == self._version:
                return
            try:
                users = read_credentials(self.path)
            except (CredentialsError, OSError) as exc:
                if raise_errors:
                    raise CredentialsError(str(exc)) from None
                LOG.error("%s; still using the users read before", exc)
                return
            self._users, self._version = users, version
            LOG.info("read %d submission users from %s", len(users), self.path)

    def users(self) -> Tuple[str, ...]:
        """The user names now in the file."""
        self._reload()
        return tuple(self._users)

    def __call__(self, user: str, password: str) -> bool:
        self._reload()
        encoded = self._users.get(user)
        try:
            return _HASHER.verify(encoded or self._decoy, password) and encoded is not None
        except (VerificationError, InvalidHashError):
            return False

    def __repr__(self) -> str:
        return f"<CredentialsFile {self.path}>"
