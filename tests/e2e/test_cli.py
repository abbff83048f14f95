"""Issue #5: `modelroute up DIR` as a user runs it — prints the table of ModelServers
(with their URLs) and ModelRoutes, serves a request through Envoy, and on Ctrl-C
(SIGINT) exits cleanly leaving no child process (Envoy, replicas) behind."""

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

from tests.support import REPO, VENV_BIN, free_port, stop_process

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


def test_modelroute_up_prints_urls_serves_and_exits_cleanly_on_sigint(tmp_path: Path) -> None:
    directory = tmp_path / "quickstart"
    shutil.copytree(REPO / "examples" / "quickstart", directory, ignore=shutil.ignore_patterns(".*"))
    port = free_port()
    servers = directory / "model-servers.yaml"
    servers.write_text(servers.read_text().replace("port: 8080", f"port: {port}"))
    proc = subprocess.Popen([str(VENV_BIN / "modelroute"), "up", str(directory), "--xds-port", "0", "--log-level", "warning"],
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
