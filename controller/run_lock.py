"""Who is serving a directory: `DIR/.modelroute/lock`, held by the running `modelroute up`
(or `serve --provider file`) for as long as it runs.

The status file outlives the process that wrote it, so `modelroute status` needs to know
whether a writer is still there; a PID in a file can be stale or reused by another process.
An advisory `flock` is released by the kernel the moment its holder dies (even by
SIGKILL), so "the lock is held" means exactly "somebody is serving this directory". The
file also carries the holder's PID, for the message. A second instance on the same
directory is refused: two control planes would fight over the status and canary files.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

LOCK_FILE = "lock"


class AlreadyServed(RuntimeError):
    """Another live process holds the directory's lock."""


class RunLock:
    """The exclusive lock of one run directory (`DIR/.modelroute`)."""

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock and write our PID into it; AlreadyServed if somebody holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            pid = holder(self.path.parent)
            raise AlreadyServed(f"{self.path.parent.parent} is already served by another modelroute "
                                f"(pid {pid if pid is not None else '?'})") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None


def holder(run_dir: Path) -> int | None:
    """The PID serving the directory (0 while its holder has not written it yet), or None
    when nobody holds the lock."""
    path = Path(run_dir) / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.read(fd, 32).decode(errors="replace").strip()
            return int(text) if text.isdigit() else 0
        return None  # we got it: nobody else holds it (closing releases it again)
    finally:
        os.close(fd)
