"""ADVISOR_HOME as the service holds it: checked, private, and held by one service at a time.

Two services on one home would each think they own its engines: the second one's shutdown
stopped the first one's. A lock file (flock, released by the kernel when the process dies,
so a crash never leaves a stale lock) makes the second refuse before it touches anything.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import logging.handlers
import os
import stat
from pathlib import Path

from advisor.errors import AdvisorError

LOCK_NAME = "serve.lock"
SOCKET_PATH_MAX = 100  # sun_path is 108 bytes on Linux, with the NUL and "<id>.sock" to come


class HomeError(AdvisorError):
    """ADVISOR_HOME cannot be used: the message says what is wrong and what to do."""


class HomeBusy(HomeError):
    """Another service holds this ADVISOR_HOME."""


def prepare(home: Path) -> None:
    """Make ADVISOR_HOME (0700) and prove it can be written, or say in one line why not."""
    try:
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not home.is_dir():
            raise NotADirectoryError(20, "not a folder")
        probe = home / f".write-test-{os.getpid()}"
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.close(fd)
        probe.unlink()
        for sub in ("logs", "run"):
            (home / sub).mkdir(mode=0o700, exist_ok=True)
            if not (home / sub).is_dir():
                raise NotADirectoryError(20, f"{sub} is not a folder")
    except OSError as exc:
        raise HomeError(f"ADVISOR_HOME {home} cannot be used ({exc.strerror or exc}): make it a "
                        "writable folder, or set ADVISOR_HOME to one") from None


class HomeLock:
    """An exclusive hold on ADVISOR_HOME for as long as this object (and its process) lives."""

    def __init__(self, home: Path) -> None:
        self.path = home / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> HomeLock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise HomeBusy(f"another advisor serve (pid {holder}) is using ADVISOR_HOME "
                           f"{self.path.parent}: stop it first, or set ADVISOR_HOME to another "
                           "folder; nothing was touched") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None


def socket_dir(home: Path) -> Path:
    """Where engines' Unix sockets and key files live: ADVISOR_HOME/run (0700), or, when that
    path is too long for a socket name, a 0700 folder of this user's under /tmp named for
    the home, checked to be ours and private before it is used."""
    run = home / "run"
    if len(os.fsencode(run)) <= SOCKET_PATH_MAX - 20:
        return run
    digest = hashlib.sha256(os.fsencode(home.resolve())).hexdigest()[:16]
    short = Path("/tmp") / f"slm-advisor-{os.getuid()}-{digest}"
    short.mkdir(mode=0o700, exist_ok=True)
    info = short.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise HomeError(f"{short} is not a private folder of this user: remove it, or use a "
                        "shorter ADVISOR_HOME")
    return short


def log_to_file(home: Path) -> Path:
    """The service's own log, ADVISOR_HOME/logs/advisor.log (0600), beside stderr: where every
    unexpected error's traceback goes, and what a 500 page points to."""
    path = home / "logs" / "advisor.log"
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))
    root = logging.getLogger("advisor")
    for old in [h for h in root.handlers if getattr(h, "advisor_home", None)]:
        root.removeHandler(old)  # one service per process: the last home's log wins
        old.close()
    handler = logging.handlers.RotatingFileHandler(path, maxBytes=10 * 2**20, backupCount=3)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    loud = logging.StreamHandler()  # what an operator must see at once goes to stderr too
    loud.setLevel(logging.WARNING)
    loud.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    for h in (handler, loud):
        setattr(h, "advisor_home", str(home))  # noqa: B010 - a mark on a stdlib object
        root.addHandler(h)
    root.setLevel(logging.INFO)
    return path
