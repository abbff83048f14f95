"""One `modelroute up` per directory and per port.

Envoy binds its listeners with SO_REUSEPORT and gRPC its port with SO_REUSEPORT too, so
a second control plane on the same ports would start "fine" and the kernel would split
the traffic silently between two configurations; and a second instance on the same
directory would overwrite the first one's run files (status, canary state). So, before
anything is started or written:

- `InstanceLock` takes an exclusive `flock` on `<run dir>/lock` (released by the kernel
  however the holder dies, so a crashed instance never blocks the next one) and writes
  its PID there for the message of the next one;
- `check_ports` binds each port the instance is about to serve on, without SO_REUSEPORT
  (which fails while anyone holds it, with or without that option), and names the
  process that holds a busy one (from /proc: the socket's inode and the owner's fds).

A refusal is an `InstanceConflict` whose message names the process, for the CLI to print.
`holder` tells others (`modelroute status`, `rollout`) whether a directory is served
right now: the status file outlives its writer, the lock does not.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
from collections.abc import Iterable
from pathlib import Path

LOCK_FILE = "lock"


class InstanceConflict(RuntimeError):
    """Another process serves this directory or holds a port this instance needs."""


def _argv(pid: int) -> list[str]:
    """What `pid` runs, as a user would have typed it (`modelroute up DIR`, `envoy -c ...`)."""
    try:
        argv = [a.decode(errors="replace") for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if a]
    except OSError:
        return []
    if len(argv) > 1 and Path(argv[0]).name.startswith("python"):
        argv = argv[1:]  # a console script or `python -m x`: what was run, not the interpreter
        if len(argv) > 1 and argv[0] == "-m":
            argv = argv[1:]
    return [Path(argv[0]).name, *argv[1:]] if argv else []


def _shown(argv: list[str]) -> str:
    return " ".join(" ".join(argv).split())[:100]


def describe_process(pid: int) -> str:
    """`process 1234 (modelroute up examples/quickstart)`, and the `modelroute` that
    started it when it is a child of one (the Envoy of another `modelroute up`)."""
    argv = _argv(pid)
    text = f"process {pid}" + (f" ({_shown(argv)})" if argv else "")
    try:
        ppid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return text
    parent = _argv(ppid)
    if parent[:1] == ["modelroute"] and argv[:1] != ["modelroute"]:
        text += f", started by process {ppid} ({_shown(parent)})"
    return text


class InstanceLock:
    """`acquire()` or raise InstanceConflict; `release()` at exit."""

    def __init__(self, run_dir: Path, *, directory: Path) -> None:
        self.path = Path(run_dir) / LOCK_FILE
        self.directory = directory
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            holder = os.read(fd, 32).decode(errors="replace").strip()
            os.close(fd)
            if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
            who = describe_process(int(holder)) if holder.isdigit() else "another process"
            raise InstanceConflict(f"{self.directory} is already served by {who}; stop it first "
                                   f"(lock: {self.path})") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # the kernel drops the flock; the file stays (no unlink race)
            self._fd = None


def holder(run_dir: Path) -> int | None:
    """The PID serving the directory (0 while its holder has not written it yet), or None
    when nobody holds the lock."""
    path = Path(run_dir) / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
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


def _listening_inodes(port: int) -> set[str]:
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                inodes.add(inode)
    return inodes


def port_holder(port: int) -> int | None:
    """The PID of a process listening on TCP `port`, when /proc lets us see it."""
    inodes = {f"socket:[{i}]" for i in _listening_inodes(port)}
    if not inodes:
        return None
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            for fd in (entry / "fd").iterdir():
                if os.readlink(fd) in inodes:
                    return int(entry.name)
        except OSError:
            continue
    return None


def split_address(address: str) -> tuple[str, int]:
    """`HOST:PORT` → (host, port); ValueError naming the address otherwise."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"{address!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


def check_ports(ports: Iterable[tuple[str, int, str]]) -> None:
    """Raise InstanceConflict naming the holder of the first (host, port, purpose) that
    another process listens on."""
    for host, port, purpose in ports:
        if port == 0:
            continue
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            # SO_REUSEADDR only lets us past connections in TIME_WAIT; on Linux it never
            # allows a second bind next to a listening socket.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError as err:
                if err.errno != errno.EADDRINUSE:
                    continue  # e.g. a privileged port: that resource's own problem, not another instance
                pid = port_holder(port)
                who = describe_process(pid) if pid is not None else "another process"
                raise InstanceConflict(f"port {port} ({purpose}) is already in use by {who}") from None
