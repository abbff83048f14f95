"""Local replicas as real processes: start, readiness, crash restart, scaling, stop."""

from __future__ import annotations

import asyncio
import functools
import json
import os
import signal
import sys
import time
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from controller.local.replicas import Endpoints, ReplicaRuntime, http_ok
from kit.backoff import Backoff, RestartBackoff
from routing_engine.api.resources import ModelInfer, ObjectKey
from routing_engine.world import BackendEndpoint

A = ObjectKey("ModelInfer", "default", "llama")
B = ObjectKey("ModelInfer", "team", "mistral")


def infer(key: ObjectKey, replicas: int, model: str = "llama-7b", adapters: Sequence[str] = ()) -> ModelInfer:
    spec: dict[str, object] = {"modelRef": {"name": model}, "replicas": replicas}
    if adapters:
        spec["adapters"] = [{"name": a, "uri": f"s3://adapters/{a}"} for a in adapters]
    return ModelInfer.model_validate({
        "apiVersion": "workload.matrixinfer.ai/v1alpha1", "kind": "ModelInfer",
        "metadata": {"name": key.name, "namespace": key.namespace}, "spec": spec})


class Recorder:
    """Collects what the runtime publishes."""

    def __init__(self) -> None:
        self.published: list[Endpoints] = []

    def __call__(self, endpoints: Endpoints) -> None:
        self.published.append(endpoints)

    @property
    def last(self) -> Endpoints:
        return self.published[-1] if self.published else {}

    async def until(self, predicate: Callable[[Endpoints], bool], what: str, timeout: float = 15.0) -> Endpoints:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self.last):
                return self.last
            await asyncio.sleep(0.02)
        raise AssertionError(f"timed out waiting for {what}; last published: {self.last}")


def healthy(eps: Endpoints, key: ObjectKey, n: int) -> bool:
    return len(eps.get(key, ())) == n and all(e.healthy for e in eps[key])


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def served_by(port: int | None) -> dict[str, object]:
    assert port is not None
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/models/x/infer", data=b"{}", method="POST")
    with opener.open(req, timeout=5) as resp:
        return dict(json.loads(resp.read())["served_by"])


async def test_replicas_start_ready_and_identify_themselves(tmp_path: Path) -> None:
    rec = Recorder()
    rt = ReplicaRuntime(on_endpoints=rec, log_dir=tmp_path)
    try:
        await rt.reconcile([infer(A, 2), infer(B, 1, model="mistral")])
        # Known at once, but no endpoint before the first ready probe: a starting replica
        # listed as unhealthy would still count in Envoy's panic threshold.
        assert rec.published[0] == {A: (), B: ()}
        eps = await rec.until(lambda e: healthy(e, A, 2) and healthy(e, B, 1), "3 ready replicas")
        assert [served_by(e.port)["replica"] for e in eps[A]] == [0, 1]
        assert served_by(eps[B][0].port) == {"modelinfer": "mistral", "namespace": "team", "replica": 0,
                                            "model": "mistral", "engine": "mock"}
        assert rt.status()[A].ready == 2 and rt.status()[A].desired == 2
        assert (tmp_path / "default.llama-0.log").exists()
    finally:
        await rt.close()
    assert rec.last == {}


def loaded_adapters(port: int | None) -> dict[str, str]:
    assert port is not None
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://127.0.0.1:{port}/v1/models", timeout=5) as resp:
        return {m["id"]: m["root"] for m in json.loads(resp.read())["data"] if m["parent"]}


async def test_replicas_load_declared_adapters_and_follow_a_changed_list_without_restarting() -> None:
    rec = Recorder()
    rt = ReplicaRuntime(on_endpoints=rec)
    try:
        await rt.reconcile([infer(A, 2, adapters=["sql", "chat"])])
        eps = await rec.until(lambda e: healthy(e, A, 2), "2 ready replicas")
        assert [loaded_adapters(e.port) for e in eps[A]] == [{"sql": "s3://adapters/sql", "chat": "s3://adapters/chat"}] * 2
        pids = [rt.pid_of(A, 0), rt.pid_of(A, 1)]
        await rt.reconcile([infer(A, 2, adapters=["sql", "summary"])])
        deadline = time.monotonic() + 5
        while any(set(loaded_adapters(e.port)) != {"sql", "summary"} for e in eps[A]):
            assert time.monotonic() < deadline, [loaded_adapters(e.port) for e in eps[A]]
            await asyncio.sleep(0.05)
        assert [rt.pid_of(A, 0), rt.pid_of(A, 1)] == pids  # loaded and unloaded in place
        os.kill(pids[0] or 0, signal.SIGKILL)  # a restart starts with the new list
        after = await rec.until(lambda e: healthy(e, A, 2) and rt.pid_of(A, 0) not in pids, "replica restarted")
        assert set(loaded_adapters(after[A][0].port)) == {"sql", "summary"}
    finally:
        await rt.close()


async def test_crashed_replica_is_seen_fast_and_restarted(tmp_path: Path) -> None:
    rec = Recorder()
    rt = ReplicaRuntime(on_endpoints=rec)
    try:
        await rt.reconcile([infer(A, 2)])
        before = await rec.until(lambda e: healthy(e, A, 2), "2 ready replicas")
        pid = rt.pid_of(A, 1)
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        killed_at = time.monotonic()
        await rec.until(lambda e: len(e[A]) == 1, "crashed replica withdrawn", timeout=1.0)
        assert time.monotonic() - killed_at < 1.0
        after = await rec.until(lambda e: healthy(e, A, 2), "replica restarted")
        assert after[A][0] == before[A][0]  # the healthy neighbour was not touched
        assert rt.status()[A].restarts == 1
        assert served_by(after[A][1].port)["replica"] == 1
    finally:
        await rt.close()


async def test_scale_down_delete_and_model_change(tmp_path: Path) -> None:
    rec = Recorder()
    rt = ReplicaRuntime(on_endpoints=rec)
    try:
        await rt.reconcile([infer(A, 3), infer(B, 1)])
        await rec.until(lambda e: healthy(e, A, 3) and healthy(e, B, 1), "4 ready replicas")
        doomed = [rt.pid_of(A, 1), rt.pid_of(A, 2), rt.pid_of(B, 0)]
        kept = rt.pid_of(A, 0)
        await rt.reconcile([infer(A, 1)])
        assert set(rec.last) == {A} and len(rec.last[A]) == 1  # withdrawn at once
        deadline = time.monotonic() + 10  # stopped in the background (after the drain)
        while any(alive(p) for p in doomed if p) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert not any(alive(p) for p in doomed if p)
        assert rt.pid_of(A, 0) == kept
        await rt.reconcile([infer(A, 1, model="llama-13b")])
        eps = await rec.until(lambda e: healthy(e, A, 1) and rt.pid_of(A, 0) != kept, "replaced replica")
        assert served_by(eps[A][0].port)["model"] == "llama-13b"
        assert kept is not None and not alive(kept)
    finally:
        await rt.close()


async def test_stop_infer_keeps_it_down_until_resumed() -> None:
    rec = Recorder()
    rt = ReplicaRuntime(on_endpoints=rec)
    try:
        await rt.reconcile([infer(A, 2), infer(B, 1)])
        await rec.until(lambda e: healthy(e, A, 2) and healthy(e, B, 1), "ready replicas")
        await rt.stop_infer(A)
        assert rec.last[A] == () and healthy(rec.last, B, 1)
        await rt.reconcile([infer(A, 2), infer(B, 1)])  # a world change does not revive it
        await asyncio.sleep(0.3)
        assert rec.last[A] == () and rt.status()[A].desired == 0
        await rt.resume_infer(A)
        await rec.until(lambda e: healthy(e, A, 2), "resumed replicas")
    finally:
        await rt.close()


async def test_failing_command_is_restarted_with_backoff_and_never_ready() -> None:
    rec = Recorder()

    def crashing(mi: ModelInfer, index: int, port: int) -> list[str]:
        return [sys.executable, "-c", "import sys; sys.exit(3)"]

    rt = ReplicaRuntime(on_endpoints=rec, command=crashing,
                        backoff_factory=lambda: RestartBackoff(Backoff(initial=0.05, maximum=0.2)))
    try:
        await rt.reconcile([infer(A, 1)])
        deadline = time.monotonic() + 10
        while rt.status()[A].restarts < 3 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert rt.status()[A].restarts >= 3
        assert all(not e.healthy for p in rec.published for e in p.get(A, ()))
    finally:
        await rt.close()


async def test_probe_helper_rejects_non_200_and_closed_ports() -> None:
    from tests.support import free_port

    assert not await http_ok(free_port(), timeout=0.5)

    async def answer(status: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readline()
        writer.write(b"HTTP/1.1 " + status + b"\r\ncontent-length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    for status, expected in ((b"503 Service Unavailable", False), (b"200 OK", True)):
        server = await asyncio.start_server(functools.partial(answer, status), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            assert await http_ok(port, timeout=2) is expected
        finally:
            server.close()
            await server.wait_closed()


async def test_unhealthy_replica_is_withdrawn_without_a_restart() -> None:
    rec = Recorder()
    rt = ReplicaRuntime(on_endpoints=rec, probe_interval=0.1)
    try:
        await rt.reconcile([infer(A, 1)])
        eps = await rec.until(lambda e: healthy(e, A, 1), "ready replica")
        port, pid = eps[A][0].port, rt.pid_of(A, 0)

        def behave(**changes: object) -> None:
            opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
            req = urllib.request.Request(f"http://127.0.0.1:{port}/_mock/behaviour", method="POST",
                                         data=json.dumps(changes).encode())
            opener.open(req, timeout=5).close()

        behave(healthy=False)
        await rec.until(lambda e: len(e[A]) == 1 and not e[A][0].healthy, "replica marked unhealthy", timeout=3)
        behave(healthy=True)
        await rec.until(lambda e: healthy(e, A, 1), "replica healthy again", timeout=3)
        assert rt.pid_of(A, 0) == pid and rt.status()[A].restarts == 0
    finally:
        await rt.close()


async def test_missing_binary_is_retried_not_fatal(caplog: pytest.LogCaptureFixture) -> None:
    rec = Recorder()
    def missing(mi: ModelInfer, index: int, port: int) -> list[str]:
        return ["/nonexistent/engine"]

    rt = ReplicaRuntime(on_endpoints=rec, command=missing, backoff_factory=lambda: RestartBackoff(Backoff(initial=0.02, maximum=0.05)))
    try:
        await rt.reconcile([infer(A, 1)])
        deadline = time.monotonic() + 5
        while rt.status()[A].restarts < 3 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert rt.status()[A].restarts >= 3
        assert "replica could not start: modelinfer=default/llama#0" in caplog.text
        assert "background task crashed" not in caplog.text
    finally:
        await rt.close()


async def test_scale_down_withdraws_then_drains_then_stops() -> None:
    rec = Recorder()
    seen: list[tuple[tuple[int | None, ...], tuple[int | None, ...], bool]] = []
    pids: dict[int | None, int | None] = {}

    async def drain(endpoints: Sequence[BackendEndpoint]) -> None:
        # What Envoy was told last, and whether the process still runs, when the drain starts.
        published = tuple(e.port for e in rec.last.get(A, ()))
        seen.append((tuple(e.port for e in endpoints), published, all(alive(pids[e.port] or 0) for e in endpoints)))
        await asyncio.sleep(0.3)  # Envoy's ACK takes a moment: the replica must still be running

    rt = ReplicaRuntime(on_endpoints=rec, drain=drain)
    try:
        await rt.reconcile([infer(A, 3)])
        eps = await rec.until(lambda e: healthy(e, A, 3), "3 ready replicas")
        pids.update({e.port: rt.pid_of(A, i) for i, e in enumerate(eps[A])})
        doomed = [rt.pid_of(A, 1), rt.pid_of(A, 2)]
        await rt.reconcile([infer(A, 1)])
        await asyncio.sleep(0.1)
        assert all(alive(p) for p in doomed if p)  # still draining
        deadline = time.monotonic() + 10
        while any(alive(p) for p in doomed if p) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert not any(alive(p) for p in doomed if p)
        kept = eps[A][0].port
        assert sorted(seen) == sorted([((eps[A][1].port,), (kept,), True), ((eps[A][2].port,), (kept,), True)])
    finally:
        await rt.close()


async def test_a_replica_unready_too_long_is_drained_and_restarted() -> None:
    rec = Recorder()
    drained: list[tuple[int | None, ...]] = []

    async def drain(endpoints: Sequence[BackendEndpoint]) -> None:
        drained.append(tuple(e.port for e in endpoints))

    rt = ReplicaRuntime(on_endpoints=rec, probe_interval=0.1, unready_restart_after=1.0, drain=drain)
    try:
        await rt.reconcile([infer(A, 1)])
        eps = await rec.until(lambda e: healthy(e, A, 1), "ready replica")
        port, pid = eps[A][0].port, rt.pid_of(A, 0)
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        opener.open(urllib.request.Request(f"http://127.0.0.1:{port}/_mock/behaviour", method="POST",
                                           data=json.dumps({"healthy": False}).encode()), timeout=5).close()
        await rec.until(lambda e: e[A] and not e[A][0].healthy, "marked unhealthy", timeout=3)
        await rec.until(lambda e: e[A] == (), "withdrawn before the restart", timeout=5)
        after = await rec.until(lambda e: healthy(e, A, 1) and rt.pid_of(A, 0) not in (None, pid), "restarted")
        assert drained == [(port,)] and rt.status()[A].restarts == 1 and after[A][0].port != port
        assert pid is not None and not alive(pid)
    finally:
        await rt.close()


def slow_start(delay: float) -> Callable[[ModelInfer, int, int], list[str]]:
    """The mock engine, started after `delay` seconds of loading (as a real engine loads
    its weights before it answers its health probe)."""
    from controller.local.replicas import mock_engine_command

    def command(mi: ModelInfer, index: int, port: int) -> list[str]:
        argv = mock_engine_command(mi, index, port)
        loader = (f"import runpy, sys, time; time.sleep({delay}); sys.argv = ['mock_engine', *sys.argv[2:]]; "
                  "runpy.run_module('controller.engines.mock_engine', run_name='__main__')")
        return [sys.executable, "-c", loader, "--", *argv[3:]]  # (argv: python -m module ...)
    return command


async def test_a_loading_replica_is_not_restarted_by_the_liveness_rule_only_past_its_startup_timeout() -> None:
    rec = Recorder()
    rt = ReplicaRuntime(on_endpoints=rec, command=slow_start(1.5), probe_interval=0.1, unready_restart_after=0.5,
                        startup_timeout=30.0)
    try:
        await rt.reconcile([infer(A, 1)])
        await rec.until(lambda e: healthy(e, A, 1), "ready after loading for 1.5 s", timeout=10)
        assert rt.status()[A].restarts == 0  # 1.5 s unready while loading is not 0.5 s unready after ready
    finally:
        await rt.close()
    rec = Recorder()
    rt = ReplicaRuntime(on_endpoints=rec, command=slow_start(60), probe_interval=0.1, unready_restart_after=0.5,
                        startup_timeout=1.0)
    try:
        await rt.reconcile([infer(A, 1)])
        deadline = time.monotonic() + 10
        while rt.status()[A].restarts < 1 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert rt.status()[A].restarts >= 1  # never ready within its startup timeout: restarted
    finally:
        await rt.close()
