"""`modelroute validate`: exit codes, one line per error, a summary when all is well."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from modelroute.cli import main
from tests.support import REPO

BROKEN = """\
apiVersion: networking.matrixinfer.ai/v1alpha1
kind: ModelServer
metadata: {name: llama-server}
spec:
  modelInferRef: {name: infer}
  service: {port: 70000}
  routing: {path: /v1/models/llama, timeout: "30"}
---
kind: Pod
"""


def test_valid_directory_prints_a_summary(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "-f", str(REPO / "examples" / "quickstart")]) == 0
    out = capsys.readouterr().out
    assert out == "6 objects valid (2 ModelServer, 1 ModelRoute, 2 ModelInfer, 1 Model)\n"


def test_several_paths_and_repeated_flags(capsys: pytest.CaptureFixture[str]) -> None:
    seeds = REPO / "examples" / "seeds"
    code = main(["validate", "-f", str(seeds / "model.yaml"), str(seeds / "model-infer.yaml"), "-f", str(seeds / "secret-jwks.yaml")])
    assert code == 0
    assert capsys.readouterr().out == "3 objects valid (1 ModelInfer, 1 Model, 1 Secret)\n"


def test_errors_one_per_line_and_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(BROKEN)
    assert main(["validate", "-f", str(bad)]) == 1
    captured = capsys.readouterr()
    assert captured.out.splitlines() == [
        f"{bad}#1: ModelServer default/llama-server: spec.service.port: 70000 must be at most 65535",
        f'{bad}#1: ModelServer default/llama-server: spec.routing.timeout: "30" is not a duration (use 30s)',
        f"{bad}#2: Pod: kind: \"Pod\" is not supported (supported: ModelServer (networking.matrixinfer.ai/v1alpha1), "
        "ModelRoute (networking.matrixinfer.ai/v1alpha1), ModelInfer (workload.matrixinfer.ai/v1alpha1), "
        "Model (registry.matrixinfer.ai/v1alpha1), AutoscalingPolicy (registry.matrixinfer.ai/v1alpha1), Secret (v1))",
    ]
    assert captured.err == "modelroute validate: 3 error(s)\n"


def test_one_bad_file_fails_the_run_but_all_are_checked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "a.yaml").write_text("a: [")
    assert main(["validate", "-f", str(tmp_path), str(REPO / "examples" / "quickstart")]) == 1
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 and out[0].startswith(f"{tmp_path / 'a.yaml'}: not valid YAML")


def test_nothing_to_validate_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "-f", str(tmp_path)]) == 1
    assert "no objects found" in capsys.readouterr().err
    assert main(["validate", "-f", str(tmp_path / "missing.yaml")]) == 1
    assert capsys.readouterr().out == f"{tmp_path / 'missing.yaml'}: no such file or directory\n"


def test_stdin_and_console_script(tmp_path: Path) -> None:
    """The real entry point, as a user runs it: no traceback, stdin with `-f -`."""
    proc = subprocess.run(
        [sys.executable, "-m", "modelroute.cli", "validate", "-f", "-"],
        input=BROKEN, capture_output=True, text=True, timeout=60, cwd=REPO,
    )
    assert proc.returncode == 1
    assert proc.stdout.splitlines()[0].startswith("<stdin>#1: ModelServer default/llama-server: spec.service.port")
    assert "Traceback" not in proc.stderr
    proc = subprocess.run(
        [sys.executable, "-m", "modelroute.cli", "validate"], capture_output=True, text=True, timeout=60, cwd=REPO
    )
    assert proc.returncode == 2 and "-f" in proc.stderr and "Traceback" not in proc.stderr
