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


def test_a_reference_to_an_invalid_object_says_it_is_invalid_not_missing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The ModelServer and the Secret exist in the files but are refused: whatever refers to
    them says so (ValidationFailed), pointing at their own errors, printed above."""
    manifest = tmp_path / "m.yaml"
    manifest.write_text("""\
apiVersion: networking.matrixinfer.ai/v1alpha1
kind: ModelServer
metadata: {name: bad}
spec: {modelInferRef: {name: mi}, service: {port: 8080}, routing: {path: /v1/bad, timeout: "30"}}
---
apiVersion: networking.matrixinfer.ai/v1alpha1
kind: ModelServer
metadata: {name: keyed}
spec:
  modelInferRef: {name: mi}
  service: {port: 8080}
  routing: {path: /v1/keyed}
  authentication: {enabled: true, type: apiKey, config: {secretName: keys}}
---
apiVersion: networking.matrixinfer.ai/v1alpha1
kind: ModelRoute
metadata: {name: r}
spec: {path: /v1/r, routes: [{destination: {modelServerRef: {name: bad}}}]}
---
apiVersion: v1
kind: Secret
metadata: {name: keys}
data: {alice: "!!!not-base64!!!"}
""")
    assert main(["compile", "-f", str(manifest)]) == 1
    lines = capsys.readouterr().err.splitlines()
    assert f"{manifest}#1: ModelServer default/bad: spec.routing.timeout: \"30\" is not a duration (use 30s)" in lines
    assert any(line.startswith(f"{manifest}#4: Secret default/keys: data.alice: is not base64") for line in lines)
    assert ("ModelRoute default/r: spec.routes[0].destination.modelServerRef: ModelServer default/bad exists but is "
            "invalid (its own errors say why) [Accepted=False, ResolvedRefs=False, ValidationFailed]") in lines
    assert ("ModelServer default/keyed: spec.authentication.config.secretName: Secret default/keys exists but is "
            "invalid (its own errors say why) [Accepted=False, ValidationFailed]") in lines
    assert not any("not found" in line and "ModelInfer" not in line for line in lines)


def test_manifest_errors_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: networking.matrixinfer.ai/v1alpha1\nkind: ModelServer\nmetadata: {name: x}\nspec: {}\n")
    assert main(["compile", "-f", str(bad)]) == 1
    assert "ModelServer default/x" in capsys.readouterr().err
