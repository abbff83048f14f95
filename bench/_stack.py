"""The pieces the Envoy benchmarks share: the convergence/data-plane world (N ModelRoutes
over two mock-engine backends), mock engine processes, the prober process, and the
compiled config turned into a static bootstrap whose route tables come from somewhere
else (a file Envoy watches, a REST control plane), for the alternatives.

Every process started here is stopped by its PID, never by name."""

from __future__ import annotations

import asyncio
import copy
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from bench._common import BENCH, REPO
from routing_engine.api.resources import ModelInfer, ModelRoute, ModelServer, ObjectKey, Resource
from routing_engine.engine import compile as compile_world, static_bootstrap
from routing_engine.incremental import Translator
from routing_engine.translate.plugin import Plugin
from routing_engine.world import BackendEndpoint, Compiled, World
from modelroute.targets import GATEWAY, Placement, target_for_group
from tests.support import free_port, stop_process

NS = "bench"
HCM_TYPE = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
ROUTE_TYPE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


# ---- the world -----------------------------------------------------------------------

def infer_doc(name: str) -> dict[str, Any]:
    return {"apiVersion": "workload.matrixinfer.ai/v1alpha1", "kind": "ModelInfer",
            "metadata": {"name": f"infer-{name}", "namespace": NS}, "spec": {"modelRef": {"name": "m"}, "replicas": 1}}


def server_doc(name: str, port: int) -> dict[str, Any]:
    return {"apiVersion": "networking.matrixinfer.ai/v1alpha1", "kind": "ModelServer",
            "metadata": {"name": f"server-{name}", "namespace": NS},
            "spec": {"modelInferRef": {"name": f"infer-{name}"}, "service": {"port": port},
                     "routing": {"path": f"/v1/models/{name}", "timeout": "30s"}}}


def route_doc(i: int, *, to: str | None = None, split: tuple[int, int] | None = None) -> dict[str, Any]:
    """ModelRoute `route-i` at /v1/models/r{i}: one destination (`to`, default alternating
    blue/green) or an A/B `split` (blue weight, green weight)."""
    if split is not None:
        routes = [{"destination": {"modelServerRef": {"name": "server-blue"}}, "weight": split[0]},
                  {"destination": {"modelServerRef": {"name": "server-green"}}, "weight": split[1]}]
    else:
        routes = [{"destination": {"modelServerRef": {"name": f"server-{to or ('blue', 'green')[i % 2]}"}}}]
    return {"apiVersion": "networking.matrixinfer.ai/v1alpha1", "kind": "ModelRoute",
            "metadata": {"name": f"route-{i}", "namespace": NS}, "spec": {"path": f"/v1/models/r{i}", "routes": routes}}


def base_docs(n: int, port: int) -> list[dict[str, Any]]:
    """Backends + routes 1..n-1 (route 0 is the probe, written separately)."""
    return [infer_doc("blue"), infer_doc("green"), server_doc("blue", port), server_doc("green", port),
            *(route_doc(i) for i in range(1, n))]


_KINDS: dict[str, type[Resource]] = {"ModelInfer": ModelInfer, "ModelServer": ModelServer, "ModelRoute": ModelRoute}


def to_objects(docs: list[dict[str, Any]]) -> list[Resource]:
    return [_KINDS[d["kind"]].model_validate(d) for d in docs]


def probe_key() -> ObjectKey:
    return ObjectKey("ModelRoute", NS, "route-0")


def header_marker(color: str) -> str:
    """What the mock engine puts in `x-modelinfer` when `infer-<color>` served."""
    return f"{NS}/infer-{color}"


# ---- processes -----------------------------------------------------------------------

class MockEngine:
    """One mock-engine replica (controller/engines/mock_engine.py) on a free loopback port."""

    def __init__(self, color: str) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "controller.engines.mock_engine", "--port", str(self.port), "--model", "m",
             "--infer", f"infer-{color}", "--namespace", NS, "--max-running", "1024"],
            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mock engine {color} exited with {self.proc.returncode}")
            try:
                with _NO_PROXY.open(f"http://127.0.0.1:{self.port}/health", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"mock engine {color} not healthy after 30 s")

    def endpoint(self) -> tuple[BackendEndpoint, ...]:
        return (BackendEndpoint("127.0.0.1", self.port),)

    def stop(self) -> None:
        stop_process(self.proc)


@contextmanager
def mock_engines(*colors: str) -> Iterator[dict[str, MockEngine]]:
    started: dict[str, MockEngine] = {}
    try:
        for color in colors:
            started[color] = MockEngine(color)
        yield started
    finally:
        for engine in started.values():
            engine.stop()


class Prober:
    """bench/_prober.py in its own process: `await wait(marker)` → monotonic ns when a
    response with that `x-modelinfer` header arrived."""

    def __init__(self, url: str) -> None:
        self.proc = subprocess.Popen([sys.executable, str(BENCH / "_prober.py"), url, "x-modelinfer"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     start_new_session=True)
        assert self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != "ready":
            raise RuntimeError("prober did not start")

    def send(self, marker: str, timeout: float) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{marker} {timeout}\n")
        self.proc.stdin.flush()

    async def result(self) -> int:
        assert self.proc.stdout is not None
        line = (await asyncio.to_thread(self.proc.stdout.readline)).strip()
        if not line.isdigit():
            raise TimeoutError(f"probe: {line or 'prober exited'}")
        return int(line)

    async def wait(self, marker: str, timeout: float) -> int:
        self.send(marker, timeout)
        return await self.result()

    def stop(self) -> None:
        try:
            if self.proc.stdin is not None:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.close()
            self.proc.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            pass
        stop_process(self.proc)


# ---- compiled config as a static bootstrap with external route tables ----------------

class StaticCompiler:
    """Compiles worlds the way the control loop does (one reused Translator, gateway
    target on 127.0.0.1) for the alternatives, which get the same Envoy config, in one
    RouteConfiguration per listener unless `scoped` (Envoy's file-based config reloads a
    table per file, and that single table is the side-by-side the scoped tables beat;
    the data-plane benchmark measures what modelroute serves: scoped)."""

    def __init__(self, *, scoped: bool = False, plugins: Sequence[Plugin] | None = None) -> None:
        self.translator = Translator(plugins, scoped=scoped)
        self.target = target_for_group(GATEWAY, Placement(listen_address="127.0.0.1"))

    def compile(self, objects: list[Resource], endpoints: dict[ObjectKey, tuple[BackendEndpoint, ...]]) -> Compiled:
        return compile_world(World(tuple(objects), endpoints), self.target, translator=self.translator)


def split_routes(compiled: Compiled, admin_port: int,
                 rds_source: Callable[[str], dict[str, Any]]) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """(bootstrap, route tables by name): the static bootstrap of `compiled` with each
    listener's inline RouteConfiguration replaced by `rds` from `rds_source(name)`."""
    bootstrap = static_bootstrap(compiled.resources, admin_port=admin_port)
    tables: dict[str, dict[str, Any]] = {}
    for listener in bootstrap["static_resources"].get("listeners", []):
        for chain in listener.get("filter_chains", []):
            for network_filter in chain.get("filters", []):
                hcm = network_filter.get("typed_config", {})
                if hcm.get("@type") != HCM_TYPE or "route_config" not in hcm:
                    continue
                table = hcm.pop("route_config")
                tables[table["name"]] = table
                hcm["rds"] = {"route_config_name": table["name"], "config_source": rds_source(table["name"])}
    return bootstrap, tables


def route_tables(compiled: Compiled) -> dict[str, dict[str, Any]]:
    """Just the route tables of `compiled` (proto3 JSON, names as in the bootstrap)."""
    _, tables = split_routes(compiled, 9901, lambda name: {})
    return tables


def with_cluster(bootstrap: dict[str, Any], name: str, port: int) -> dict[str, Any]:
    out = copy.deepcopy(bootstrap)
    out["static_resources"].setdefault("clusters", []).append({
        "name": name, "type": "STATIC", "connect_timeout": "1s",
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {
            "socket_address": {"address": "127.0.0.1", "port_value": port}}}}]}]}})
    return out
