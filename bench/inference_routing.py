"""Inference-aware routing (issue #18): leastRequest vs loadAware vs prefixAffinity on a
skewed inference workload, through the real product (files → control plane → Envoy →
mock replicas with the queueing model), in one run.

Each policy has its own ModelInfer of REPLICAS mock replicas (same settings, fresh
caches) behind its own ModelServer; phases run one after the other:
- skew "slow replica": replica 0 of every ModelInfer at `speed` SLOW_SPEED (every
  simulated duration / 0.35), the others at 1; skew "none": all at 1;
- in each, the same open-loop workload (`bench/_inference_client.py`, same seed):
  Poisson arrivals at RATE/s, BURST_FACTOR times that for 2 s of every 10 s, streamed chat
  completions of MAX_TOKENS tokens, prompts = one of PREFIX_GROUPS shared system prompts
  + a short user part, or (LONG_SHARE) a long one; the first WARMUP_S seconds are not
  counted (loadAware learns its weights, caches fill);
- per phase: p50/p99 of latency and time to first token, each replica's share, errors,
  the prefix-cache hit rate the replicas report (`vllm:prefix_cache_hits_total` /
  `queries_total` deltas), and the load average (the machine is shared: see `machine`).
Rounds repeat the six phases; the table shows medians over rounds, the JSON every round.

Alternatives (the same replicas of the loadAware ModelInfer, same workload, a second
Envoy with a static copy of the compiled config, cluster policy replaced):
- `cswrr`: Envoy's client_side_weighted_round_robin fed by the engines' ORCA load reports
  (`endpoint-load-metrics`, TEXT; the route asks for them with
  `endpoint-load-metrics-format`), blackout 0 s, weights updated every 100 ms;
- `ringHash`: prefixAffinity with RING_HASH instead of MAGLEV (same load bound).

    .venv/bin/python -m bench.inference_routing [--rounds 2] [--duration 45] [--quick]
Writes bench/results/inference_routing.json.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from bench._common import BENCH, machine, write_result
from controller.local.envoy_process import EnvoyProcess
from modelroute.embedded import Embedded, EmbeddedOptions
from routing_engine.api.resources import ObjectKey
from routing_engine.engine import static_bootstrap
from routing_engine.translate.xds import CLUSTER, ENDPOINT, LISTENER, ROUTE
from tests.support import free_port

POLICIES = ("leastRequest", "loadAware", "prefixAffinity")
ALTERNATIVES = ("cswrr", "ringHash")
SKEWS = ("slow replica", "none")
REPLICAS = 4
SLOW_SPEED = 0.35
MOCK = {"decode_ms": 20.0, "prefill_ms_per_token": 0.15, "batch_slowdown": 0.04, "kv_slowdown": 1.0,
        "kv_tokens": 6000, "prefix_cache_tokens": 8000, "max_running": 8}
WORKLOAD = {"rate": 12.0, "burst_every_s": 10.0, "burst_s": 2.0, "burst_factor": 2.0, "long_share": 0.1,
            "short_words": [20, 150], "long_words": [1500, 2500], "prefix_groups": 32, "prefix_words": 400,
            "max_tokens": 16, "warmup_s": 5.0, "seed": 18}
NS = "default"
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def manifests(port: int) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for policy in POLICIES:
        name = policy.lower()
        docs.append({"apiVersion": "workload.matrixinfer.ai/v1alpha1", "kind": "ModelInfer",
                     "metadata": {"name": name}, "spec": {"modelRef": {"name": "m"}, "replicas": REPLICAS}})
        spec: dict[str, Any] = {"modelInferRef": {"name": name}, "service": {"port": port},
                                "routing": {"path": f"/v1/models/{name}", "timeout": "120s"}}
        if policy != "leastRequest":  # the default, as most users will leave it
            spec["loadBalancing"] = policy
        docs.append({"apiVersion": "networking.matrixinfer.ai/v1alpha1", "kind": "ModelServer",
                     "metadata": {"name": name}, "spec": spec})
    return docs


def _post(url: str, body: dict[str, Any]) -> None:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")
    with _NO_PROXY.open(request, timeout=10) as response:
        response.read()


def _metrics(port: int) -> dict[str, float]:
    with _NO_PROXY.open(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    found: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("vllm:prefix_cache_"):
            found[line.split("{")[0]] = float(line.split()[-1])
    return found


def replica_ports(app: Embedded, infer: str) -> list[int]:
    return [e.port for e in app.replicas.endpoints()[ObjectKey("ModelInfer", NS, infer)] if e.port is not None]


def configure(ports: list[int], *, skewed: bool) -> None:
    for index, port in enumerate(ports):
        _post(f"http://127.0.0.1:{port}/_mock/behaviour",
              {**MOCK, "speed": SLOW_SPEED if skewed and index == 0 else 1.0})


def summarize(result: dict[str, Any], before: list[dict[str, float]], after: list[dict[str, float]]) -> dict[str, Any]:
    rows = result["requests"]
    ok = [r for r in rows if r["status"] == 200]
    latency = np.array([r["latency_ms"] for r in ok]) if ok else np.array([0.0])
    ttft = np.array([r["ttft_ms"] for r in ok]) if ok else np.array([0.0])
    hits = sum(a.get("vllm:prefix_cache_hits_total", 0) - b.get("vllm:prefix_cache_hits_total", 0)
               for a, b in zip(after, before))
    queries = sum(a.get("vllm:prefix_cache_queries_total", 0) - b.get("vllm:prefix_cache_queries_total", 0)
                  for a, b in zip(after, before))
    share: dict[str, int] = {}
    for r in ok:
        share[r.get("replica", "?")] = share.get(r.get("replica", "?"), 0) + 1
    slow = [r["latency_ms"] for r in ok if r.get("replica") == "0"]
    return {"requests": len(rows), "offered": result["offered"], "errors": len(rows) - len(ok),
            "latency_ms": {"p50": round(float(np.percentile(latency, 50)), 1),
                           "p99": round(float(np.percentile(latency, 99)), 1)},
            "ttft_ms": {"p50": round(float(np.percentile(ttft, 50)), 1),
                        "p99": round(float(np.percentile(ttft, 99)), 1)},
            "replica_share": dict(sorted(share.items())),
            "replica0_p50_ms": round(float(np.median(slow)), 1) if slow else None,
            "prefix_cache_hit_rate": round(hits / queries, 3) if queries else None,
            "drain_s": result["drain_s"]}


async def run_client(url: str, duration: float, headers: dict[str, str] | None = None) -> dict[str, Any]:
    spec = {**WORKLOAD, "url": url, "duration_s": duration, "headers": headers or {}, "timeout_s": 300}
    done = await asyncio.to_thread(subprocess.run, [sys.executable, str(BENCH / "_inference_client.py"),
                                                    json.dumps(spec)], capture_output=True, text=True,
                                   timeout=duration + 600)
    if done.returncode != 0:
        raise RuntimeError(f"workload client failed: {done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


async def phase(url: str, ports: list[int], duration: float, headers: dict[str, str] | None = None
                ) -> dict[str, Any]:
    before = [await asyncio.to_thread(_metrics, p) for p in ports]
    load_before = machine()["loadavg"]
    result = await run_client(url, duration, headers)
    after = [await asyncio.to_thread(_metrics, p) for p in ports]
    row = summarize(result, before, after)
    row["loadavg_before"] = [round(x, 2) for x in load_before]
    row["loadavg_after"] = [round(x, 2) for x in machine()["loadavg"]]
    return row


def alternative_bootstrap(app: Embedded, listen_port: int) -> dict[str, Any]:
    """The compiled gateway config as a static bootstrap on `listen_port`, with two extra
    clusters on the replicas of the loadAware and prefixAffinity ModelInfers: `cswrr`
    (client-side weighted round robin fed by ORCA reports) and `ringHash` (RING_HASH with
    the same load bound), and one route each (`/alt/<name>/...`)."""
    compiled = app.loop.compiled["gateway"]
    resources = {t: dict(found) for t, found in compiled.resources.items()}
    bootstrap = static_bootstrap({t: resources.get(t, {}) for t in (LISTENER, ROUTE, CLUSTER, ENDPOINT)},
                                 admin_port=free_port())
    statics = bootstrap["static_resources"]
    listener = statics["listeners"][0]
    listener["address"]["socket_address"]["port_value"] = listen_port
    statics["listeners"] = [listener]
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    routes = hcm["route_config"]["virtual_hosts"][0]["routes"]
    clusters = {c["name"]: c for c in statics["clusters"]}
    load = copy.deepcopy(clusters["modelserver/default/loadaware"])
    load["name"] = "alt/cswrr"
    load.pop("lb_policy", None)
    load["load_assignment"]["cluster_name"] = "alt/cswrr"
    for endpoint in load["load_assignment"]["endpoints"][0]["lb_endpoints"]:
        endpoint.pop("load_balancing_weight", None)
    load["load_balancing_policy"] = {"policies": [{"typed_extension_config": {
        "name": "envoy.load_balancing_policies.client_side_weighted_round_robin",
        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.load_balancing_policies."
                                  "client_side_weighted_round_robin.v3.ClientSideWeightedRoundRobin",
                         "blackout_period": "0s", "weight_update_period": "0.1s"}}}]}
    ring = copy.deepcopy(clusters["modelserver/default/prefixaffinity"])
    ring["name"] = "alt/ringHash"
    ring["load_assignment"]["cluster_name"] = "alt/ringHash"
    ring["lb_policy"] = "RING_HASH"
    statics["clusters"] += [load, ring]
    template = next(r for r in routes if r.get("name") == "modelserver/default/prefixaffinity")
    for name, cluster in (("cswrr", "alt/cswrr"), ("ringHash", "alt/ringHash")):
        extra = copy.deepcopy(template)
        extra["name"] = f"alt/{name}"
        extra["match"] = {"prefix": f"/alt/{name}/"}
        extra["route"]["cluster"] = cluster
        if name == "cswrr":
            extra["route"].pop("hash_policy", None)
            extra.pop("metadata", None)
            extra["request_headers_to_add"] = [{"header": {"key": "endpoint-load-metrics-format", "value": "TEXT"}}]
        routes.insert(0, extra)
    return bootstrap


def _median(values: list[float]) -> float:
    return round(statistics.median(values), 1)


def table(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over rounds per (skew, policy), and the target checks."""
    merged: dict[str, dict[str, Any]] = {}
    for row in rows:
        key = f"{row['skew']}/{row['policy']}"
        entry = merged.setdefault(key, {"skew": row["skew"], "policy": row["policy"], "rounds": []})
        entry["rounds"].append(row)
    out: dict[str, Any] = {}
    for key, entry in merged.items():
        rounds = entry["rounds"]
        hit = [r["prefix_cache_hit_rate"] for r in rounds if r["prefix_cache_hit_rate"] is not None]
        out[key] = {"skew": entry["skew"], "policy": entry["policy"], "rounds": len(rounds),
                    "latency_p50_ms": _median([r["latency_ms"]["p50"] for r in rounds]),
                    "latency_p99_ms": _median([r["latency_ms"]["p99"] for r in rounds]),
                    "ttft_p50_ms": _median([r["ttft_ms"]["p50"] for r in rounds]),
                    "ttft_p99_ms": _median([r["ttft_ms"]["p99"] for r in rounds]),
                    "errors": sum(r["errors"] for r in rounds),
                    "prefix_cache_hit_rate": round(statistics.median(hit), 3) if hit else None,
                    "replica0_share": round(statistics.median(
                        r["replica_share"].get("0", 0) / max(1, sum(r["replica_share"].values())) for r in rounds), 3),
                    "loadavg_max": max(max(r["loadavg_before"][0], r["loadavg_after"][0]) for r in rounds)}
    checks: dict[str, Any] = {}
    for skew, want in (("slow replica", 0.7), ("none", 1.0)):
        least, aware = out.get(f"{skew}/leastRequest"), out.get(f"{skew}/loadAware")
        if least and aware:
            ratio = aware["latency_p99_ms"] / least["latency_p99_ms"]
            checks[skew] = {"loadAware_p99_over_leastRequest_p99": round(ratio, 3), "target_at_most": want,
                            "met": ratio <= want}
    return {"phases": out, "targets": checks}


async def measure(rounds: int, duration: float, workdir: Path, alternatives: bool,
                  policies: tuple[str, ...] = (*POLICIES, *ALTERNATIVES), skews: tuple[str, ...] = SKEWS
                  ) -> dict[str, Any]:
    directory = workdir / "manifests"
    directory.mkdir()
    port = free_port()
    (directory / "bench.yaml").write_text(yaml.safe_dump_all(manifests(port), sort_keys=False))
    app = Embedded(EmbeddedOptions(directory=directory, xds_port=0, privileged_port_offset=0,
                                   envoy_log_level="warning"))
    rows: list[dict[str, Any]] = []
    alt_envoy: EnvoyProcess | None = None
    try:
        await app.start(timeout=60)
        await app.wait_ready(timeout=120)
        ports = {p: replica_ports(app, p.lower()) for p in POLICIES}
        alt_port = free_port()
        if alternatives:
            alt_envoy = EnvoyProcess(alternative_bootstrap(app, alt_port), workdir / "alt", name="alternatives",
                                     log_level="warning")
            await alt_envoy.start(timeout=120)
        plan: list[tuple[str, str, list[int], dict[str, str] | None]] = [
            (p, f"http://127.0.0.1:{port}/v1/models/{p.lower()}/v1/chat/completions", ports[p], None)
            for p in POLICIES]
        if alternatives:
            plan += [("cswrr", f"http://127.0.0.1:{alt_port}/alt/cswrr/v1/chat/completions", ports["loadAware"], None),
                     ("ringHash", f"http://127.0.0.1:{alt_port}/alt/ringHash/v1/chat/completions",
                      ports["prefixAffinity"], None)]
        plan = [step for step in plan if step[0] in policies]
        for n in range(rounds):
            for skew in skews:
                for policy, url, replicas, headers in plan:
                    for p in POLICIES:
                        configure(ports[p], skewed=skew == "slow replica")
                    await asyncio.sleep(2)
                    row = await phase(url, replicas, duration, headers)
                    row.update(round=n, skew=skew, policy=policy)
                    if policy == "loadAware":
                        row["weights_at_end"] = [e.weight for e in app.probe.endpoints()[
                            ObjectKey("ModelInfer", NS, "loadaware")]]
                    rows.append(row)
                    print(f"round {n} {skew:12s} {policy:15s} p50 {row['latency_ms']['p50']:8.0f} "
                          f"p99 {row['latency_ms']['p99']:8.0f} ttft p50 {row['ttft_ms']['p50']:6.0f} "
                          f"p99 {row['ttft_ms']['p99']:7.0f} ms  errors {row['errors']}  "
                          f"hit {row['prefix_cache_hit_rate']}  share {row['replica_share']}  "
                          f"load {row['loadavg_after'][0]}", flush=True)
    finally:
        if alt_envoy is not None:
            await alt_envoy.stop()
        await app.stop()
    return {"rows": rows, **table(rows)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--duration", type=float, default=None, help="seconds of workload per phase")
    parser.add_argument("--no-alternatives", action="store_true", help="skip the cswrr and ringHash rows")
    parser.add_argument("--quick", action="store_true", help="1 round of 20 s phases")
    parser.add_argument("--policies", nargs="+", default=None, choices=(*POLICIES, *ALTERNATIVES),
                        help="only these rows (default: all)")
    parser.add_argument("--skews", nargs="+", default=None, choices=SKEWS, help="only these skews (default: both)")
    args = parser.parse_args(argv)
    rounds = args.rounds or (1 if args.quick else 2)
    duration = args.duration or (20.0 if args.quick else 45.0)
    started = time.time()
    policies = tuple(args.policies or (*POLICIES, *([] if args.no_alternatives else ALTERNATIVES)))
    skews = tuple(args.skews or SKEWS)
    with tempfile.TemporaryDirectory(prefix="bench-inference-") as tmp:
        data = asyncio.run(measure(rounds, duration, Path(tmp), any(p in ALTERNATIVES for p in policies),
                                   policies, skews))
    command = "python -m bench.inference_routing" + (" --quick" if args.quick else "") + \
        ("" if args.rounds is None else f" --rounds {args.rounds}") + \
        ("" if args.duration is None else f" --duration {args.duration:g}") + \
        (" --no-alternatives" if args.no_alternatives else "") + \
        (f" --policies {' '.join(args.policies)}" if args.policies else "") + \
        (" --skews " + " ".join(repr(x) for x in args.skews) if args.skews else "")
    out = {"benchmark": "inference_routing", "quick": args.quick, "machine": machine(), "command": command,
           "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(started)),
           "duration_s": round(time.time() - started), "mock": MOCK, "workload": WORKLOAD, "replicas": REPLICAS,
           "slow_speed": SLOW_SPEED, **data}
    for key, row in out["phases"].items():
        print(f"{key:32s} p50 {row['latency_p50_ms']:8.0f}  p99 {row['latency_p99_ms']:8.0f}  ttft p50 "
              f"{row['ttft_p50_ms']:6.0f}  p99 {row['ttft_p99_ms']:7.0f} ms  hit {row['prefix_cache_hit_rate']}  "
              f"replica0 {row['replica0_share']:.1%}  errors {row['errors']}  load≤{row['loadavg_max']}")
    for skew, check in out["targets"].items():
        print(f"target ({skew}): loadAware p99 / leastRequest p99 = {check['loadAware_p99_over_leastRequest_p99']} "
              f"(at most {check['target_at_most']}): {'met' if check['met'] else 'NOT met'}")
    path = write_result("inference_routing", out)
    print(f"wrote {path}")
    return out


if __name__ == "__main__":
    main()
