"""The benchmark harness must keep working (issue #9): the compile and serialization
parts run end to end at tiny sizes, write their JSON, and the summary table reads it.
Numbers are not asserted (speed targets live in bench/, not in unit tests)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import bench._common
import bench.compile
from bench import __main__ as bench_main
from bench import serialization

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
