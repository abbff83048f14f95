"""A third source of the world needs no third run mode: an in-memory provider and status
sink, plugged into the application both modes are built from (`modelroute.app.App`),
serve a route through a real Envoy with endpoints the provider states; a new state moves
live traffic within a second, an error alone republishes the statuses, Envoy's verdict
reaches the sink, and the shared rate limit is enforced from the engine's output."""

from __future__ import annotations

import asyncio
import shutil
import sys
import textwrap
from collections.abc import Callable, Mapping
from pathlib import Path

import aiohttp
import pytest

from controller.kubernetes.client import KubeClient
from controller.local.envoy_process import EnvoyProcess
from controller.provider import ProviderState, Publish
from controller.ratelimit.redis_server import LocalRedis
from controller.ratelimit.service import ServiceOptions
from modelroute.app import App, AppOptions
from modelroute.canary_wiring import CanaryWiring
from modelroute.control_loop import SWITCH_INTERVAL_S
from modelroute.embedded import Embedded, EmbeddedOptions
from modelroute.kubernetes_mode import KubernetesMode, KubernetesOptions
from modelroute.targets import Placement
from routing_engine.api.errors import ManifestError
from routing_engine.api.loader import load_text
from routing_engine.api.resources import ObjectKey, Resource
from routing_engine.world import BackendEndpoint, Compiled, ObjectStatus
from tests.kubernetes.fakeapi import FakeKubeApi
from tests.kubernetes.helpers import mock_replica, served_by
from tests.support import free_port
from xds_server.bootstrap import render_dict

PROMISE = 1.0  # seconds from a published state to the first request it answers (SPEC 3.8)
INFER = ObjectKey("ModelInfer", "default", "m")
SERVER = ObjectKey("ModelServer", "default", "m")
ROUTE = ObjectKey("ModelRoute", "default", "r")
ROUTE_TO_BAD = """\
apiVersion: networking.matrixinfer.ai/v1alpha1
kind: ModelRoute
metadata: {name: r}
spec: {path: /v1/models/r, routes: [{destination: {modelServerRef: {name: bad}}}]}
"""


class MemoryProvider:
    """The smallest `Provider`: states handed in by the test."""

    def __init__(self, state: ProviderState) -> None:
        self.state = state
        self._publish: Publish | None = None

    async def start(self, publish: Publish) -> None:
        self._publish = publish
        await publish(self.state)

    async def close(self) -> None:
        self._publish = None

    async def set(self, state: ProviderState) -> None:
        self.state = state
        assert self._publish is not None
        await self._publish(state)


class MemoryStatus:
    """A status sink that keeps every publication."""

    def __init__(self) -> None:
        self.published: list[Mapping[ObjectKey, ObjectStatus]] = []

    def publish(self, compiled: Compiled, statuses: Mapping[ObjectKey, ObjectStatus]) -> None:
        self.published.append(dict(statuses))

    def refs_message(self, key: ObjectKey) -> str:
        """The last published ResolvedRefs message of `key` ("" before it has one)."""
        status = self.published[-1].get(key) if self.published else None
        found = [c.message for c in status.conditions if c.type == "ResolvedRefs"] if status is not None else []
        return found[0] if found else ""

    def programmed(self, key: ObjectKey) -> bool:
        status = self.published[-1].get(key) if self.published else None
        return status is not None and any(c.type == "Programmed" and c.status == "True" for c in status.conditions)


def objects(port: int, *, limited: bool = True) -> tuple[Resource, ...]:
    """ModelInfer and ModelServer `m`, and (`limited`) ModelServer `limited` with a shared
    rate limit (which needs the rate-limit service's Redis)."""
    found, errors = load_text(textwrap.dedent(f"""
        apiVersion: workload.matrixinfer.ai/v1alpha1
        kind: ModelInfer
        metadata: {{name: m}}
        spec: {{modelRef: {{name: m}}, replicas: 1}}
        ---
        apiVersion: networking.matrixinfer.ai/v1alpha1
        kind: ModelServer
        metadata: {{name: m}}
        spec:
          modelInferRef: {{name: m}}
          service: {{port: {port}}}
          routing: {{path: /v1/models/m}}
        ---
        apiVersion: networking.matrixinfer.ai/v1alpha1
        kind: ModelServer
        metadata: {{name: limited}}
        spec:
          modelInferRef: {{name: m}}
          service: {{port: {port}}}
          routing: {{path: /v1/models/limited}}
          rateLimit: {{enabled: true, requestsPerSecond: 2, global: true}}
        """), "memory.yaml")
    assert errors == []
    return tuple(o for o in found if limited or o.metadata.name != "limited")


async def _served_by_within(url: str, infer: str, since: float) -> None:
    loop = asyncio.get_running_loop()
    seen = None
    while loop.time() - since < PROMISE:
        seen = await served_by(url)
        if seen == infer:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{url} not served by {infer} within {PROMISE}s (last: {seen})")


async def _eventually(predicate: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


@pytest.mark.slow
async def test_an_in_memory_provider_plugged_into_the_app_serves_through_envoy(tmp_path: Path) -> None:
    gateway_port, one_port, two_port = free_port(), free_port(), free_port()
    replicas = [await mock_replica("one", one_port), await mock_replica("two", two_port)]
    binary = shutil.which("redis-server")
    assert binary, "redis-server is required (scripts/bootstrap.sh installs it)"
    redis = LocalRedis(tmp_path / "redis", binary)
    await redis.start()
    provider = MemoryProvider(ProviderState(objects(gateway_port),
                                            {INFER: (BackendEndpoint("127.0.0.1", one_port, True),)}))
    status = MemoryStatus()
    app = App(AppOptions(mode="memory", placement=Placement(listen_address="127.0.0.1"),
                         xds_address="127.0.0.1:0", ratelimit_address="127.0.0.1:0",
                         ratelimit=ServiceOptions(redis_url=redis.url)))
    app.plug(provider=provider, status=status, canary=CanaryWiring(tmp_path, app.loop))
    envoy: EnvoyProcess | None = None
    loop = asyncio.get_running_loop()
    sys.setswitchinterval(0.005)  # CPython's default (another test's App may have started first)
    try:
        await app.start(wait_compiled=10)
        assert app.plane is not None and app.ratelimit is not None and app.state is provider.state
        assert sys.getswitchinterval() == SWITCH_INTERVAL_S  # edits do not wait 5 ms turns behind threads
        envoy = EnvoyProcess(render_dict("gateway", node_id="gw", cluster="gateway", xds_port=app.plane.xds_port,
                                         admin_port=free_port(), ratelimit_port=app.ratelimit.port),
                             tmp_path, name="gateway", log_level="warning")
        await envoy.start()
        url = f"http://127.0.0.1:{gateway_port}/v1/models/m/infer"
        await _served_by_within(url, "default/one", loop.time() + 10)  # Envoy's start is not the promise

        # Envoy's verdict reaches the sink; the app is ready.
        await _eventually(lambda: status.programmed(SERVER), "Programmed=True in the sink")
        assert app.ready()

        # A new state moves live traffic: its endpoints are the world's.
        since = loop.time()
        await provider.set(ProviderState(provider.state.objects, {INFER: (BackendEndpoint("127.0.0.1", two_port, True),)}))
        await _served_by_within(url, "default/two", since)

        # An error alone changes no object, and still republishes the statuses; when it
        # names an object a route refers to, the route says that object is invalid, not
        # missing (the world's refused objects follow the provider's errors).
        with_route = (*provider.state.objects, *load_text(ROUTE_TO_BAD, "route.yaml")[0])
        await provider.set(ProviderState(with_route, provider.state.endpoints))
        await _eventually(lambda: status.refs_message(ROUTE).endswith("ModelServer default/bad not found"),
                          "the route's reference reported missing")
        await app.loop.status_settled(timeout=5)
        count = len(status.published)
        error = ManifestError(file="memory.yaml", index=3, kind="ModelServer", namespace="default", name="bad",
                              path="spec.routing.timeout", rule='"30" is not a duration (use 30s)')
        await provider.set(ProviderState(with_route, provider.state.endpoints, (error,)))
        await app.loop.status_settled(timeout=5)
        assert len(status.published) > count and app.state is not None and app.state.errors == (error,)
        await _eventually(lambda: status.refs_message(ROUTE).endswith(
            "ModelServer default/bad exists but is invalid (its own errors say why)"), "the reference reported invalid")

        # The shared limit (2/s, Redis) from the engine's output: the rate-limit service was
        # never configured by hand.
        codes = []
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3)) as session:
            for _ in range(8):
                async with session.post(url.replace("/m/", "/limited/"), json={}) as response:
                    codes.append(response.status)
        assert codes.count(200) <= 4 and 429 in codes, codes
    finally:
        if envoy is not None:
            await envoy.stop()
        await app.stop()
        await redis.stop()
        for proc in replicas:
            proc.terminate()
            await proc.wait()


async def test_both_run_modes_are_built_by_the_app(tmp_path: Path) -> None:
    """Embedded and Kubernetes mode are the same assembly with other parts plugged in."""
    embedded = Embedded(EmbeddedOptions(directory=tmp_path, xds_port=0, privileged_port_offset=0))
    fake = FakeKubeApi()
    await fake.start()
    try:
        async with KubeClient(fake.url, request_timeout=5.0) as api:
            cluster = KubernetesMode(api, KubernetesOptions(identity="cp-0", system_namespace="matrixinfer-system",
                                                            xds_host="127.0.0.1", xds_port=0))
    finally:
        await fake.stop()
    for mode in (embedded, cluster):
        assert isinstance(mode.app, App)
        assert mode.loop is mode.app.loop and mode.app.plugs.canary is mode.canary
    assert embedded.app.plugs.provider is embedded.provider and embedded.app.plugs.workloads is embedded.replicas
    assert cluster.app.plugs.provider is cluster.provider and cluster.app.plugs.workloads is cluster.cluster
    # One list and watch per kind: the workload controller subscribes to the provider's.
    workloads, informers = cluster.cluster.workloads, cluster.provider.informers
    assert (workloads.infers, workloads.models, workloads.policies) == (
        informers["ModelInfer"], informers["Model"], informers["AutoscalingPolicy"])
    assert (embedded.app.options.mode, cluster.app.options.mode) == ("embedded", "kubernetes")
