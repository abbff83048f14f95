"""Local ModelInfer runtime for embedded mode: each replica is a local process.

What Kubernetes does with a Deployment + readiness probe, done with child processes: for
every ModelInfer run `spec.replicas` processes (by default the mock engine) on free
loopback ports, probe `GET /health`, restart a crashed replica with exponential backoff,
and publish the replicas as `BackendEndpoint`s whenever they change. The wiring puts
that mapping into `World.endpoints`, so the engine turns it into EDS.

- **An endpoint from its first ready probe on.** A starting replica is not published:
  listed as UNHEALTHY it would still count in Envoy's panic threshold (below 50% healthy
  hosts Envoy routes to all of them), so scaling 1 → 3 would send traffic to processes
  that are not listening yet. A replica that was ready and fails its probe stays listed
  as UNHEALTHY (a blip must not reshuffle the others); one that was ready and stays
  unready for `unready_restart_after` seconds is restarted (a liveness rule). A replica
  that has not been ready yet is loading (a real engine loads its weights for minutes):
  it is restarted only when it is not ready `startup_timeout` seconds after its start
  (Kubernetes' startup probe, which holds the liveness probe back until it succeeds).
- **LoRA adapters** (issue 18): a replica starts with its ModelInfer's declared adapters
  (`--adapters`); when the declared list changes, running replicas load and unload the
  difference through the engine's runtime LoRA API (vLLM's `/v1/load_lora_adapter` and
  `/v1/unload_lora_adapter`) instead of restarting. What each replica has loaded is read
  back from it (`controller/engines/probe.py`), not assumed.
- **Drain before stop.** A replica that is scaled away, replaced, deleted or restarted
  for failing its probe is first withdrawn from the endpoints; the `drain` callback
  waits (bounded) until every Envoy has acknowledged the EDS update without it; only
  then does it get SIGTERM (the mock engine finishes its in-flight requests), SIGKILL
  after a grace. Stopping happens in the background, so a slow replica never holds up
  the next configuration change; `close()` waits for all of them.

Before: the provider state's ModelInfers (`apply`: embedded mode's workload runtime,
`modelroute.app.WorkloadRuntime`; or `reconcile`). After: the `on_endpoints` callback
(the application merges them into the world) and `ReplicaStatus` for the status view. Each replica has one
guarded supervisor task; processes die with the control plane (`child_preexec`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import sys
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import IO, Any

from controller.local.processes import child_preexec, terminate
from controller.provider import PartsFilter, ProviderState
from kit.tasks import cancel_and_wait, spawn
from kit.backoff import Backoff, RestartBackoff
from routing_engine.api.resources import ModelInfer, ObjectKey
from routing_engine.world import BackendEndpoint

log = logging.getLogger(__name__)

Endpoints = Mapping[ObjectKey, tuple[BackendEndpoint, ...]]
# (ModelInfer, replica index, port) → argv of the replica process.
CommandFactory = Callable[[ModelInfer, int, int], Sequence[str]]
# Waits (bounded) until no Envoy routes to these endpoints any more.
Drain = Callable[[Sequence[BackendEndpoint]], Awaitable[object]]
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[1])


def mock_engine_command(infer: ModelInfer, replica: int, port: int) -> list[str]:
    argv = [sys.executable, "-m", "controller.engines.mock_engine", "--port", str(port), "--model",
            infer.spec.model_ref.name, "--infer", infer.metadata.name, "--namespace",
            infer.metadata.namespace, "--replica", str(replica)]
    if infer.spec.adapters:
        argv += ["--adapters", ",".join(f"{a.name}={a.uri or a.name}" for a in infer.spec.adapters)]
    return argv


def _child_env() -> dict[str, str]:
    """The parent's environment, with this checkout importable (`-m controller.engines.mock_engine`
    must work whatever the working directory)."""
    paths = [_PACKAGE_ROOT, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def http_ok(port: int, path: str = "/health", *, timeout: float = 1.0) -> bool:
    """True when 127.0.0.1:port answers `GET path` with 200 (a probe, not a client)."""
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
                status_line = await reader.readline()
            finally:
                writer.close()
    except (OSError, asyncio.TimeoutError):
        return False
    parts = status_line.split()
    return len(parts) >= 2 and parts[1] == b"200"


async def http_post_json(port: int, path: str, body: dict[str, Any], *, timeout: float = 2.0) -> int | None:
    """POST a JSON body to 127.0.0.1:port; the status code, or None when unreachable."""
    data = json.dumps(body).encode()
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                writer.write(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                             f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode() + data)
                status_line = await reader.readline()
            finally:
                writer.close()
    except (OSError, asyncio.TimeoutError):
        return None
    parts = status_line.split()
    return int(parts[1]) if len(parts) >= 2 and parts[1].isdigit() else None


def _adapter_paths(infer: ModelInfer) -> dict[str, str]:
    return {a.name: a.uri or a.name for a in infer.spec.adapters}


@dataclass(frozen=True)
class ReplicaStatus:
    desired: int
    ready: int
    restarts: int


class _Replica:
    """One supervised process: start, probe, on exit wait the backoff and start again."""

    def __init__(self, runtime: "ReplicaRuntime", infer: ModelInfer, index: int) -> None:
        self.runtime, self.infer, self.index = runtime, infer, index
        self.name = f"{infer.metadata.namespace}/{infer.metadata.name}#{index}"
        self.port: int | None = None
        self.ready = False
        self.listed = False  # an endpoint: ready once since it started, not withdrawn
        self.restarts = 0
        self.proc: asyncio.subprocess.Process | None = None
        self.task = spawn(self._supervise(), name=f"replica {self.name}")

    async def _supervise(self) -> None:
        loop = asyncio.get_running_loop()
        backoff = self.runtime.backoff_factory()
        while True:
            self.port = _free_port()
            argv = self.runtime.command(self.infer, self.index, self.port)
            started = loop.time()
            try:
                with self.runtime.log_file(self.infer, self.index) as out:
                    self.proc = await asyncio.create_subprocess_exec(
                        *argv, stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=asyncio.subprocess.STDOUT,
                        env=_child_env(), start_new_session=True, preexec_fn=child_preexec())
            except OSError as err:  # e.g. a missing binary: retried like a crash, never a dead supervisor
                self.port = None
                self.restarts += 1
                delay = backoff.next_delay(0.0)
                log.error("replica could not start: modelinfer=%s error=%s restart_in=%.2fs", self.name, err, delay,
                          extra={"modelinfer": self.name})
                await asyncio.sleep(delay)
                continue
            log.info("replica started: modelinfer=%s pid=%s port=%s", self.name, self.proc.pid, self.port,
                     extra={"modelinfer": self.name, "pid": self.proc.pid})
            prober = spawn(self._probe(self.proc), name=f"probe {self.name}", endless=False)
            try:
                code = await self.proc.wait()
            finally:
                await cancel_and_wait(prober)
            self.ready = self.listed = False
            self.port = None
            self.runtime.changed()
            delay = backoff.next_delay(loop.time() - started)
            self.restarts += 1
            log.warning("replica exited, restarting: modelinfer=%s code=%s restart_in=%.2fs", self.name, code, delay,
                        extra={"modelinfer": self.name, "exit_code": code})
            await asyncio.sleep(delay)

    async def _probe(self, proc: asyncio.subprocess.Process) -> None:
        loop = asyncio.get_running_loop()
        failures = 0
        started = last_ready = loop.time()
        was_ready = False  # the liveness clock runs from the first ready probe on
        while True:
            assert self.port is not None
            ok = await http_ok(self.port, timeout=self.runtime.probe_timeout)
            failures = 0 if ok else failures + 1
            # One success makes a replica ready; two failures in a row take it out, so a
            # single slow probe does not flap the endpoint (a crash is seen by wait()).
            ready = ok or (self.ready and failures < 2)
            if ok:
                last_ready, was_ready = loop.time(), True
            if ready != self.ready:
                self.ready = ready
                self.listed = self.listed or ready
                log.info("replica %s: modelinfer=%s port=%s", "ready" if ready else "not ready", self.name,
                         self.port, extra={"modelinfer": self.name, "ready": ready})
                self.runtime.changed()
            unready_for = loop.time() - (last_ready if was_ready else started)
            limit = self.runtime.unready_restart_after if was_ready else self.runtime.startup_timeout
            if not ok and unready_for >= limit:
                log.warning("replica %s for %.0fs, restarting it: modelinfer=%s pid=%s",
                            "unready" if was_ready else "not ready since its start", limit, self.name, proc.pid,
                            extra={"modelinfer": self.name, "pid": proc.pid})
                await self.drain_and_stop(proc)  # the supervisor sees the exit and restarts it
                return
            await asyncio.sleep(self.runtime.probe_interval)

    async def drain_and_stop(self, proc: asyncio.subprocess.Process | None) -> None:
        """Withdraw the endpoint, wait until the Envoys dropped it, then stop the process."""
        endpoint = self.endpoint()
        self.ready = self.listed = False
        if endpoint is not None:
            self.runtime.changed()
            try:
                await self.runtime.drain([endpoint])
            except Exception:  # a broken drain must never leave the process running
                log.exception("drain failed, stopping anyway: modelinfer=%s", self.name,
                              extra={"modelinfer": self.name})
        if proc is not None:
            await terminate(proc, grace=self.runtime.stop_grace, label=f"replica {self.name}")

    async def apply_adapters(self, before: dict[str, str], after: dict[str, str]) -> None:
        """Load and unload what changed between two declared adapter lists (a replica
        that restarts meanwhile starts with `after` anyway)."""
        port = self.port
        if port is None:
            return
        for name in sorted(before.keys() - after.keys()):
            await http_post_json(port, "/v1/unload_lora_adapter", {"lora_name": name})
        for name in sorted(after.keys() - before.keys()):
            await http_post_json(port, "/v1/load_lora_adapter", {"lora_name": name, "lora_path": after[name]})
        log.info("replica adapters updated: modelinfer=%s adapters=%s", self.name, ",".join(sorted(after)) or "-",
                 extra={"modelinfer": self.name})

    async def retire(self) -> None:
        """Stop for good (scaled away, replaced or deleted; already out of the runtime's
        list): no more restarts, then drain and stop."""
        await cancel_and_wait(self.task)
        await self.drain_and_stop(self.proc)
        self.port = None

    def endpoint(self) -> BackendEndpoint | None:
        if self.port is None or not self.listed:
            return None
        return BackendEndpoint("127.0.0.1", self.port, healthy=self.ready)


async def _no_drain(endpoints: Sequence[BackendEndpoint]) -> None:
    return None


class ReplicaRuntime:
    """All local replicas. `reconcile(infers)` on every world change, `close()` at exit."""

    def __init__(self, *, on_endpoints: Callable[[Endpoints], Any], log_dir: Path | None = None,
                 command: CommandFactory = mock_engine_command, probe_interval: float = 0.2,
                 probe_timeout: float = 1.0, backoff_factory: Callable[[], RestartBackoff] = RestartBackoff,
                 drain: Drain = _no_drain, stop_grace: float = 3.0, unready_restart_after: float = 30.0,
                 startup_timeout: float = 600.0) -> None:
        self._on_endpoints = on_endpoints
        self.log_dir = log_dir
        self.command = command
        self.probe_interval = probe_interval
        self.probe_timeout = probe_timeout
        self.backoff_factory = backoff_factory
        self.drain = drain
        self.stop_grace = stop_grace
        self.unready_restart_after = unready_restart_after
        self.startup_timeout = startup_timeout
        self._infers: dict[ObjectKey, ModelInfer] = {}
        self._replicas: dict[ObjectKey, list[_Replica]] = {}
        self._pending: set[asyncio.Task[None]] = set()  # retirements and adapter updates: close() waits
        self._suspended: set[ObjectKey] = set()
        self._published: Endpoints | None = None
        self._lock = asyncio.Lock()
        self._infers_of = PartsFilter(lambda o: isinstance(o, ModelInfer))

    def log_file(self, infer: ModelInfer, index: int) -> IO[bytes]:
        if self.log_dir is None:
            return open(os.devnull, "wb")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        return open(self.log_dir / f"{infer.metadata.namespace}.{infer.metadata.name}-{index}.log", "ab")

    async def start(self) -> None:
        """Nothing runs before the first `apply`."""

    async def apply(self, state: ProviderState) -> None:
        """Run what the state's ModelInfers ask for."""
        # Picked per part of the state: an edit costs its part, not a pass over the world.
        await self.reconcile(o for o in self._infers_of(state.split()) if isinstance(o, ModelInfer))

    async def reconcile(self, infers: Iterable[ModelInfer]) -> None:
        """Make the running replicas match `infers`: start, scale, replace, delete.
        Replicas that go away are withdrawn at once and stopped in the background."""
        async with self._lock:
            wanted = {mi.key: mi for mi in infers}
            for key in [k for k in self._replicas if k not in wanted]:
                self._scale(key, None, 0)
                self._infers.pop(key, None)
                self._suspended.discard(key)
            for key, mi in wanted.items():
                old = self._infers.get(key)
                if old is not None and old.spec.model_ref != mi.spec.model_ref:
                    self._scale(key, old, 0)  # a different model: replace every replica
                elif old is not None and old.spec.adapters != mi.spec.adapters:
                    self._update_adapters(key, old, mi)
                self._infers[key] = mi
                self._scale(key, mi, 0 if key in self._suspended else mi.spec.replicas)
            self.changed()

    def _scale(self, key: ObjectKey, infer: ModelInfer | None, count: int) -> list[asyncio.Task[None]]:
        """Start or retire replicas; the retirements (drain, then stop) as tasks."""
        replicas = self._replicas.setdefault(key, [])
        if infer is not None:
            while len(replicas) < count:
                replicas.append(_Replica(self, infer, len(replicas)))
        doomed = replicas[count:]
        del replicas[count:]
        if infer is None:
            del self._replicas[key]
        if doomed:
            self.changed()  # withdrawn before anything stops
        tasks = []
        for replica in doomed:
            task = spawn(replica.retire(), name=f"retire {replica.name}", endless=False)
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)
            tasks.append(task)
        return tasks

    def _update_adapters(self, key: ObjectKey, old: ModelInfer, new: ModelInfer) -> None:
        before, after = _adapter_paths(old), _adapter_paths(new)
        for replica in self._replicas.get(key, ()):
            replica.infer = new  # a restart starts with the new list
            task = spawn(replica.apply_adapters(before, after), name=f"adapters {replica.name}", endless=False)
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    async def stop_infer(self, key: ObjectKey) -> None:
        """Stop every replica of one ModelInfer and keep them down (failover tests, demos)
        until `resume_infer` or its deletion; returns once they are stopped."""
        async with self._lock:
            self._suspended.add(key)
            stopping = self._scale(key, self._infers.get(key), 0)
            self.changed()
        await asyncio.gather(*stopping)

    async def resume_infer(self, key: ObjectKey) -> None:
        async with self._lock:
            self._suspended.discard(key)
            mi = self._infers.get(key)
            if mi is not None:
                self._scale(key, mi, mi.spec.replicas)
            self.changed()

    async def close(self) -> None:
        async with self._lock:
            for key in list(self._replicas):
                self._scale(key, None, 0)
            self._infers.clear()
            self.changed()
        while self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)

    def endpoints(self) -> Endpoints:
        return MappingProxyType({
            key: tuple(ep for r in self._replicas.get(key, ()) if (ep := r.endpoint()) is not None)
            for key in sorted(self._infers)})

    def status(self) -> Mapping[ObjectKey, ReplicaStatus]:
        return MappingProxyType({
            key: ReplicaStatus(desired=0 if key in self._suspended else mi.spec.replicas,
                               ready=sum(r.ready for r in self._replicas.get(key, ())),
                               restarts=sum(r.restarts for r in self._replicas.get(key, ())))
            for key, mi in sorted(self._infers.items())})

    def pid_of(self, key: ObjectKey, index: int) -> int | None:
        replicas = self._replicas.get(key, [])
        proc = replicas[index].proc if index < len(replicas) else None
        return proc.pid if proc is not None and proc.returncode is None else None

    def changed(self) -> None:
        """Publish the endpoints if they differ from what was last published."""
        current = self.endpoints()
        if self._published is not None and dict(current) == dict(self._published):
            return
        self._published = current
        try:
            self._on_endpoints(current)
        except Exception:
            log.exception("endpoints callback failed")
