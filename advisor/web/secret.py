"""The server's own secret, `ADVISOR_HOME/secret`: 32 random bytes (hex) that sign the CSRF
tokens. It is never derived from the API key, so a token handed to any visitor says nothing
about the key; it is read back on later starts, so tokens and sessions survive a restart.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from pathlib import Path

from advisor.errors import AdvisorError

NAME = "secret"


def server_secret(home: Path) -> str:
    path = home / NAME
    try:
        home.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not path.exists():
            _make(path)
        return _read(path)
    except OSError as exc:
        raise AdvisorError(f"cannot read or make the server secret {path}: {exc.strerror or exc}; "
                           "ADVISOR_HOME must be a folder this user can write") from None


def _make(path: Path) -> None:
    """Written whole under a temporary name, then linked into place: the file is 0600 from
    its first instant, and a second service starting at the same moment never reads it
    half-written (the link fails if the other one won, and its secret is kept)."""
    tmp = path.with_name(f".{NAME}.{secrets.token_hex(8)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(32) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _read(path: Path) -> str:
    info = path.stat()
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise AdvisorError(f"{path} is readable by others (mode {stat.S_IMODE(info.st_mode):o}): "
                           "whoever read it can forge CSRF tokens; delete it (everyone signs in "
                           "again) and start the service, which makes a private one")
    text = path.read_text().strip()
    try:
        ok = len(bytes.fromhex(text)) == 32
    except ValueError:
        ok = False
    if not ok:
        raise AdvisorError(f"{path} is damaged (not 64 hex digits): delete it (everyone signs "
                           "in again) and start the service, which makes a new one")
    return text
