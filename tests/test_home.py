"""ADVISOR_HOME's lock and the engines' socket folder (the service-level faults are in test_faults.py)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from advisor.home import HomeBusy, HomeError, HomeLock, socket_dir


def test_the_lock_is_held_against_another_process_and_freed_when_it_dies(tmp_path: Path) -> None:
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from advisor.home import HomeLock; "
        f"HomeLock(Path({str(tmp_path)!r})).acquire(); print('held', flush=True); time.sleep(60)")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout and holder.stdout.readline().strip() == "held"
        with pytest.raises(HomeBusy, match=f"pid {holder.pid}"):
            HomeLock(tmp_path).acquire()
    finally:
        holder.kill()  # a crash, not a clean exit: the kernel drops the lock
        holder.wait()
    lock = HomeLock(tmp_path).acquire()
    assert (tmp_path / "serve.lock").read_text().strip() == str(os.getpid())
    lock.release()


def test_a_home_too_long_for_a_socket_name_gets_a_private_folder_of_its_own(tmp_path: Path) -> None:
    home = tmp_path / ("h" * 120)
    home.mkdir()
    where = socket_dir(home)
    assert len(os.fsencode(where / "0123abcd.sock")) < 108
    info = where.lstat()
    assert info.st_uid == os.getuid() and stat.S_IMODE(info.st_mode) == 0o700
    assert socket_dir(home) == where, "the same home finds the same folder after a restart"
    where.chmod(0o777)  # someone widened it (or made it first): it is not used
    try:
        with pytest.raises(HomeError, match="not a private folder"):
            socket_dir(home)
    finally:
        where.rmdir()
    assert socket_dir(tmp_path) == tmp_path / "run"
