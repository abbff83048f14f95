"""Convergence vs the alternatives: one ModelRoute edit → the first request served by the
new config through a real Envoy (SPEC 5), p50/p95/p99 over many edits, at N routes.

World: N ModelRoutes (`/v1/models/r{i}`) over two mock-engine backends, blue and green.
The probe route (route-0) flips between blue and green on every edit; a prober process
(bench/_prober.py, pinned to the last CPU) polls `POST /v1/models/r0/infer` through Envoy
and timestamps the first response whose `x-modelinfer` names the new backend. Clocks are
CLOCK_MONOTONIC in both processes. Edits are isolated (a quiet pause before each).

Systems:
- `modelroute (file edit)`: the product as `modelroute up` runs it (modelroute.embedded:
  files → FileProvider → ControlLoop → xDS → Envoy → mock replicas). The probe route lives
  in its own manifest, saved the safe way (the new file renamed over the old one, as
  editors' atomic save does); the clock starts when the rename returns.
- `modelroute (file edit in place)`: the same file truncated and written in place: the
  file provider waits until such a file is quiet for 0.4 s (it could be half a save), so
  this row measures that guard (5 edits).
- `modelroute (ControlLoop)`: same process, the changed objects handed to
  `ControlLoop.set_objects` directly (Kubernetes-provider-like path, no file watch).
- `modelroute (new ModelServer)`: a new model on the port: a manifest with one more
  ModelServer (its own path, on a running engine) saved the safe way, until a request to
  its path is answered (a fresh prober polls that path from before the save; 5 adds).
- `modelroute (kubectl, Kubernetes mode)`: `kubernetes()` below: the same world as cluster
  objects in the fake API server (its own process), the control plane's Kubernetes mode
  and a real Envoy gateway; an edit is `kubectl apply`'s merge patch of the probe route.
- `Envoy files`: Envoy's own file-based dynamic config: the same compiled config as a
  static bootstrap whose RouteConfigurations come from `path_config_source` files with
  `watched_directory`; an edit writes the new table beside it and `mv`s it in (atomic).
  The clock starts after the rename; generating the file is not counted (a user would
  write Envoy config by hand or with their own tool).
- `sovereign`: the Python REST-polling control plane (PyPI `sovereign`, in
  bench/.venvs/sovereign), serving the same RouteConfigurations from a `file` source
  (re-read every `source_config.refresh_rate`, default 30 s) through a python template;
  Envoy polls RDS over REST every 5 s (`refresh_delay` of sovereign's example bootstrap
  and templates; Envoy itself has no default for REST). One gunicorn worker
  (SOVEREIGN_WORKERS=1; the default is 2×CPUs+1, each worker polling its sources alone).
  An edit rewrites the source file atomically, at a random phase of the 30 s source
  refresh (a uniform 0–30 s pause first); the clock starts after the rename.

    .venv/bin/python -m bench.convergence [--routes 100 10000] [--edits 30] [--quick]
        [--systems modelroute kubernetes envoy-files sovereign] [--sovereign-edits N] [--ads sotw|delta]
Writes bench/results/convergence.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random

os.environ.setdefault("GRPC_VERBOSITY", "ERROR")  # no "skipping fork() handlers" notes per Popen
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from bench import _stack
from bench._common import BENCH, machine, percentiles, venv_python, write_result
from controller.kubernetes.client import KubeClient
from controller.kubernetes.resources import MODEL_ROUTE
from controller.kubernetes.workloads import INFER_LABEL
from controller.local.envoy_process import EnvoyProcess
from modelroute.embedded import Embedded, EmbeddedOptions
from modelroute.kubernetes_mode import KubernetesMode, KubernetesOptions
from routing_engine.api.resources import ObjectKey, Resource
from tests.kubernetes.helpers import endpoint_slice, model
from tests.support import free_port, stop_process
from xds_server.bootstrap import render_dict

SOVEREIGN_PACKAGES = ["sovereign"]
SOVEREIGN_REFRESH_DELAY = "5s"  # sovereign's example bootstrap/templates (RDS, CDS); LDS uses 15s
SOVEREIGN_SOURCE_REFRESH_S = 30  # sovereign's default source_config.refresh_rate (not set in our config)
QUIET_S = 0.3  # pause before each edit: isolated edits (debounce leading edge)
IN_PLACE_EDITS = 5  # saves in place: each waits out the file provider's 0.4 s half-save guard
SERVER_ADDS = 5  # new ModelServers, one manifest each

SOVEREIGN_TEMPLATE = '''"""Route tables straight from the source instances (bench: one instance = one table)."""


def call(instances, discovery_request=None, **kwargs):
    names = set(discovery_request.resource_names or []) if discovery_request is not None else set()
    return [dict(i) for i in instances if not names or i.get("name") in names]
'''


def _write_atomic(path: Path, text: str) -> int:
    """Write beside `path`, rename over it; CLOCK_MONOTONIC ns when the rename returned."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return time.monotonic_ns()


def _row(system: str, routes: int, samples_ms: list[float], **extra: Any) -> dict[str, Any]:
    return {"system": system, "routes": routes, **percentiles(samples_ms), "samples_ms": [round(s, 2) for s in samples_ms],
            **extra}


def _color(edit: int) -> str:
    return "green" if edit % 2 else "blue"


# ---- (a) modelroute: the real pipeline --------------------------------------------------

async def modelroute(n: int, edits: int, workdir: Path, delta: bool) -> list[dict[str, Any]]:
    port = free_port()
    directory = workdir / "manifests"
    directory.mkdir()
    (directory / "world.yaml").write_text(yaml.safe_dump_all(_stack.base_docs(n, port), sort_keys=False))
    probe_file = directory / "probe.yaml"
    probe_file.write_text(yaml.safe_dump(_stack.route_doc(0, to="blue"), sort_keys=False))
    app = Embedded(EmbeddedOptions(directory=directory, xds_port=0, privileged_port_offset=0, delta=delta))
    prober = None
    try:
        await app.start(timeout=180)
        await app.wait_ready(timeout=180)
        prober = _stack.Prober(f"http://127.0.0.1:{port}/v1/models/r0/infer")
        await prober.wait(_stack.header_marker("blue"), 120)
        file_ms: list[float] = []
        for i in range(1, edits + 1):
            await asyncio.sleep(QUIET_S)
            prober.send(_stack.header_marker(_color(i)), 60)
            # a safe save (editors' "atomic save", kubectl-like tools): the new file renamed
            # over the old one; the file provider applies a whole new file at once
            started = _write_atomic(probe_file, yaml.safe_dump(_stack.route_doc(0, to=_color(i)), sort_keys=False))
            file_ms.append((await prober.result() - started) / 1e6)
        in_place_ms: list[float] = []
        for i in range(edits + 1, edits + 1 + IN_PLACE_EDITS):
            await asyncio.sleep(QUIET_S)
            prober.send(_stack.header_marker(_color(i)), 60)
            with probe_file.open("w") as f:  # a save in place: truncated, written, closed
                f.write(yaml.safe_dump(_stack.route_doc(0, to=_color(i)), sort_keys=False))
            started = time.monotonic_ns()
            in_place_ms.append((await prober.result() - started) / 1e6)
        direct_ms: list[float] = []
        objects: list[Resource] = list(app.provider.objects)
        probe_index = next(k for k, o in enumerate(objects) if o.key == _stack.probe_key())
        for i in range(edits + 1, 2 * edits + 1):
            objects[probe_index] = _stack.to_objects([_stack.route_doc(0, to=_color(i))])[0]
            changed = list(objects)
            await asyncio.sleep(QUIET_S)
            prober.send(_stack.header_marker(_color(i)), 60)
            started = time.monotonic_ns()
            app.loop.set_objects(changed)
            direct_ms.append((await prober.result() - started) / 1e6)
        add_ms: list[float] = []
        for i in range(1, SERVER_ADDS + 1):
            doc = _stack.server_doc(f"new-{i}", port)
            doc["spec"]["modelInferRef"]["name"] = f"infer-{_color(i)}"
            adder = _stack.Prober(f"http://127.0.0.1:{port}/v1/models/new-{i}/infer")
            try:
                await asyncio.sleep(QUIET_S)
                adder.send(_stack.header_marker(_color(i)), 60)
                started = _write_atomic(directory / f"new-{i}.yaml", yaml.safe_dump(doc, sort_keys=False))
                add_ms.append((await adder.result() - started) / 1e6)
            finally:
                adder.stop()
        ads = "delta" if delta else "sotw"
        return [_row("modelroute (file edit)", n, file_ms, clock_start="rename of the new probe manifest returned",
                     ads=ads),
                _row("modelroute (file edit in place)", n, in_place_ms, clock_start="probe manifest write closed",
                     note="a file written in place may be half a save: the provider applies it once quiet "
                          "for 0.4 s (docs/decisions.md, Embedded mode)", ads=ads),
                _row("modelroute (ControlLoop)", n, direct_ms, clock_start="ControlLoop.set_objects called", ads=ads),
                _row("modelroute (new ModelServer)", n, add_ms, clock_start="rename of the new server's manifest returned",
                     note="its readiness is on the port's /ready route: the Listener stays as it is", ads=ads)]
    finally:
        if prober is not None:
            prober.stop()
        await app.stop()


# ---- (a') modelroute in Kubernetes mode: kubectl-like edits through an API server -------

def _kubernetes_seed(n: int, port: int, engines: dict[str, _stack.MockEngine]) -> list[dict[str, Any]]:
    """The file world as cluster objects, plus the Model its ModelInfers run and one
    EndpointSlice per ModelInfer naming its mock engine (no kubelet here)."""
    cluster_side = [model("m")]  # (the test helpers' objects, moved to the bench's namespace)
    for color, engine in engines.items():
        slice_ = endpoint_slice(f"infer-{color}-x", service=f"infer-{color}", ready={"127.0.0.1": True},
                                port=engine.port)
        slice_["metadata"]["labels"][INFER_LABEL] = f"infer-{color}"
        cluster_side.append(slice_)
    for doc in cluster_side:
        doc["metadata"]["namespace"] = _stack.NS
    return [*cluster_side, *_stack.base_docs(n, port), _stack.route_doc(0, to="blue")]


async def _status_writes_settled(mode: KubernetesMode, timeout: float) -> None:
    """Until the leader has written every object's first status (10,000 routes: 10,000
    writes) and nothing was written for 2 s: the edits are measured on a settled cluster."""
    loop = asyncio.get_running_loop()
    started, last, quiet_since = loop.time(), -1, loop.time()
    while loop.time() - started < timeout:
        writes = mode.cluster.status.writes
        if writes != last:
            last, quiet_since = writes, loop.time()
        elif writes > 0 and loop.time() - quiet_since >= 2.0:
            return
        await asyncio.sleep(0.2)
    raise TimeoutError(f"status writes still going after {timeout:.0f} s ({last} written)")


async def kubernetes(n: int, edits: int, workdir: Path, delta: bool,
                     engines: dict[str, _stack.MockEngine]) -> dict[str, Any]:
    """`modelroute (kubectl, Kubernetes mode)`: the fake API server in its own process,
    the control plane's Kubernetes mode (what `modelroute serve --provider kubernetes`
    runs: informers → provider → ControlLoop → xDS, and the leader's status writes) with a
    real Envoy gateway. An edit is the merge patch `kubectl apply` sends for the probe
    route; the clock starts when the patch is sent (so it includes the API server's
    answer and its watch event)."""
    port = free_port()
    seed = workdir / "seed.json"
    seed.write_text(json.dumps(_kubernetes_seed(n, port, engines)))
    proc = subprocess.Popen([sys.executable, str(BENCH / "_fake_api_child.py"), str(seed), "0"],
                            stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert proc.stdout is not None
        url = (await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 120)).strip()
        async with KubeClient(url, request_timeout=30.0) as api:
            mode = KubernetesMode(api, KubernetesOptions(
                identity="bench-0", system_namespace="matrixinfer-system", xds_host="127.0.0.1", xds_port=0,
                listen_address="127.0.0.1", admin_address="127.0.0.1:0"))
            try:
                return await _kubectl_edits(mode, api, n, edits, port, workdir, delta)
            finally:
                await mode.stop()
    finally:
        stop_process(proc)


async def _kubectl_edits(mode: KubernetesMode, api: KubeClient, n: int, edits: int, port: int, workdir: Path,
                         delta: bool) -> dict[str, Any]:
    envoy: EnvoyProcess | None = None
    prober = None
    try:
        await mode.start()
        assert mode.plane is not None
        envoy = EnvoyProcess(render_dict("gateway", node_id="bench-gateway", cluster="gateway",
                                         xds_port=mode.plane.xds_port, admin_port=free_port(), delta=delta),
                             workdir, name="gateway", log_level="warning")
        await envoy.start()
        prober = _stack.Prober(f"http://127.0.0.1:{port}/v1/models/r0/infer")
        await prober.wait(_stack.header_marker("blue"), 300)
        await _status_writes_settled(mode, 600)
        samples: list[float] = []
        for i in range(1, edits + 1):
            routes = _stack.route_doc(0, to=_color(i))["spec"]["routes"]
            await asyncio.sleep(QUIET_S)
            prober.send(_stack.header_marker(_color(i)), 60)
            started = time.monotonic_ns()
            await api.patch(MODEL_ROUTE, _stack.NS, "route-0", {"spec": {"routes": routes}})
            samples.append((await prober.result() - started) / 1e6)
        return _row("modelroute (kubectl, Kubernetes mode)", n, samples, clock_start="merge patch sent",
                    ads="delta" if delta else "sotw",
                    note="fake API server (tests/kubernetes/fakeapi.py) in its own process; statuses settled first")
    finally:
        if prober is not None:
            prober.stop()
        if envoy is not None:
            await envoy.stop()


# ---- (b) Envoy's own file-based dynamic config -------------------------------------------

def _table_file(directory: Path, name: str) -> Path:
    return directory / (name.replace("/", "_") + ".json")


def _rds_document(table: dict[str, Any]) -> str:
    return json.dumps({"resources": [{"@type": _stack.ROUTE_TYPE, **table}]})


async def envoy_files(n: int, edits: int, workdir: Path, engines: dict[str, _stack.MockEngine]) -> dict[str, Any]:
    port = free_port()
    rds_dir = workdir / "rds"
    rds_dir.mkdir()
    endpoints = {ObjectKey("ModelInfer", _stack.NS, f"infer-{c}"): e.endpoint() for c, e in engines.items()}
    base = _stack.to_objects(_stack.base_docs(n, port))
    compiler = _stack.StaticCompiler()
    compiled = compiler.compile(base + _stack.to_objects([_stack.route_doc(0, to="blue")]), endpoints)

    def source(name: str) -> dict[str, Any]:
        return {"path_config_source": {"path": str(_table_file(rds_dir, name)), "watched_directory": {"path": str(rds_dir)}},
                "resource_api_version": "V3"}

    bootstrap, tables = _stack.split_routes(compiled, free_port(), source)
    for name, table in tables.items():
        _table_file(rds_dir, name).write_text(_rds_document(table))
    envoy = EnvoyProcess(bootstrap, workdir / "envoy", name="envoy-files", log_level="warning")
    prober = None
    try:
        await envoy.start(timeout=120)
        prober = _stack.Prober(f"http://127.0.0.1:{port}/v1/models/r0/infer")
        await prober.wait(_stack.header_marker("blue"), 120)
        samples: list[float] = []
        for i in range(1, edits + 1):
            new = _stack.route_tables(compiler.compile(base + _stack.to_objects([_stack.route_doc(0, to=_color(i))]),
                                                       endpoints))
            changed = {name: _rds_document(t) for name, t in new.items() if t != tables.get(name)}
            tables = new
            await asyncio.sleep(QUIET_S)
            prober.send(_stack.header_marker(_color(i)), 60)
            started = 0
            for name, text in changed.items():  # one table here: the probe's listener
                started = _write_atomic(_table_file(rds_dir, name), text)
            samples.append((await prober.result() - started) / 1e6)
        return _row("Envoy files (path_config_source)", n, samples, clock_start="mv of the new RDS file returned")
    finally:
        if prober is not None:
            prober.stop()
        await envoy.stop()


# ---- (c) sovereign (REST polling) ---------------------------------------------------------

def _wait_http(url: str, timeout: float, proc: subprocess.Popen, log: Path) -> None:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sovereign exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
        try:
            with opener.open(url, timeout=2) as r:
                if r.status < 500:
                    return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"sovereign not answering {url} after {timeout}s:\n{log.read_text()[-3000:]}")


async def sovereign(n: int, edits: int, workdir: Path, engines: dict[str, _stack.MockEngine]) -> dict[str, Any]:
    python = venv_python("sovereign", SOVEREIGN_PACKAGES)
    port = free_port()
    sov_dir = workdir / "sovereign"
    sov_dir.mkdir()
    endpoints = {ObjectKey("ModelInfer", _stack.NS, f"infer-{c}"): e.endpoint() for c, e in engines.items()}
    base = _stack.to_objects(_stack.base_docs(n, port))
    compiler = _stack.StaticCompiler()
    compiled = compiler.compile(base + _stack.to_objects([_stack.route_doc(0, to="blue")]), endpoints)
    rest = {"api_config_source": {"api_type": "REST", "transport_api_version": "V3", "cluster_names": ["sovereign"],
                                  "refresh_delay": SOVEREIGN_REFRESH_DELAY}, "resource_api_version": "V3"}
    bootstrap, tables = _stack.split_routes(compiled, free_port(), lambda name: rest)
    sov_port = free_port()
    bootstrap = _stack.with_cluster(bootstrap, "sovereign", sov_port)
    instances = sov_dir / "instances.json"
    instances.write_text(json.dumps(list(tables.values())))
    (sov_dir / "routes.py").write_text(SOVEREIGN_TEMPLATE)
    config = {"templates": {"default": [{"type": "routes", "spec": {"protocol": "python", "serialization": "raw",
                                                                    "path": str(sov_dir / "routes.py")}}]},
              "sources": [{"type": "file", "scope": "default",
                           "config": {"spec": {"protocol": "file", "serialization": "json", "path": str(instances)}}}],
              "matching": {"enabled": False}}
    (sov_dir / "sovereign.yaml").write_text(yaml.safe_dump(config))
    env = {**os.environ, "SOVEREIGN_CONFIG": f"file://{sov_dir / 'sovereign.yaml'}", "SOVEREIGN_HOST": "127.0.0.1",
           "SOVEREIGN_PORT": str(sov_port), "SOVEREIGN_WORKERS": "1"}
    log = sov_dir / "sovereign.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([str(python.parent / "sovereign")], cwd=sov_dir, env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    envoy = None
    prober = None
    try:
        await asyncio.to_thread(_wait_http, f"http://127.0.0.1:{sov_port}/healthcheck", 120, proc, log)
        envoy = EnvoyProcess(bootstrap, workdir / "envoy-sov", name="envoy-sovereign", log_level="warning")
        await envoy.start(timeout=120)
        prober = _stack.Prober(f"http://127.0.0.1:{port}/v1/models/r0/infer")
        await prober.wait(_stack.header_marker("blue"), 120)
        samples: list[float] = []
        phase = random.Random(9)
        for i in range(1, edits + 1):
            new = _stack.route_tables(compiler.compile(base + _stack.to_objects([_stack.route_doc(0, to=_color(i))]),
                                                       endpoints))
            text = json.dumps(list(new.values()))
            # A random phase against sovereign's 30 s source refresh: back-to-back edits
            # would otherwise each land just after a refresh and all wait ~30 s.
            await asyncio.sleep(QUIET_S + phase.uniform(0, SOVEREIGN_SOURCE_REFRESH_S))
            prober.send(_stack.header_marker(_color(i)), 120)
            started = _write_atomic(instances, text)
            samples.append((await prober.result() - started) / 1e6)
        version = subprocess.run([str(python), "-m", "pip", "show", "sovereign"], capture_output=True, text=True,
                                 timeout=60).stdout
        return _row("sovereign (REST polling)", n, samples, clock_start="mv of the new source file returned",
                    sovereign_version=next((ln.split()[1] for ln in version.splitlines() if ln.startswith("Version:")),
                                           None),
                    settings={"source_refresh_rate_s": SOVEREIGN_SOURCE_REFRESH_S,
                              "edit_phase": "uniform random 0-30 s wait before each edit",
                              "envoy_refresh_delay": SOVEREIGN_REFRESH_DELAY,
                              "workers": 1})
    finally:
        if prober is not None:
            prober.stop()
        if envoy is not None:
            await envoy.stop()
        stop_process(proc, grace=10)


# ---- driver ---------------------------------------------------------------------------------

SYSTEMS = ("modelroute", "kubernetes", "envoy-files", "sovereign")


async def run(sizes: list[int], edits: int, sovereign_edits: int, systems: list[str],
              delta: bool = False) -> dict[str, Any]:
    """Every system at every size; a system that fails is reported in `errors` (with the
    reason) and the others still run."""
    rows: list[dict[str, Any]] = []
    errors: list[dict[str, str]] = []

    async def attempt(system: str, n: int, make: Any) -> None:
        try:
            got = await make()
        except Exception as exc:  # noqa: BLE001 — any failure is reported, never a fake number
            errors.append({"system": system, "routes": str(n), "error": f"{type(exc).__name__}: {exc}"[-2000:]})
            print(f"FAILED {system} at {n} routes: {type(exc).__name__}: {str(exc)[-500:]}", flush=True)
            return
        new = got if isinstance(got, list) else [got]
        rows.extend(new)
        _progress(new)

    for n in sizes:
        with tempfile.TemporaryDirectory(prefix="bench-conv-") as tmp:
            work = Path(tmp)
            for sub in ("mr", "k8s", "files", "sov"):
                (work / sub).mkdir()
            if "modelroute" in systems:
                await attempt("modelroute", n, lambda: modelroute(n, edits, work / "mr", delta))
            if {"kubernetes", "envoy-files", "sovereign"} & set(systems):
                with _stack.mock_engines("blue", "green") as engines:
                    if "kubernetes" in systems:
                        await attempt("kubernetes", n, lambda: kubernetes(n, edits, work / "k8s", delta, engines))
                    if "envoy-files" in systems:
                        await attempt("envoy-files", n, lambda: envoy_files(n, edits, work / "files", engines))
                    if "sovereign" in systems and sovereign_edits > 0:
                        await attempt("sovereign", n, lambda: sovereign(n, sovereign_edits, work / "sov", engines))
    for row in rows:
        ours = next((r for r in rows if r["routes"] == row["routes"] and r["system"] == "modelroute (file edit)"), None)
        if ours is not None:
            row["ratio_p50_vs_modelroute_file_edit"] = round(row["p50"] / ours["p50"], 2) if ours["p50"] else None
            row["ratio_p99_vs_modelroute_file_edit"] = round(row["p99"] / ours["p99"], 2) if ours["p99"] else None
    return {"rows": rows, "errors": errors}


def _progress(rows: list[dict[str, Any]]) -> None:
    for r in rows:
        print(f"  {r['system']:<34} {r['routes']:>6} routes: p50 {r['p50']:.1f} ms, p95 {r['p95']:.1f} ms,"
              f" p99 {r['p99']:.1f} ms over {r['n']} edits", flush=True)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--routes", type=int, nargs="+", default=None)
    parser.add_argument("--edits", type=int, default=None)
    parser.add_argument("--sovereign-edits", type=int, default=None,
                        help="edits for sovereign (each takes up to ~35 s at its defaults)")
    parser.add_argument("--systems", nargs="+", choices=SYSTEMS, default=list(SYSTEMS))
    parser.add_argument("--quick", action="store_true", help="100 routes, 5 edits (sovereign: 2)")
    parser.add_argument("--ads", choices=("sotw", "delta"), default="delta",
                        help="how modelroute's Envoy subscribes (the rows' `ads`; `modelroute up`'s default: delta)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    sizes = args.routes or ([100] if args.quick else [100, 10_000])
    edits = args.edits or (5 if args.quick else 30)
    sovereign_edits = args.sovereign_edits if args.sovereign_edits is not None else (2 if args.quick else 30)
    result = asyncio.run(run(sizes, edits, sovereign_edits, args.systems, args.ads == "delta"))
    print(f"{'system':<34} {'routes':>7} {'edits':>5} {'p50 ms':>9} {'p95 ms':>9} {'p99 ms':>9} {'p50 ratio':>9}")
    for r in result["rows"]:
        ratio = r.get("ratio_p50_vs_modelroute_file_edit")
        print(f"{r['system']:<34} {r['routes']:>7,} {r['n']:>5} {r['p50']:>9.1f} {r['p95']:>9.1f} {r['p99']:>9.1f}"
              f" {(f'{ratio:.2f}x' if ratio else '-'):>9}")
    for e in result["errors"]:
        print(f"FAILED {e['system']} at {e['routes']} routes: {e['error'][:300]}")
    out = {"benchmark": "convergence", "quick": args.quick, "machine": machine(),
           "command": "python -m bench.convergence " + " ".join(argv if argv is not None else sys.argv[1:]),
           "edits": edits, "sovereign_edits": sovereign_edits, **result}
    path = write_result("convergence", out)
    print(f"wrote {path}")
    return out


if __name__ == "__main__":
    main()
