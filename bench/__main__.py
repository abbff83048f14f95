"""Every benchmark in one run: compile, serialization, convergence, fan-out, data plane
(issue #9), push cost per stream (#15), streamed usage (#17), inference routing and
prefix affinity (#18). Each part runs as its own process (`python -m bench.<part>`, also
runnable alone), writes bench/results/<part>.json; this collects them, prints one table
with the ratios, and writes bench/results/summary.json.

    .venv/bin/python -m bench            # full sizes (the numbers for bench/README.md)
    .venv/bin/python -m bench --quick    # small sizes, few repeats: a smoke run
    .venv/bin/python -m bench --only compile serialization
    .venv/bin/python -m bench --summarize   # table from the JSON already in bench/results/
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from bench._common import REPO, RESULTS, machine, write_result

# part → (module, result file, full args, quick args)
PARTS: dict[str, tuple[str, str, list[str], list[str]]] = {
    "compile": ("bench.compile", "compile.json", [], ["--sizes", "100", "1000", "--repeat", "1"]),
    "serialization": ("bench.serialization", "serialization.json", [], ["--quick"]),
    "convergence": ("bench.convergence", "convergence.json", [], ["--quick"]),
    "fanout": ("bench.xds_fanout", "xds_fanout.json", [], ["--streams", "1", "100"]),
    "streams": ("bench.xds_streams", "xds_streams.json", [], ["--routes", "1000", "--streams", "50"]),
    "dataplane": ("bench.dataplane", "dataplane.json", [], ["--quick"]),
    "lua_usage": ("bench.lua_usage", "lua_usage.json", [], ["--quick"]),
    "inference_routing": ("bench.inference_routing", "inference_routing.json", [], ["--quick"]),
    "prefix_affinity": ("bench.prefix_affinity", "prefix_affinity.json", [], ["--quick"]),
}
TIMEOUT_S = {"compile": 1800, "serialization": 3600, "convergence": 7200, "fanout": 1800, "streams": 1800, "dataplane": 1800,
             "lua_usage": 1800, "inference_routing": 5400, "prefix_affinity": 1800}

Row = tuple[str, str, str, str]  # section, case, modelroute, vs alternative


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:,.1f} ms"


def compile_rows(data: dict[str, Any]) -> list[Row]:
    return [("compile", f"{r['model_routes']:,} routes+servers",
             f"full {_ms(r['full_compile_s']['median'])}, incremental {_ms(r['incremental_compile_s']['median'])}",
             f"peak {r['peak_traced_mb']:.0f} MB (traced)") for r in data["rows"]]


def serialization_rows(data: dict[str, Any]) -> list[Row]:
    t = data["total"]
    n = f"{data['model_routes']:,} routes"
    routes = next(r for r in data["by_type"] if r["type"] == "RouteConfiguration")

    def versus(seconds: float | None, ratio: float | None) -> str:
        return f"envoy-data-plane {_ms(seconds)} ({ratio:,.0f}x)" if seconds and ratio else "not run"

    return [
        ("serialization", f"{n}: all resources, serialize", f"upb {_ms(t['upb_serialize_s'])}",
         versus(t["edp_serialize_s"], t["ratio_serialize"])),
        ("serialization", f"{n}: RouteConfiguration, serialize", f"upb {_ms(routes['upb_serialize_s']['median'])}",
         versus(routes["edp_serialize_s"] and routes["edp_serialize_s"]["median"], routes["ratio_serialize"])),
        ("serialization", f"{n}: build from dict + serialize", f"upb {_ms(t['upb_dict_build_serialize_s'])}",
         versus(t["edp_dict_build_serialize_s"], t["ratio_dict_build_serialize"])
         + (f"; betterproto failed for {', '.join(t['dict_failed_types'])}" if t["dict_failed_types"] else "")),
    ]


def convergence_rows(data: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    for r in data["rows"]:
        ratio = r.get("ratio_p50_vs_modelroute_file_edit")
        rows.append(("edit → served", f"{r['routes']:,} routes, {r['system']}",
                     f"p50 {r['p50']:,.1f} / p95 {r['p95']:,.1f} / p99 {r['p99']:,.1f} ms (n={r['n']})",
                     "" if r["system"] == "modelroute (file edit)" or ratio is None
                     else f"{ratio:,.2f}x modelroute's p50"))
    for e in data.get("errors", []):
        rows.append(("edit → served", f"{e['routes']} routes, {e['system']}", "FAILED", e["error"][:120]))
    return rows


def fanout_rows(data: dict[str, Any]) -> list[Row]:
    return [("fan-out", f"{r['streams']:,} ADS streams", f"all ACKed in {_ms(r['all_acked_s'])}",
             f"CPU {r['cpu_s']:.3f} s, RSS {r['rss_mb']:.0f} MB") for r in data["results"]]


def streams_rows(data: dict[str, Any]) -> list[Row]:
    return [("push per stream", f"{r['routes']:,} routes, {r['ads']}: {r['change']}",
             f"{r['per_stream_ms']:.3f} ms a stream, {r['all_streams_s']:.3f} s for {r['streams']:,}",
             f"first stream {r['first_stream_ms']:.1f} ms, {r['bytes_per_stream'] / 1024:,.0f} KB a stream")
            for r in data["rows"]]


def dataplane_rows(data: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    for r in data["rows"]:
        rows.append(("data plane", f"{r['routes']:,} routes: added latency",
                     f"p50 +{r['added_p50_us']['median']:.0f} us, p99 +{r['added_p99_us']['median']:.0f} us",
                     f"direct p50 {r['direct_p50_us']['median']:.0f} us, via Envoy {r['envoy_p50_us']['median']:.0f} us"
                     f" ({r['rounds']} rounds)"))
        if "bare_added_p50_us" in r:  # runs before 29 Nov afternoon had no bare Envoy
            rows.append(("data plane", f"{r['routes']:,} routes: a bare Envoy beside it",
                         f"p50 +{r['bare_added_p50_us']['median']:.0f} us, p99 +{r['bare_added_p99_us']['median']:.0f} us",
                         f"Envoy CPU a request: bare {r['bare_cpu_us_per_request']['median']:.0f} us, compiled "
                         f"{r['envoy_cpu_us_per_request']['median']:.0f} us"))
        s = r["split"]
        rows.append(("data plane", f"{r['routes']:,} routes: 80/20 split",
                     f"{s['blue_share'] * 100:.2f}% of {s['requests']:,}", f"{s['deviation_sigmas']:+.2f} sigma"))
    return rows


def lua_usage_rows(data: dict[str, Any]) -> list[Row]:
    r = data["row"]
    return [("streamed usage (Lua)", "plain request: added latency",
             f"p50 {r['added_p50_us']:+.0f} us, p99 {r['added_p99_us']:+.0f} us",
             f"without {r['plain_p50_us_without']:.0f} us, with {r['plain_p50_us_with']:.0f} us ({r['rounds']} rounds)"),
            ("streamed usage (Lua)", f"streamed answer, {r['tokens']} chunks: added time",
             f"{r['added_stream_us']:+.0f} us ({r['added_stream_us'] / r['tokens']:+.1f} us a chunk)",
             f"without {r['stream_p50_us_without']:.0f} us, with {r['stream_p50_us_with']:.0f} us")]


def inference_rows(data: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    for key, r in data["phases"].items():
        hit = f", prefix-cache hits {r['prefix_cache_hit_rate']:.0%}" if r["prefix_cache_hit_rate"] is not None else ""
        rows.append(("inference routing", f"{r['skew']}: {r['policy']}",
                     f"p50 {r['latency_p50_ms']:,.0f} / p99 {r['latency_p99_ms']:,.0f} ms, TTFT p50 "
                     f"{r['ttft_p50_ms']:,.0f} / p99 {r['ttft_p99_ms']:,.0f} ms",
                     f"replica 0 {r['replica0_share']:.0%}{hit}, load avg ≤ {r['loadavg_max']}, "
                     f"{r['rounds']} rounds"))
    return rows


def prefix_affinity_rows(data: dict[str, Any]) -> list[Row]:
    cost, stable = data["filter_cost"], data["hash_stability"]
    return [("prefix affinity", "Lua prefix hash + MAGLEV vs least request: added latency",
             f"p50 {cost['added_p50_us']:+.0f} us, p99 {cost['added_p99_us']:+.0f} us", f"{cost['rounds']} rounds"),
            ("prefix affinity", "one of 4 replicas removed: other keys moved",
             f"MAGLEV {stable['MAGLEV']['moved_share_of_unaffected_keys']:.1%}",
             f"RING_HASH {stable['RING_HASH']['moved_share_of_unaffected_keys']:.1%}")]


def target_rows(results: dict[str, dict[str, Any]]) -> list[Row]:
    """The speed targets other issues set, checked against this run's numbers (only the
    ones this run measured; a --quick run measures smaller sizes, so most say n/a)."""
    rows: list[Row] = []

    def add(target: str, value: float | None, limit: float, shown: str) -> None:
        verdict = "n/a (size not run)" if value is None else ("met" if value <= limit else "MISSED")
        rows.append(("targets", target, shown if value is not None else "-", verdict))

    compiled = results.get("compile")
    if compiled:
        row = next((r for r in compiled["rows"] if r["model_routes"] == 10_000), None)
        value = row["full_compile_s"]["median"] if row else None
        add("#3 full compile 10,000 < 1 s", value, 1.0, _ms(value) if value else "")
    conv = results.get("convergence")
    if conv:
        for system in ("modelroute (file edit)", "modelroute (ControlLoop)"):
            row = next((r for r in conv["rows"] if r["routes"] == 10_000 and r["system"] == system), None)
            value = row["p50"] if row else None
            add(f"#4 edit→served p50 < 25 ms at 10,000 ({system})", value, 25.0, f"{value:,.1f} ms" if value else "")
        worst = max((r["max"] for r in conv["rows"] if r["system"] == "modelroute (file edit)"), default=None)
        add("#5 file edit served within 1 s (worst edit, all sizes)", worst, 1000.0, f"{worst:,.1f} ms" if worst else "")
    fan = results.get("fanout")
    if fan:
        row = next((r for r in fan["results"] if r["streams"] == 1000), None)
        value = row["all_acked_s"] if row else None
        add("#4 1,000 ADS streams all ACKed < 2 s", value, 2.0, _ms(value) if value else "")
    dp = results.get("dataplane")
    if dp:
        worst = max((abs(r["split"]["deviation_sigmas"]) for r in dp["rows"]), default=None)
        add("#5 80/20 split within 3 sigma", worst, 3.0, f"|{worst:.2f}| sigma" if worst is not None else "")
    inference = results.get("inference_routing")
    if inference:
        for skew, label in (("slow replica", "#18 loadAware p99 ≤ 0.7 × leastRequest, slow replica"),
                            ("none", "#18 loadAware p99 ≤ leastRequest, no skew")):
            check = inference["targets"].get(skew)
            value = check["loadAware_p99_over_leastRequest_p99"] if check else None
            add(label, value, check["target_at_most"] if check else 0.0, f"{value:.2f}x" if value is not None else "")
    return rows


ROWS: dict[str, Callable[[dict[str, Any]], list[Row]]] = {
    "compile": compile_rows, "serialization": serialization_rows, "convergence": convergence_rows,
    "fanout": fanout_rows, "streams": streams_rows, "dataplane": dataplane_rows, "lua_usage": lua_usage_rows,
    "inference_routing": inference_rows, "prefix_affinity": prefix_affinity_rows,
}


def run_part(name: str, quick: bool, extra: list[str]) -> dict[str, Any]:
    module, _, full_args, quick_args = PARTS[name]
    args = [sys.executable, "-m", module, *(quick_args if quick else full_args), *extra]
    print(f"\n=== {name}: {' '.join(args[1:])}", flush=True)
    started = time.monotonic()
    try:
        done = subprocess.run(args, cwd=REPO, timeout=TIMEOUT_S[name])
        ok = done.returncode == 0
        error = None if ok else f"exit status {done.returncode}"
    except subprocess.TimeoutExpired:
        ok, error = False, f"timed out after {TIMEOUT_S[name]} s"
    return {"ok": ok, "error": error, "seconds": round(time.monotonic() - started, 1),
            "command": "python -m " + " ".join(args[2:])}


def table(rows: list[Row]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(4)] if rows else [0] * 4
    header = ("part", "case", "modelroute", "vs alternative / notes")
    widths = [max(w, len(h)) for w, h in zip(widths, header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, few repeats")
    parser.add_argument("--only", nargs="+", choices=list(PARTS), default=list(PARTS))
    parser.add_argument("--summarize", action="store_true",
                        help="run nothing: rebuild the table and summary.json from the results already written")
    args = parser.parse_args(argv)
    if args.summarize:
        runs = {name: {"ok": (RESULTS / PARTS[name][1]).exists(), "error": None, "seconds": None,
                       "command": "(not run: --summarize)"} for name in args.only}
    else:
        runs = {name: run_part(name, args.quick, []) for name in args.only}
    rows: list[Row] = []
    results: dict[str, dict[str, Any]] = {}
    for name, status in runs.items():
        path = RESULTS / PARTS[name][1]
        if not status["ok"] or not path.exists():
            rows.append((name, "-", "FAILED", status["error"] or "no result file"))
            continue
        results[name] = json.loads(path.read_text())
        rows += ROWS[name](results[name])
    rows += target_rows(results)
    text = table(rows)
    print("\n" + text)
    write_result("summary", {"benchmark": "summary", "quick": args.quick, "machine": machine(),
                             "command": "python -m bench" + (" --quick" if args.quick else ""),
                             "parts": runs, "table": [list(r) for r in rows], "text": text})
    print(f"\nwrote bench/results/summary.json ({'quick' if args.quick else 'full'} run)")
    return 0 if all(s["ok"] for s in runs.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
