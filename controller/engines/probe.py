"""What the model servers say about themselves → the endpoints the engine compiles
(issue 18). Sits between an endpoint source (the embedded replica runtime, the
Kubernetes EndpointSlices) and the control loop, in both modes.

- **LoRA adapters:** for a ModelInfer that declares adapters, each endpoint's loaded
  adapters come from its `GET /v1/models` (vLLM's answer lists the base model and the
  adapters, `parent` set on the latter). Until an endpoint has answered it has none (a
  request for an adapter never goes where it may not be served); a failed probe keeps
  what the last one said. A replica that unloads an adapter is out of that adapter's
  subset one poll (`interval`, 0.25 s) plus one push later.
- **Load:** for a ModelInfer behind a loadAware ModelServer, each endpoint's `GET
  /metrics` is polled and turned into EDS weights (`engine_load`).

Out of the request path: Envoy keeps routing with the last weights if this stops. An
endpoint change from the source is passed on at once (the replica runtime's drain waits
for Envoy to drop a withdrawn endpoint), with what is known about the endpoints; the
probe then runs at once for new endpoints. Only endpoints of ModelInfers that need it are
polled, so a world without adapters or loadAware servers costs nothing here.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from types import MappingProxyType

import aiohttp

from controller.engines.load import EngineLoad, parse_metrics, weights
from routing_engine.api.resources import ModelInfer, ModelServer, ObjectKey, Resource
from routing_engine.world import BackendEndpoint

log = logging.getLogger(__name__)

Endpoints = Mapping[ObjectKey, tuple[BackendEndpoint, ...]]
Address = tuple[str, int]
# GET http://address:port/path → body, or None when it failed.
Fetch = Callable[[Address, str], Awaitable[str | None]]
MODELS_PATH = "/v1/models"
METRICS_PATH = "/metrics"


@dataclass(frozen=True, slots=True)
class Needs:
    """What one ModelInfer's endpoints are polled for."""

    adapters: bool
    load: bool


def probe_input(obj: Resource) -> bool:
    """Whether `needs_of` reads `obj` (a ModelInfer, a load-aware ModelServer): the others
    can be left out of what it is handed."""
    return isinstance(obj, ModelInfer) or (isinstance(obj, ModelServer) and obj.spec.load_balancing == "loadAware")


def needs_of(objects: Iterable[Resource]) -> dict[ObjectKey, Needs]:
    """ModelInfer → what to poll its endpoints for (absent: nothing)."""
    objects = list(objects)
    loaded = {o.spec.model_infer_ref.resolve(ModelInfer.KIND, o.metadata.namespace)
              for o in objects if isinstance(o, ModelServer) and o.spec.load_balancing == "loadAware"}
    found: dict[ObjectKey, Needs] = {}
    for o in objects:
        if isinstance(o, ModelInfer) and (o.spec.adapters or o.key in loaded):
            found[o.key] = Needs(adapters=bool(o.spec.adapters), load=o.key in loaded)
    return found


def adapters_of(body: str) -> tuple[str, ...] | None:
    """The adapters in an OpenAI/vLLM `/v1/models` answer (entries with a `parent`)."""
    try:
        data = json.loads(body).get("data")
    except (ValueError, AttributeError):
        return None
    if not isinstance(data, list):
        return None
    return tuple(sorted({str(m["id"]) for m in data if isinstance(m, dict) and m.get("parent") and "id" in m}))


class HttpFetch:
    """One aiohttp session for every probe, with a short timeout."""

    def __init__(self, timeout: float) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def __call__(self, address: Address, path: str) -> str | None:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        host = f"[{address[0]}]" if ":" in address[0] else address[0]
        try:
            async with self._session.get(f"http://{host}:{address[1]}{path}") as response:
                return await response.text() if response.status == 200 else None
        except (aiohttp.ClientError, asyncio.TimeoutError, UnicodeDecodeError):
            return None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


class EngineProbe:
    """`set_objects` / `set_endpoints` in, `publish(endpoints)` out; `run()` polls."""

    def __init__(self, publish: Callable[[Endpoints], None], *, interval: float = 0.25, timeout: float = 1.0,
                 fetch: Fetch | None = None) -> None:
        self._publish = publish
        self.interval = interval
        self._own_fetch: HttpFetch | None = None
        if fetch is None:
            fetch = self._own_fetch = HttpFetch(timeout)
        self._fetch: Fetch = fetch
        self._objects: tuple[Resource, ...] | None = None
        self._needs: dict[ObjectKey, Needs] = {}
        self._raw: Endpoints = MappingProxyType({})
        self._adapters: dict[Address, tuple[str, ...]] = {}
        self._loads: dict[Address, EngineLoad] = {}
        self._weights: dict[Address, int] = {}
        self._published: Endpoints | None = None
        self._wake = asyncio.Event()

    # --- inputs ------------------------------------------------------------------------

    def set_objects(self, objects: Sequence[Resource]) -> None:
        """An edit elsewhere hands the very same objects again (compared by identity
        first: cheap at 10,000 ModelInfers, where `needs_of` is not)."""
        objects = tuple(objects)
        if objects == self._objects:
            return
        self._objects = objects
        needs = needs_of(objects)
        if needs != self._needs:
            self._needs = needs
            self._forget()
            self._wake.set()
            self._emit()

    def set_endpoints(self, endpoints: Endpoints) -> None:
        self._raw = MappingProxyType(dict(endpoints))
        self._forget()
        if any(self._unprobed(key) for key in self._needs):
            self._wake.set()
        self._emit()

    def _unprobed(self, key: ObjectKey) -> bool:
        return any(a not in self._adapters for a in self._addresses(key)) if self._needs[key].adapters else False

    def _addresses(self, key: ObjectKey) -> list[Address]:
        return [(e.address, e.port) for e in self._raw.get(key, ()) if e.port is not None]

    def _forget(self) -> None:
        """Drop what is known of endpoints no longer polled (a replica gone, a port reused)."""
        polled = {a for key in self._needs for a in self._addresses(key)}
        for known in (self._adapters, self._loads, self._weights):
            for address in [a for a in known if a not in polled]:
                del known[address]

    # --- output ------------------------------------------------------------------------

    def endpoints(self) -> Endpoints:
        """The source's endpoints with what the probes found."""
        out: dict[ObjectKey, tuple[BackendEndpoint, ...]] = {}
        for key, found in self._raw.items():
            needs = self._needs.get(key)
            if needs is None:
                out[key] = found
                continue
            out[key] = tuple(
                replace(e, adapters=self._adapters.get((e.address, e.port)) if needs.adapters else e.adapters,
                        weight=self._weights.get((e.address, e.port)) if needs.load else e.weight)
                if e.port is not None else e
                for e in found)
        return MappingProxyType(out)

    def _emit(self) -> None:
        current = self.endpoints()
        if self._published is not None and dict(current) == dict(self._published):
            return
        self._published = current
        self._publish(current)

    # --- polling -----------------------------------------------------------------------

    async def run(self) -> None:
        while True:
            await self.poll()
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), self.interval)
            except asyncio.TimeoutError:
                pass

    async def poll(self) -> None:
        """One round: every endpoint that needs it, concurrently; then publish."""
        jobs: list[Awaitable[None]] = []
        for key, needs in list(self._needs.items()):
            for address in self._addresses(key):
                if needs.adapters:
                    jobs.append(self._probe_adapters(address))
                if needs.load:
                    jobs.append(self._probe_load(address))
        if jobs:
            await asyncio.gather(*jobs)
            self._reweigh()
            self._emit()

    async def _probe_adapters(self, address: Address) -> None:
        body = await self._fetch(address, MODELS_PATH)
        found = adapters_of(body) if body is not None else None
        if found is not None:
            before = self._adapters.get(address)
            if before is not None and before != found:
                log.info("endpoint adapters changed: endpoint=%s:%s adapters=%s", address[0], address[1],
                         ",".join(found) or "-", extra={"endpoint": f"{address[0]}:{address[1]}"})
            self._adapters[address] = found

    async def _probe_load(self, address: Address) -> None:
        body = await self._fetch(address, METRICS_PATH)
        if body is not None:
            now = asyncio.get_running_loop().time()
            self._loads[address] = self._loads.get(address, EngineLoad()).updated(parse_metrics(body), now)

    def _reweigh(self) -> None:
        weighted: dict[Address, int] = {}
        for key, needs in self._needs.items():
            if not needs.load:
                continue
            addresses = self._addresses(key)
            found = weights({a: self._loads[a] for a in addresses if a in self._loads})
            if found is not None:
                top = max(found.values())
                weighted.update({a: found.get(a, top) for a in addresses})
        if weighted != self._weights:
            log.debug("load-aware weights: %s", " ".join(f"{a[0]}:{a[1]}={w}" for a, w in sorted(weighted.items()))
                     or "all equal", extra={"weights": {f"{a[0]}:{a[1]}": w for a, w in weighted.items()}})
        self._weights = weighted

    async def close(self) -> None:
        if self._own_fetch is not None:
            await self._own_fetch.close()
