"""The benchmark harness must keep working (issue #9): the compile and serialization
parts run end to end at tiny sizes, write their JSON, and the summary table reads it.
Numbers are not asserted (speed targets live in bench/, not in unit tests)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import bench._common
import bench.compile
import bench.xds_streams
from bench import __main__ as bench_main
from bench import serialization
from routing_engine.translate.builtin import builtin

EDP_READY = (bench._common.VENVS / "edp" / ".installed").exists()


@pytest.fixture
def results(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Results go to a temporary directory, never over bench/results/."""
    monkeypatch.setattr(bench._common, "RESULTS", tmp_path)
    monkeypatch.setattr(bench.compile, "RESULTS", tmp_path)
    monkeypatch.setattr(bench_main, "RESULTS", tmp_path)
    return tmp_path


def test_compile_and_serialization_parts_run_and_summarize(results: Path) -> None:
    bench.compile.main(["--sizes", "8", "--repeat", "1", "--entries", "50"])
    compiled = json.loads((results / "compile.json").read_text())
    assert compiled["rows"][0]["model_routes"] == 8 and compiled["rows"][0]["envoy_routes"] > 0
    assert compiled["big_route"][0]["entries"] == 50
    assert compiled["rows"][0]["server_add_loop_s"]["median"] > 0  # a ModelServer added to a compiled world

    # The envoy-data-plane side runs when its venv exists (made by the first full run:
    # `python -m bench.serialization`); our side, the JSON and the table always run.
    args = ["--routes", "8", "--repeat", "1", "--edp-repeat", "1"] + ([] if EDP_READY else ["--no-alternative"])
    serialization.main(args)
    data = json.loads((results / "serialization.json").read_text())
    assert data["model_routes"] == 8
    types = {r["type"] for r in data["by_type"]}
    assert {"RouteConfiguration", "Cluster", "Listener", "ClusterLoadAssignment"} <= types
    assert data["total"]["upb_serialize_s"] > 0
    if EDP_READY:
        assert data["round_trip_equal"] is True and data["total"]["ratio_serialize"] > 0
    else:
        assert data["total"]["edp_serialize_s"] is None

    rows = bench_main.compile_rows(compiled) + bench_main.serialization_rows(data)
    text = bench_main.table(rows)
    assert "8 routes+servers" in text and "RouteConfiguration, serialize" in text


def test_push_per_stream_part_runs_for_both_protocols_and_summarizes(results: Path) -> None:
    bench.xds_streams.main(["--routes", "8", "--streams", "3"])
    data = json.loads((results / "xds_streams.json").read_text())
    assert {(r["ads"], r["change"]) for r in data["rows"]} == {
        (ads, change) for ads in ("sotw", "delta")
        for change in ("connect (all at once)", "restart: all reconnect", "one route re-weighted",
                       "one ModelServer added")}
    # what each stream is sent: the one changed table, or with SotW every cluster again;
    # nothing to an Envoy reconnecting with what it holds (delta: an empty answer to a
    # wildcard type it holds none of, which a fresh Envoy's initialization waits for)
    by = {(r["ads"], r["change"]): r["bytes_per_stream"] for r in data["rows"]}
    assert 0 < by["delta", "one route re-weighted"] < by["sotw", "one ModelServer added"] < by["sotw", "connect (all at once)"]
    assert by["sotw", "restart: all reconnect"] == 0 and by["delta", "restart: all reconnect"] < 200
    assert "push per stream" in bench_main.table(bench_main.streams_rows(data))


def test_inference_workload_is_the_same_for_every_policy_and_bursts() -> None:
    """bench.inference_routing compares policies on one schedule: it must come from the
    seed alone, and its bursts must be denser than the rest."""
    from bench._inference_client import schedule
    from bench.inference_routing import WORKLOAD

    spec = {**WORKLOAD, "duration_s": 30.0, "url": "http://x"}
    first, again = schedule(spec), schedule(spec)
    assert [(t, b) for t, b, _ in first] == [(t, b) for t, b, _ in again] and first
    in_burst = sum(1 for t, _, _ in first if t % spec["burst_every_s"] < spec["burst_s"])
    burst_rate = in_burst / (3 * spec["burst_s"])
    rest_rate = (len(first) - in_burst) / (30 - 3 * spec["burst_s"])
    assert burst_rate > 1.3 * rest_rate
    kinds = [k for _, _, k in first]
    assert 0 < kinds.count("long") < kinds.count("short")
    assert all(b["stream"] and b["messages"][0]["role"] == "system" for _, b, _ in first)


def test_inference_targets_are_checked_from_the_medians() -> None:
    from bench.inference_routing import table

    def row(skew: str, policy: str, p99: float) -> dict[str, object]:
        return {"skew": skew, "policy": policy, "latency_ms": {"p50": 1.0, "p99": p99}, "ttft_ms": {"p50": 1, "p99": 2},
                "errors": 0, "prefix_cache_hit_rate": 0.2, "replica_share": {"0": 1, "1": 3},
                "loadavg_before": [1.0], "loadavg_after": [2.0]}

    rows = [row("slow replica", "leastRequest", 1000), row("slow replica", "loadAware", 600),
            row("slow replica", "loadAware", 800), row("none", "leastRequest", 500), row("none", "loadAware", 510)]
    found = table(rows)
    assert found["phases"]["slow replica/loadAware"]["latency_p99_ms"] == 700
    assert found["targets"]["slow replica"] == {"loadAware_p99_over_leastRequest_p99": 0.7, "target_at_most": 0.7,
                                                "met": True}
    assert found["targets"]["none"]["met"] is False


@pytest.mark.slow
def test_dataplane_runs_with_extra_servers_and_measures_envoy_cpu(results: Path) -> None:
    """Real Envoy and two mock engines, tiny counts: every row served 200s (the load
    generator fails the run otherwise) and carries Envoy's CPU per request."""
    import bench.dataplane

    out = bench.dataplane.main(["--routes", "4", "--servers", "2", "5", "--rounds", "1", "--count", "20",
                                "--warmup", "5", "--split-requests", "40"])
    assert [(r["routes"], r["servers"]) for r in out["rows"]] == [(4, 2), (4, 5)]
    assert all(r["envoy_cpu_us_per_request"]["median"] >= 0 for r in out["rows"])
    # The bare Envoy ran beside it, the same rounds (its own requests all 200 as well).
    assert all(r["per_round"][0]["bare"]["count"] == 20 and "config_over_bare_cpu_us" in r for r in out["rows"])
    assert json.loads((results / "dataplane.json").read_text())["rows"][1]["servers"] == 5

    # A feature left out is left out of the translator's features (the others all stay), and the row says so.
    kept = {p.name for p in bench.dataplane.plugins_without(["usage"]) or ()}
    assert "usage" not in kept and kept | {"usage"} == {p.name for p in builtin()}
    out = bench.dataplane.main(["--routes", "3", "--without", "usage", "--rounds", "1", "--count", "10",
                                "--warmup", "2", "--split-requests", "20"])
    assert out["rows"][0]["without"] == ["usage"]
    with pytest.raises(SystemExit, match="no built-in feature nonsense"):
        bench.dataplane.main(["--routes", "3", "--without", "nonsense"])


def _http_filters(bootstrap: dict[str, Any]) -> list[str]:
    return [f["name"] for listener in bootstrap["static_resources"]["listeners"]
            for chain in listener["filter_chains"] for f in chain["filters"][0]["typed_config"]["http_filters"]]


def test_lua_usage_compares_a_config_without_the_usage_reader_to_one_with_it() -> None:
    """It measured a second copy of the reader once the reader became built in (#17)."""
    import bench.lua_usage
    from bench import _stack
    from routing_engine.api.resources import ObjectKey
    from routing_engine.translate import usage
    from routing_engine.world import BackendEndpoint

    endpoints = {ObjectKey("ModelInfer", _stack.NS, f"infer-{c}"): (BackendEndpoint("127.0.0.1", 9),)
                 for c in ("blue", "green")}
    plain, with_lua = bench.lua_usage.configs(_stack.base_docs(3, 10_000), endpoints, 10_001)
    reader = [usage.REQUEST_BYTES_FILTER, usage.USAGE_FILTER]
    assert not set(reader) & set(_http_filters(plain))
    names = _http_filters(with_lua)
    assert [n for n in names if n in reader] == reader and names[-1] == "envoy.filters.http.router"


@pytest.mark.slow
def test_lua_usage_runs_and_measures_envoy_cpu(results: Path) -> None:
    import bench.lua_usage

    out = bench.lua_usage.main(["--rounds", "1", "--count", "20", "--warmup", "5", "--streams", "3", "--tokens", "4"])
    [measured] = out["row"]["per_round"]
    for mode in ("without", "with"):  # requests and streams went through both Envoys, CPU read for each
        assert measured[mode]["p50_us"] > 0 and measured[mode]["stream_p50_us"] > 0, measured
        assert measured[mode]["cpu_us_per_request"] >= 0, measured
    assert json.loads((results / "lua_usage.json").read_text())["row"] == json.loads(json.dumps(out["row"]))


@pytest.mark.slow
def test_kubectl_edits_through_kubernetes_mode_are_measured(results: Path) -> None:
    """The Kubernetes-mode convergence system end to end at a tiny size: the fake API
    server in its own process, Kubernetes mode, a real Envoy, kubectl-like patches."""
    import bench.convergence

    bench.convergence.main(["--routes", "5", "--edits", "2", "--systems", "kubernetes"])
    data = json.loads((results / "convergence.json").read_text())
    assert data["errors"] == []
    (row,) = data["rows"]
    assert row["system"] == "modelroute (kubectl, Kubernetes mode)" and row["n"] == 2 and row["routes"] == 5


@pytest.mark.slow
def test_an_envoy_starting_against_the_compile_world_is_timed() -> None:
    """`bench/xds_convergence.py --start-servers` at a tiny size: a real Envoy launched
    against bench/worlds.py's world (a failover pair per route) becomes LIVE and serves
    the sampled servers' paths from the mock engines."""
    import asyncio

    import bench.xds_convergence

    row = asyncio.run(bench.xds_convergence.servers_start(12))
    assert (row["servers"], row["clusters"], row["failover_clusters"]) == (12, 24, 12)
    assert 0 < row["start_to_live_ms"] <= row["start_to_all_served_ms"], row
