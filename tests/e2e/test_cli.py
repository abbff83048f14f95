"""`modelroute up DIR` as a user runs it, a real process each time.

Issue #5: prints the table of ModelServers (with their URLs) and ModelRoutes, serves a
request through Envoy, and on Ctrl-C (SIGINT) exits cleanly leaving no child process
(Envoy, replicas) behind.

Issue #13: `kill -9` of `up` leaves no process of it after 5 s; a second `up` on the same
directory or ports fails at once naming the process that holds them; a FIFO named
`*.yaml` is ignored with a warning (by `up`, whose edits are still served and which still
stops on Ctrl-C within 5 s, and by `modelroute validate -f DIR`)."""

from __future__ import annotations

import json
import os
import selectors
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from tests.support import REPO, VENV_BIN, fetch_timeouts_in_metrics, free_port, stop_process

pytestmark = pytest.mark.slow


def descendants(pid: int) -> set[int]:
    """Every live process below `pid` (Envoy and replicas run in their own sessions, so
    process groups would miss them; parent links do not)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if fields[0] != "Z":
                parents[int(entry.name)] = int(fields[1])
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def read_until(proc: subprocess.Popen, marker: str, timeout: float) -> str:
    """stdout until a line containing `marker` (the output so far on failure)."""
    assert proc.stdout is not None
    selector = selectors.DefaultSelector()
    selector.register(proc.stdout, selectors.EVENT_READ)
    out = ""
    deadline = time.monotonic() + timeout
    while marker not in out:
        left = deadline - time.monotonic()
        if left <= 0 or proc.poll() is not None:
            raise AssertionError(f"no {marker!r} from `modelroute up` (exit={proc.poll()}); output:\n{out}")
        if selector.select(timeout=min(left, 0.5)):
            chunk = os.read(proc.stdout.fileno(), 65536).decode(errors="replace")
            if not chunk:
                continue
            out += chunk
    return out


def quickstart(tmp_path: Path, name: str = "quickstart") -> tuple[Path, int]:
    """A copy of the quickstart on a free port: (directory, port)."""
    directory = tmp_path / name
    shutil.copytree(REPO / "examples" / "quickstart", directory, ignore=shutil.ignore_patterns(".*"))
    port = free_port()
    servers = directory / "model-servers.yaml"
    servers.write_text(servers.read_text().replace("port: 8080", f"port: {port}"))
    return directory, port


def start_up(directory: Path, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([str(VENV_BIN / "modelroute"), "up", str(directory), "--xds-port", "0",
                             "--admin-address", "127.0.0.1:0", "--log-level", "warning"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            cwd=cwd, start_new_session=True)


def post(port: int, path: str) -> dict:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=b"{}", method="POST",
                                 headers={"content-type": "application/json"})
    with opener.open(req, timeout=10) as resp:
        assert resp.status == 200
        return dict(json.loads(resp.read()))


def no_fetch_timeout(port: int) -> None:
    """The tests' fetch-timeout guard (tests/conftest.py) for the Envoy `up` started: served
    because the control plane answered, not because 15 s went by."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        assert fetch_timeouts_in_metrics(resp.read().decode()) == {}


def test_modelroute_up_prints_urls_serves_and_exits_cleanly_on_sigint(tmp_path: Path) -> None:
    directory = tmp_path / "quickstart"
    shutil.copytree(REPO / "examples" / "quickstart", directory, ignore=shutil.ignore_patterns(".*"))
    port = free_port()
    servers = directory / "model-servers.yaml"
    servers.write_text(servers.read_text().replace("port: 8080", f"port: {port}"))
    proc = subprocess.Popen([str(VENV_BIN / "modelroute"), "up", str(directory), "--xds-port", "0",
                             "--admin-address", "127.0.0.1:0", "--log-level", "warning"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            cwd=tmp_path, start_new_session=True)
    children: set[int] = set()
    try:
        out = read_until(proc, "Ctrl-C to stop", timeout=60)
        for url in (f"http://127.0.0.1:{port}/v1/models/llama-v1", f"http://127.0.0.1:{port}/v1/models/llama-v2"):
            assert url in out, out
        assert "default/llama" in out and "80%" in out and "20%" in out, out  # the route and its split
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/models/llama/infer", data=b"{}", method="POST",
                                     headers={"content-type": "application/json"})
        with opener.open(req, timeout=10) as resp:
            assert resp.status == 200
            assert json.loads(resp.read())["served_by"]["modelinfer"] in {"llama-v1", "llama-v2"}
        no_fetch_timeout(port)
        children = descendants(proc.pid)
        assert len(children) >= 4, f"expected Envoy and 3 replicas below modelroute, found {children}"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0
        deadline = time.monotonic() + 10
        while (left := {pid for pid in children if alive(pid)}) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not left, f"processes left after Ctrl-C: {sorted(left)}"
    finally:
        stop_process(proc)
        for pid in children:  # only if the test failed: never leave them running
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_kill_9_of_up_leaves_no_process_of_it_after_5s(tmp_path: Path) -> None:
    directory, port = quickstart(tmp_path)
    proc = start_up(directory, tmp_path)
    children: set[int] = set()
    try:
        read_until(proc, "Ctrl-C to stop", timeout=60)
        children = descendants(proc.pid)
        names = {Path(f"/proc/{pid}/comm").read_text().strip() for pid in children}
        assert {"envoy", "redis-server"} <= names and len(children) >= 5, names  # and 3 replicas
        proc.kill()
        proc.wait(timeout=10)
        deadline = time.monotonic() + 5
        while (left := {pid for pid in children if alive(pid)}) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not left, f"processes of the killed `up` still running after 5 s: {sorted(left)}"
    finally:
        stop_process(proc)
        for pid in children:  # only if the test failed: never leave them running
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_a_second_up_on_the_same_directory_or_port_fails_at_once_naming_the_holder(tmp_path: Path) -> None:
    directory, port = quickstart(tmp_path)
    first = start_up(directory, tmp_path)
    try:
        read_until(first, "Ctrl-C to stop", timeout=60)
        same_dir = subprocess.run([str(VENV_BIN / "modelroute"), "up", str(directory), "--xds-port", "0",
                                   "--admin-address", "127.0.0.1:0"],
                                  capture_output=True, text=True, timeout=20, cwd=tmp_path)
        assert same_dir.returncode == 1, same_dir
        assert f"is already served by process {first.pid} (modelroute up" in same_dir.stdout, same_dir.stdout
        other = tmp_path / "other"
        shutil.copytree(directory, other, ignore=shutil.ignore_patterns(".*"))  # same ports
        same_port = subprocess.run([str(VENV_BIN / "modelroute"), "up", str(other), "--xds-port", "0",
                                    "--admin-address", "127.0.0.1:0"],
                                   capture_output=True, text=True, timeout=30, cwd=tmp_path)
        assert same_port.returncode == 1, same_port
        envoy = next(pid for pid in descendants(first.pid) if Path(f"/proc/{pid}/comm").read_text().strip() == "envoy")
        assert f"port {port} (a ModelServer listener) is already in use by process {envoy} (envoy" in same_port.stdout
        assert f"started by process {first.pid}" in same_port.stdout, same_port.stdout
        # The refused ones wrote no run files; the first one was not disturbed.
        assert (directory / ".modelroute" / "lock").read_text().strip() == str(first.pid)
        assert not (other / ".modelroute" / "status.json").exists()
        assert post(port, "/v1/models/llama-v1/infer")["served_by"]["modelinfer"] == "llama-v1"
        first.send_signal(signal.SIGINT)
        assert first.wait(timeout=20) == 0
    finally:
        stop_process(first)


def test_a_fifo_named_yaml_is_ignored_with_a_warning_and_ctrl_c_still_works(tmp_path: Path) -> None:
    directory, port = quickstart(tmp_path)
    os.mkfifo(directory / "before.yaml")
    validate = subprocess.run([str(VENV_BIN / "modelroute"), "validate", "-f", str(directory)],
                              capture_output=True, text=True, timeout=30)
    assert validate.returncode == 0 and "6 objects valid" in validate.stdout, validate
    assert f"{directory / 'before.yaml'}: not a regular file (a FIFO); skipped" in validate.stderr, validate.stderr
    proc = start_up(directory, tmp_path)
    try:
        out = read_until(proc, "Ctrl-C to stop", timeout=60)
        assert f"is a FIFO, not a regular file; ignored: file={directory / 'before.yaml'}" in out, out
        os.mkfifo(directory / "after.yaml")
        route = directory / "route.yaml"
        route.write_text(route.read_text().replace("weight: 80", "weight: 0").replace("weight: 20", "weight: 100"))
        deadline = time.monotonic() + 5
        while {post(port, "/v1/models/llama/infer")["served_by"]["modelinfer"] for _ in range(10)} != {"llama-v2"}:
            assert time.monotonic() < deadline, "the edit (100% v2) was not served within 5 s"
            time.sleep(0.1)
        out += read_until(proc, str(directory / "after.yaml"), timeout=5)
        no_fetch_timeout(port)
        stopped = time.monotonic()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
        assert time.monotonic() - stopped < 5.0, f"Ctrl-C took {time.monotonic() - stopped:.1f}s"
    finally:
        stop_process(proc)
