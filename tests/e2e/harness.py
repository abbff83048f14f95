"""What the end-to-end tests share: manifests with free ports written into a temp dir,
one running `Embedded` (real Envoy, real replicas) per module, a small HTTP client that
says which ModelInfer served each request, and bounded waits.

Every Embedded is stopped in a `finally`, and the harness then checks that no child
process of the test run is left behind.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from modelroute.embedded import Embedded, EmbeddedOptions
from routing_engine.api.resources import ObjectKey

NETWORKING = "networking.matrixinfer.ai/v1alpha1"
WORKLOAD = "workload.matrixinfer.ai/v1alpha1"


# --- manifests ----------------------------------------------------------------------


def infer(name: str, replicas: int = 1) -> dict[str, Any]:
    return {"apiVersion": WORKLOAD, "kind": "ModelInfer", "metadata": {"name": name},
            "spec": {"modelRef": {"name": "llama"}, "replicas": replicas}}


def server(name: str, *, port: int, path: str, infer_name: str | None = None, **spec: Any) -> dict[str, Any]:
    """A ModelServer; extra keyword arguments are spec fields (`routing` is merged)."""
    routing = {"path": path, **spec.pop("routing", {})}
    return {"apiVersion": NETWORKING, "kind": "ModelServer", "metadata": {"name": name},
            "spec": {"modelInferRef": {"name": infer_name or name}, "service": {"port": port},
                     "routing": routing, **spec}}


def route(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": NETWORKING, "kind": "ModelRoute", "metadata": {"name": name}, "spec": spec}


def dest(server_name: str, weight: int | None = None, **extra: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {"destination": {"modelServerRef": {"name": server_name}}, **extra}
    if weight is not None:
        entry["weight"] = weight
    return entry


def secret(name: str, **string_data: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "stringData": string_data}


def infer_key(name: str) -> ObjectKey:
    return ObjectKey("ModelInfer", "default", name)


def write_file(path: Path, text: str) -> float:
    """Atomic write (hidden temp file + rename, which the provider ignores until the
    rename); returns `time.monotonic()` once the rename is done."""
    tmp = path.parent / f".{path.name}.tmp"
    tmp.write_text(text)
    os.replace(tmp, path)
    return time.monotonic()


def write_manifests(path: Path, docs: list[dict[str, Any]]) -> float:
    return write_file(path, yaml.safe_dump_all(docs, sort_keys=False))


# --- processes ----------------------------------------------------------------------


def child_pids() -> set[int]:
    """Live (non-zombie) direct children of this test process."""
    me = str(os.getpid())
    found: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[1] == me and fields[0] != "Z":
            found.add(int(entry.name))
    return found


@asynccontextmanager
async def running(directory: Path, *, ready_timeout: float = 45.0, **options: Any) -> AsyncIterator[Embedded]:
    """The whole product serving `directory`, ready (replicas up, config ACKed).
    `options` are further `EmbeddedOptions` (e.g. `delta=True`)."""
    before = child_pids()
    app = Embedded(EmbeddedOptions(directory=directory, xds_port=0, privileged_port_offset=0, **options))
    try:
        await app.start(timeout=30)
        await app.wait_ready(timeout=ready_timeout)
        yield app
    finally:
        await app.stop()
    leaked = child_pids() - before
    assert not leaked, f"Embedded.stop() left child processes: {sorted(leaked)}"


# --- HTTP ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    status: int
    headers: Mapping[str, str]
    body: Any  # parsed JSON, else text
    elapsed: float

    @property
    def served_by(self) -> str | None:
        """The ModelInfer that answered (from the mock engine's JSON), or None."""
        if isinstance(self.body, dict) and isinstance(self.body.get("served_by"), dict):
            return str(self.body["served_by"]["modelinfer"])
        return None

    @property
    def replica(self) -> int | None:
        """The index of the replica that answered, or None."""
        if isinstance(self.body, dict) and isinstance(self.body.get("served_by"), dict):
            return int(self.body["served_by"]["replica"])
        return None


class Client:
    """aiohttp against one Envoy port; `trust_env=False` so no proxy is ever used."""

    def __init__(self, port: int, *, scheme: str = "http", ssl_context: ssl.SSLContext | None = None,
                 limit: int = 50) -> None:
        self.base = f"{scheme}://127.0.0.1:{port}"
        self._ssl = ssl_context
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=limit, ssl=ssl_context or True),
                                              trust_env=False)

    async def close(self) -> None:
        await self._session.close()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def request(self, method: str, path: str, *, json: Any = None, headers: Mapping[str, str] | None = None,
                      timeout: float = 10.0) -> Reply:
        started = time.monotonic()
        async with self._session.request(method, self.base + path, json=json, headers=dict(headers or {}),
                                         timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
            text = await resp.text()
            try:
                body: Any = await resp.json(content_type=None) if text else None
            except ValueError:
                body = text
            headers = {k.lower(): v for k, v in resp.headers.items()}  # names lower-cased
            return Reply(resp.status, headers, body, time.monotonic() - started)

    async def post(self, path: str, json: Any = None, **kwargs: Any) -> Reply:
        return await self.request("POST", path, json={} if json is None else json, **kwargs)

    async def get(self, path: str, **kwargs: Any) -> Reply:
        return await self.request("GET", path, **kwargs)


class KeepAlive:
    """One HTTP/1.1 connection kept open across requests (what a client's connection pool
    does), so a test can tell which listener generation answers: Envoy hands a connection
    to the listener that accepted it until that listener has drained."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def __aenter__(self) -> KeepAlive:
        self._reader, self._writer = await asyncio.open_connection("127.0.0.1", self.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._writer is not None:
            self._writer.close()

    async def post(self, path: str, headers: Mapping[str, str] | None = None, timeout: float = 5.0) -> int:
        """The status of one POST on this connection; raises ConnectionError if Envoy
        closed it (so the answer could only have come from a new connection)."""
        if self._reader is None or self._writer is None:
            raise ConnectionError("Envoy closed this connection")
        lines = [f"POST {path} HTTP/1.1", f"Host: 127.0.0.1:{self.port}", "Content-Type: application/json",
                 "Content-Length: 2", *(f"{k}: {v}" for k, v in (headers or {}).items())]
        self._writer.write(("\r\n".join(lines) + "\r\n\r\n{}").encode())
        await self._writer.drain()
        try:
            head = await asyncio.wait_for(self._reader.readuntil(b"\r\n\r\n"), timeout)
        except asyncio.IncompleteReadError as err:
            raise ConnectionError("Envoy closed this connection") from err
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        fields = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines if h)}
        if fields.get("transfer-encoding") == "chunked":
            while (size := int((await self._reader.readline()).strip() or b"0", 16)) > 0:
                await self._reader.readexactly(size + 2)
            await self._reader.readline()
        else:
            await self._reader.readexactly(int(fields.get("content-length", "0")))
        if fields.get("connection") == "close":
            self._writer.close()
            self._reader = None
        return int(status_line.split()[1])


async def wait_for(check: Callable[[], Awaitable[bool]], *, timeout: float, what: str,
                   interval: float = 0.05) -> float:
    """Poll `check` until it is true; return the seconds it took; fail naming `what`."""
    started = time.monotonic()
    while True:
        try:
            if await check():
                return time.monotonic() - started
        except (aiohttp.ClientError, asyncio.TimeoutError):
            pass
        if time.monotonic() - started > timeout:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


async def served_by(client: Client, path: str, *, n: int, concurrency: int = 20, **kwargs: Any) -> list[Reply]:
    """`n` POSTs to `path`, at most `concurrency` in flight."""
    gate = asyncio.Semaphore(concurrency)

    async def one() -> Reply:
        async with gate:
            return await client.post(path, **kwargs)

    return list(await asyncio.gather(*(one() for _ in range(n))))


# --- load -----------------------------------------------------------------------

RATE = 50  # requests per second of a SteadyLoad


@dataclass
class Sample:
    sent: float
    done: float
    status: int | None
    served_by: str | None
    replica: int | None = None
    error: str | None = None


@dataclass
class SteadyLoad:
    """Starts one request every 1/RATE s (not waiting for the previous one)."""

    client: Client
    path: str
    samples: list[Sample] = field(default_factory=list)

    async def _one(self) -> None:
        sent = time.monotonic()
        try:
            reply = await self.client.post(self.path, timeout=5)
            error = None if reply.status == 200 else f"{reply.body!s:.200} {reply.headers.get('x-envoy-upstream-host', '')}"
            self.samples.append(Sample(sent, time.monotonic(), reply.status, reply.served_by, reply.replica, error))
        except Exception as err:  # every failure counts, whatever its kind
            self.samples.append(Sample(sent, time.monotonic(), None, None, error=repr(err)))

    async def __aenter__(self) -> SteadyLoad:
        self._stop = asyncio.Event()
        self._inflight: set[asyncio.Task] = set()
        self._task = asyncio.create_task(self._run())
        return self

    async def _run(self) -> None:
        start = time.monotonic()
        n = 0
        while not self._stop.is_set():
            task = asyncio.create_task(self._one())
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)
            n += 1
            await asyncio.sleep(max(0.0, start + n / RATE - time.monotonic()))

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        await self._task
        if self._inflight:
            await asyncio.wait(self._inflight, timeout=10)

    def failures(self) -> list[Sample]:
        return [s for s in self.samples if s.status != 200]

    def first_from(self, target: str, after: float) -> float | None:
        done = [s.done for s in self.samples if s.served_by == target and s.done >= after]
        return min(done) if done else None
