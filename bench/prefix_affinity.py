"""What prefixAffinity costs in Envoy, and MAGLEV vs RING_HASH for it (issue #18).

1. **Filter cost:** the same compiled world twice, as static Envoys (`--concurrency 1`,
   pinned to the first CPU with the mock engine): ModelServers leastRequest, and the same
   servers prefixAffinity (the Lua filter buffers the body, finds the prompt and hashes
   its first 1 KiB into a header; MAGLEV picks by it). A stdlib client in its own process
   on the last CPU sends WARMUP + COUNT sequential chat requests with a ~4 KiB body over
   one keep-alive connection; rounds alternate between the two. Reported: added p50/p99
   per request (medians over rounds).
2. **Hash stability and balance:** a static Envoy with a MAGLEV and a RING_HASH cluster
   (load bound 150, as compiled) over 4 replicas, KEYS distinct hash-header values sent
   once each; then the same with replica 3 gone. Reported per policy: the share of keys
   that moved although their replica stayed (ideal 0), and the busiest replica's share
   of keys over the mean (ideal 1).

    .venv/bin/python -m bench.prefix_affinity [--rounds 9] [--count 400] [--keys 2000] [--quick]
Writes bench/results/prefix_affinity.json.
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
from pathlib import Path
from typing import Any

from bench import _stack
from bench._common import machine, write_result
from bench.dataplane import pin
from controller.local.envoy_process import EnvoyProcess
from routing_engine.api.resources import ObjectKey
from routing_engine.engine import static_bootstrap
from routing_engine.translate.cluster import HASH_BALANCE_FACTOR
from routing_engine.translate.route import PREFIX_HASH_HEADER
from tests.support import free_port

# Sequential POSTs of one chat body over one keep-alive connection; prints the times in µs.
_CLIENT = """
import http.client, json, os, sys, time
from urllib.parse import urlsplit
url, count, warmup = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
cpus = sorted(os.sched_getaffinity(0))
if len(cpus) > 1:
    os.sched_setaffinity(0, {cpus[-1]})
parts = urlsplit(url)
conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
system = " ".join(f"word{i}" for i in range(600))
body = json.dumps({"model": "m", "max_tokens": 1, "messages": [{"role": "system", "content": system},
                                                               {"role": "user", "content": "hello"}]}).encode()
times = []
for i in range(count + warmup):
    started = time.perf_counter_ns()
    conn.request("POST", parts.path, body=body, headers={"content-type": "application/json"})
    response = conn.getresponse()
    data = response.read()
    if response.status != 200:
        raise SystemExit(f"bad answer {response.status}: {data[-200:]!r}")
    if i >= warmup:
        times.append((time.perf_counter_ns() - started) // 1000)
print(json.dumps(times))
"""

# One request per key, the key in the hash header; prints key → x-modelinfer.
_KEYS_CLIENT = """
import http.client, json, sys
from urllib.parse import urlsplit
url, keys, header = sys.argv[1], int(sys.argv[2]), sys.argv[3]
parts = urlsplit(url)
conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
found = {}
for k in range(keys):
    conn.request("POST", parts.path, body=b"{}", headers={"content-type": "application/json", header: f"key-{k}"})
    response = conn.getresponse()
    response.read()
    found[k] = response.getheader("x-modelinfer")
print(json.dumps(found))
"""


def _percentile(values: list[int], p: float) -> float:
    ordered = sorted(values)
    return float(ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))])


async def _client(script: str, *args: str) -> Any:
    done = await asyncio.to_thread(subprocess.run, [sys.executable, "-c", script, *args], capture_output=True,
                                   text=True, timeout=900)
    if done.returncode != 0:
        raise RuntimeError(f"client failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout)


def _prefix_docs(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = copy.deepcopy(docs)
    for doc in out:
        if doc["kind"] == "ModelServer":
            doc["spec"]["loadBalancing"] = "prefixAffinity"
    return out


async def filter_cost(rounds: int, count: int, warmup: int, workdir: Path) -> dict[str, Any]:
    port, other = free_port(), free_port()
    with _stack.mock_engines("blue", "green") as engines:
        for engine in engines.values():
            pin(engine.proc.pid)
        endpoints = {ObjectKey("ModelInfer", _stack.NS, f"infer-{c}"): e.endpoint() for c, e in engines.items()}
        bootstraps = {}
        for mode, listen, docs in (("leastRequest", port, _stack.base_docs(3, port)),
                                   ("prefixAffinity", other, _prefix_docs(_stack.base_docs(3, other)))):
            compiled = _stack.StaticCompiler().compile(_stack.to_objects(docs), endpoints)
            bootstraps[mode] = (listen, static_bootstrap(compiled.resources, admin_port=free_port()))
        envoys = {mode: EnvoyProcess(b, workdir / mode, name=f"prefix-{mode}", log_level="warning")
                  for mode, (_, b) in bootstraps.items()}
        for envoy in envoys.values():
            await envoy.start(timeout=120)
            pin(envoy.pid)
        try:
            per_round: list[dict[str, Any]] = []
            for _ in range(rounds):
                row: dict[str, Any] = {}
                for mode, (listen, _) in bootstraps.items():
                    times = await _client(_CLIENT, f"http://127.0.0.1:{listen}/v1/models/r2/v1/chat/completions",
                                          str(count), str(warmup))
                    row[mode] = {"p50_us": _percentile(times, 50), "p99_us": _percentile(times, 99)}
                row["added_p50_us"] = row["prefixAffinity"]["p50_us"] - row["leastRequest"]["p50_us"]
                row["added_p99_us"] = row["prefixAffinity"]["p99_us"] - row["leastRequest"]["p99_us"]
                per_round.append(row)
        finally:
            for envoy in envoys.values():
                await envoy.stop()
    return {"rounds": rounds, "count": count, "warmup": warmup,
            "p50_us_least_request": statistics.median(r["leastRequest"]["p50_us"] for r in per_round),
            "p50_us_prefix_affinity": statistics.median(r["prefixAffinity"]["p50_us"] for r in per_round),
            "added_p50_us": statistics.median(r["added_p50_us"] for r in per_round),
            "added_p99_us": statistics.median(r["added_p99_us"] for r in per_round), "per_round": per_round}


def _hash_bootstrap(listen: int, ports: list[int]) -> dict[str, Any]:
    def cluster(name: str, policy: str) -> dict[str, Any]:
        return {"name": name, "type": "STATIC", "connect_timeout": "1s", "lb_policy": policy,
                "common_lb_config": {"consistent_hashing_lb_config": {"hash_balance_factor": HASH_BALANCE_FACTOR}},
                "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
                    {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": p}}}}
                    for p in ports]}]}}

    routes = [{"match": {"prefix": f"/{name}/"}, "route": {"cluster": name, "hash_policy": [
        {"header": {"header_name": PREFIX_HASH_HEADER}}]}} for name in ("MAGLEV", "RING_HASH")]
    hcm = {"@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
                    "HttpConnectionManager", "stat_prefix": "hash",
           "route_config": {"virtual_hosts": [{"name": "*", "domains": ["*"], "routes": routes}]},
           "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
               "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]}
    return {"admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": free_port()}}},
            "static_resources": {
                "clusters": [cluster("MAGLEV", "MAGLEV"), cluster("RING_HASH", "RING_HASH")],
                "listeners": [{"name": "hash", "address": {"socket_address": {"address": "127.0.0.1",
                                                                               "port_value": listen}},
                               "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                                               "typed_config": hcm}]}]}]}}


async def hash_stability(keys: int, workdir: Path) -> dict[str, Any]:
    colors = ("r0", "r1", "r2", "r3")
    with _stack.mock_engines(*colors) as engines:
        ports = [engines[c].port for c in colors]
        maps: dict[str, dict[str, dict[str, str]]] = {}
        for stage, used in (("four", ports), ("three", ports[:3])):
            listen = free_port()
            envoy = EnvoyProcess(_hash_bootstrap(listen, used), workdir / stage, name=f"hash-{stage}",
                                 log_level="warning")
            await envoy.start(timeout=120)
            try:
                for policy in ("MAGLEV", "RING_HASH"):
                    maps.setdefault(policy, {})[stage] = await _client(
                        _KEYS_CLIENT, f"http://127.0.0.1:{listen}/{policy}/x", str(keys), PREFIX_HASH_HEADER)
            finally:
                await envoy.stop()
    out: dict[str, Any] = {"keys": keys}
    gone = f"{_stack.NS}/infer-r3"
    for policy, stages in maps.items():
        before, after = stages["four"], stages["three"]
        stayed = [k for k, v in before.items() if v != gone]
        moved = sum(1 for k in stayed if after[k] != before[k])
        counts = [list(before.values()).count(f"{_stack.NS}/infer-{c}") for c in colors]
        out[policy] = {"moved_share_of_unaffected_keys": round(moved / len(stayed), 4),
                       "busiest_over_mean": round(max(counts) / (keys / len(colors)), 3), "keys_per_replica": counts}
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--count", type=int, default=None, help="timed requests per round and mode")
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--keys", type=int, default=2000)
    parser.add_argument("--quick", action="store_true", help="2 rounds of 200 requests, 500 keys")
    args = parser.parse_args(argv)
    rounds = args.rounds or (2 if args.quick else 9)
    count = args.count or (200 if args.quick else 400)
    keys = 500 if args.quick else args.keys
    with tempfile.TemporaryDirectory(prefix="bench-prefix-") as tmp:
        cost = asyncio.run(filter_cost(rounds, count, args.warmup, Path(tmp)))
        stability = asyncio.run(hash_stability(keys, Path(tmp)))
    print(f"prefixAffinity (Lua prefix hash + MAGLEV) vs leastRequest, ~4 KiB chat body: p50 "
          f"{cost['p50_us_least_request']:.0f} → {cost['p50_us_prefix_affinity']:.0f} us (added p50 "
          f"{cost['added_p50_us']:+.0f} us, p99 {cost['added_p99_us']:+.0f} us)")
    for policy in ("MAGLEV", "RING_HASH"):
        row = stability[policy]
        print(f"{policy}: one of 4 replicas removed → {row['moved_share_of_unaffected_keys']:.1%} of the other keys "
              f"moved; busiest replica {row['busiest_over_mean']:.2f}x the mean ({row['keys_per_replica']})")
    out = {"benchmark": "prefix_affinity", "quick": args.quick, "machine": machine(),
           "command": "python -m bench.prefix_affinity" + (" --quick" if args.quick else ""),
           "filter_cost": cost, "hash_stability": stability}
    path = write_result("prefix_affinity", out)
    print(f"wrote {path}")
    return out


if __name__ == "__main__":
    main()
