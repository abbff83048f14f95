"""`modelroute compile`: document on stdout, problems on stderr, exit codes, --validate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from modelroute.cli import main
from tests.support import REPO

QUICKSTART = REPO / "examples" / "quickstart"


def test_compile_quickstart_prints_a_bootstrap_envoy_accepts(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compile", "-f", str(QUICKSTART), "--validate"]) == 0
    out, err = capsys.readouterr()
    document = yaml.safe_load(out)
    clusters = {c["name"] for c in document["static_resources"]["clusters"]}
    assert {"modelserver/default/llama-v1", "modelserver/default/llama-v2", "modelroute_admin"} <= clusters
    assert document["admin"]["address"]["socket_address"]["address"] == "127.0.0.1"
    assert "envoy --mode validate: OK" in err


def test_json_output_and_sidecar_role(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compile", "-f", str(QUICKSTART), "-o", "json", "--role", "sidecar"]) == 0
    document = json.loads(capsys.readouterr().out)
    (listener,) = document["static_resources"]["listeners"]
    assert listener["address"]["socket_address"]["address"] == "127.0.0.1"


def test_unresolved_reference_exits_1_but_still_prints_the_rest(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    case = REPO / "tests" / "golden" / "missing-reference" / "input.yaml"
    assert main(["compile", "-f", str(case)]) == 1
    out, err = capsys.readouterr()
    assert "ModelRoute default/dangling" in err and "ModelNotFound" in err and "nowhere" in err
    assert yaml.safe_load(out)["static_resources"]["listeners"]


def test_manifest_errors_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: networking.matrixinfer.ai/v1alpha1\nkind: ModelServer\nmetadata: {name: x}\nspec: {}\n")
    assert main(["compile", "-f", str(bad)]) == 1
    assert "ModelServer default/x" in capsys.readouterr().err
