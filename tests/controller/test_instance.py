"""One instance per directory and per port: the second one is refused with the PID and
command of the process in the way; a lock dies with its holder."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from controller.local.instance import InstanceConflict, InstanceLock, check_ports, describe_process, port_holder
from tests.support import REPO, free_port, stop_process, wait_until


def test_a_second_lock_on_a_directory_names_the_holder(tmp_path: Path) -> None:
    first = InstanceLock(tmp_path / ".modelroute", directory=tmp_path)
    first.acquire()
    try:
        with pytest.raises(InstanceConflict) as refused:
            InstanceLock(tmp_path / ".modelroute", directory=tmp_path).acquire()
        assert f"{tmp_path} is already served by process {os.getpid()}" in str(refused.value)
        assert "lock: " in str(refused.value)
    finally:
        first.release()
    again = InstanceLock(tmp_path / ".modelroute", directory=tmp_path)
    again.acquire()  # released: free again
    again.release()


def test_a_lock_is_released_when_its_holder_is_killed(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time\nfrom pathlib import Path\nfrom controller.local.instance import InstanceLock\n"
         f"InstanceLock(Path({str(tmp_path)!r}), directory=Path('.')).acquire()\n"
         "print('locked', flush=True)\ntime.sleep(60)\n"],
        cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(InstanceConflict, match=f"process {holder.pid} "):
            InstanceLock(tmp_path, directory=tmp_path).acquire()
        holder.kill()
        holder.wait(timeout=10)
        lock = InstanceLock(tmp_path, directory=tmp_path)
        lock.acquire()  # the kernel dropped the dead holder's lock
        lock.release()
    finally:
        stop_process(holder)
        if holder.stdout:
            holder.stdout.close()


def test_a_busy_port_is_refused_naming_its_holder() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert port_holder(port) == os.getpid()
        with pytest.raises(InstanceConflict) as refused:
            check_ports([("127.0.0.1", free_port(), "free"), ("127.0.0.1", port, "xDS")])
        assert str(refused.value).startswith(f"port {port} (xDS) is already in use by process {os.getpid()} (")
        # A wildcard listener is in the way of a loopback one too.
        with pytest.raises(InstanceConflict):
            check_ports([("0.0.0.0", port, "listener")])
    check_ports([("127.0.0.1", port, "xDS"), ("127.0.0.1", 0, "any")])  # free again; 0 is never checked


def test_describe_process_shows_the_command_not_the_interpreter() -> None:
    child = subprocess.Popen([sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "0"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: b"http.server" in Path(f"/proc/{child.pid}/cmdline").read_bytes(), timeout=5,
                   what="the child's exec")
        assert describe_process(child.pid) == f"process {child.pid} (http.server --bind 127.0.0.1 0)"
    finally:
        stop_process(child)
