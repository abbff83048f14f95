"""What the usage reader (`routing_engine.translate.usage`: the request's size, then the
Lua filter reading the answer) costs per request (issue #17: token limits charge streamed answers).

The filter sits on every listener (it feeds token budgets and the access log). Two static Envoys (`--concurrency
1`, pinned to the first CPU with the mock engine) serve the same compiled route, one with
the usage reader's two filters before the router, one without; rounds alternate between them:
- plain: WARMUP + COUNT sequential JSON requests (bench/_loadgen.py, its own process on
  the last CPU): Content-Length is stored, the Lua filter reads the answer's
  content type and scans the (small JSON) answer;
- stream: STREAMS sequential streamed chat answers of TOKENS chunks each (a stdlib client
  in its own process on the last CPU), the filter scanning every chunk for `usage`.
Reported: the added p50/p99 per plain request, the added Envoy CPU time per plain
request (user + system from /proc: steadier than latency on a shared machine) and the
added time per streamed answer (medians of per-round differences).

    .venv/bin/python -m bench.lua_usage [--rounds 15] [--count 500] [--streams 100] [--tokens 64] [--quick]
Many short rounds rather than a few long ones: on a shared machine the load moves within
seconds, and the median of per-round differences follows it best.
Writes bench/results/lua_usage.json.
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
from bench.dataplane import pin, plugins_without, through
from controller.local.envoy_process import EnvoyProcess
from routing_engine.api.resources import ObjectKey
from routing_engine.engine import static_bootstrap
from routing_engine.translate.usage import usage_filters
from routing_engine.serialize import to_dict
from routing_engine.world import BackendEndpoint
from tests.support import free_port

# One client process: sequential streamed chat answers over one keep-alive connection,
# each read to its end; prints the per-answer times in microseconds.
_STREAM_CLIENT = """
import http.client, json, os, sys, time
from urllib.parse import urlsplit
url, count, tokens = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
cpus = sorted(os.sched_getaffinity(0))
if len(cpus) > 1:
    os.sched_setaffinity(0, {cpus[-1]})
parts = urlsplit(url)
conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
body = json.dumps({"model": "m", "stream": True, "max_tokens": tokens, "stream_options": {"include_usage": True},
                   "messages": [{"role": "user", "content": "hello"}]}).encode()
times = []
for i in range(count + 20):
    started = time.perf_counter_ns()
    conn.request("POST", parts.path, body=body, headers={"content-type": "application/json"})
    response = conn.getresponse()
    data = response.read()
    if response.status != 200 or not data.endswith(b"data: [DONE]\\n\\n"):
        raise SystemExit(f"bad answer {response.status}: {data[-200:]!r}")
    if i >= 20:
        times.append((time.perf_counter_ns() - started) // 1000)
print(json.dumps(times))
"""


def _with_lua(bootstrap: dict[str, Any]) -> dict[str, Any]:
    """The same bootstrap with the usage reader's filters just before the router of every listener."""
    out = copy.deepcopy(bootstrap)
    reader = [to_dict(f) for f in usage_filters()]
    for listener in out["static_resources"]["listeners"]:
        hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
        hcm["http_filters"][len(hcm["http_filters"]) - 1:len(hcm["http_filters"]) - 1] = reader
    return out


async def _streams(url: str, count: int, tokens: int) -> list[int]:
    done = await asyncio.to_thread(subprocess.run, [sys.executable, "-c", _STREAM_CLIENT, url, str(count), str(tokens)],
                                   capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"stream client failed: {done.stderr[-2000:]}")
    times: list[int] = json.loads(done.stdout)
    return times


def _median(values: list[float]) -> float:
    return round(statistics.median(values), 1)


def configs(docs: list[dict[str, Any]], endpoints: dict[ObjectKey, tuple[BackendEndpoint, ...]],
            lua_port: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """The bootstraps without and with the usage reader (the second on `lua_port`). The
    first is compiled without the usage plugin: it is built in since issue #17."""
    compiled = _stack.StaticCompiler(plugins=plugins_without(["usage"])).compile(_stack.to_objects(docs), endpoints)
    plain = static_bootstrap(compiled.resources, admin_port=free_port())
    with_lua = _with_lua(plain)
    for listener in with_lua["static_resources"]["listeners"]:
        listener["address"]["socket_address"]["port_value"] = lua_port
    with_lua["admin"]["address"]["socket_address"]["port_value"] = free_port()
    return plain, with_lua


async def measure(rounds: int, count: int, warmup: int, streams: int, tokens: int, workdir: Path) -> dict[str, Any]:
    port = free_port()
    docs = _stack.base_docs(3, port)
    with _stack.mock_engines("blue", "green") as engines:
        for engine in engines.values():
            pin(engine.proc.pid)
        endpoints = {ObjectKey("ModelInfer", _stack.NS, f"infer-{c}"): e.endpoint() for c, e in engines.items()}
        lua_port = free_port()
        plain, with_lua = configs(docs, endpoints, lua_port)
        envoys = {"without": EnvoyProcess(plain, workdir / "without", name="lua-without", log_level="warning"),
                  "with": EnvoyProcess(with_lua, workdir / "with", name="lua-with", log_level="warning")}
        for envoy in envoys.values():
            await envoy.start(timeout=120)
            pin(envoy.pid)
        try:
            ports = {"without": port, "with": lua_port}
            path = "/v1/models/r2"
            per_round: list[dict[str, Any]] = []
            for _ in range(rounds):
                row: dict[str, Any] = {}
                for mode, p in ports.items():
                    result, cpu_us = await through(envoys[mode], f"http://127.0.0.1:{p}{path}/infer", count, warmup)
                    times = await _streams(f"http://127.0.0.1:{p}{path}/v1/chat/completions", streams, tokens)
                    row[mode] = {"p50_us": result["p50_us"], "p99_us": result["p99_us"], "cpu_us_per_request": cpu_us,
                                 "stream_p50_us": statistics.median(times)}
                row["added_cpu_us"] = row["with"]["cpu_us_per_request"] - row["without"]["cpu_us_per_request"]
                row["added_p50_us"] = row["with"]["p50_us"] - row["without"]["p50_us"]
                row["added_p99_us"] = row["with"]["p99_us"] - row["without"]["p99_us"]
                row["added_stream_us"] = row["with"]["stream_p50_us"] - row["without"]["stream_p50_us"]
                per_round.append(row)
        finally:
            for envoy in envoys.values():
                await envoy.stop()
    return {"rounds": rounds, "count": count, "warmup": warmup, "streams": streams, "tokens": tokens,
            "plain_p50_us_without": _median([r["without"]["p50_us"] for r in per_round]),
            "plain_p50_us_with": _median([r["with"]["p50_us"] for r in per_round]),
            "added_p50_us": _median([r["added_p50_us"] for r in per_round]),
            "added_p99_us": _median([r["added_p99_us"] for r in per_round]),
            "cpu_us_per_request_without": _median([r["without"]["cpu_us_per_request"] for r in per_round]),
            "added_cpu_us_per_request": _median([r["added_cpu_us"] for r in per_round]),
            "stream_p50_us_without": _median([r["without"]["stream_p50_us"] for r in per_round]),
            "stream_p50_us_with": _median([r["with"]["stream_p50_us"] for r in per_round]),
            "added_stream_us": _median([r["added_stream_us"] for r in per_round]),
            "per_round": per_round}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--count", type=int, default=None, help="timed plain requests per round and mode")
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--streams", type=int, default=None, help="timed streamed answers per round and mode")
    parser.add_argument("--tokens", type=int, default=64, help="chunks per streamed answer")
    parser.add_argument("--quick", action="store_true", help="2 rounds of 300 requests and 50 streams")
    args = parser.parse_args(argv)
    rounds = args.rounds or (2 if args.quick else 15)
    count = args.count or (300 if args.quick else 500)
    streams = args.streams or (50 if args.quick else 100)
    with tempfile.TemporaryDirectory(prefix="bench-lua-") as tmp:
        row = asyncio.run(measure(rounds, count, args.warmup, streams, args.tokens, Path(tmp)))
    print(f"plain request p50: {row['plain_p50_us_without']:.0f} us without the filter, "
          f"{row['plain_p50_us_with']:.0f} us with (added p50 {row['added_p50_us']:+.0f} us, p99 {row['added_p99_us']:+.0f} us)")
    print(f"Envoy CPU per plain request: {row['cpu_us_per_request_without']:.0f} us without, "
          f"added {row['added_cpu_us_per_request']:+.0f} us")
    print(f"streamed answer of {args.tokens} chunks p50: {row['stream_p50_us_without']:.0f} us without, "
          f"{row['stream_p50_us_with']:.0f} us with (added {row['added_stream_us']:+.0f} us)")
    out = {"benchmark": "lua_usage", "quick": args.quick, "machine": machine(),
           "command": "python -m bench.lua_usage" + (" --quick" if args.quick else ""), "row": row}
    path = write_result("lua_usage", out)
    print(f"wrote {path}")
    return out


if __name__ == "__main__":
    main()
