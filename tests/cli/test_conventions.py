"""Issue #17, CLI: what users tripped on — `--version`, a bad `--log-level`, `compile` of a
missing path, problems printed twice, `validate -o json`, and `status` of a directory
nobody serves any more."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from controller.local.instance import InstanceConflict, InstanceLock, holder
from controller.local.status_view import StatusFile, status_path
from modelroute.cli import main
from tests.support import REPO

BROKEN_REF = """\
apiVersion: networking.matrixinfer.ai/v1alpha1
kind: ModelRoute
metadata: {name: r}
spec:
  routes:
  - destination: {modelServerRef: {name: nope}}
"""


def test_version_comes_from_package_metadata(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out == f"modelroute {metadata.version('modelroute')}\n"


@pytest.mark.parametrize("command", ["up", "serve"])
def test_an_unknown_log_level_is_a_usage_error_not_a_traceback(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([command, "--log-level", "verbose"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'verbose' (choose from 'debug', 'info', 'warning', 'error')" in err
    assert "Traceback" not in err


def test_compile_of_a_missing_path_prints_no_document_and_validates_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compile", "-f", "/no/such/dir", "--validate"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == ["/no/such/dir: no such file or directory",
                                "modelroute compile: no objects found in /no/such/dir"]


def test_compile_prints_each_problem_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "r.yaml").write_text(BROKEN_REF)
    assert main(["compile", "-f", str(tmp_path)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err == ["ModelRoute default/r: spec.routes[0].destination.modelServerRef: ModelServer default/nope "
                   "not found [Accepted=False, ResolvedRefs=False, ModelNotFound]"]


def test_validate_json_for_ci(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: networking.matrixinfer.ai/v1alpha1\nkind: ModelServer\nmetadata: {name: x}\n"
                   "spec: {modelInferRef: {name: i}, service: {port: 70000}, routing: {path: /x}}\n")
    assert main(["validate", "-f", str(bad), "-o", "json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["valid"] is False and doc["objects"] == []
    assert doc["errors"] == [{"file": str(bad), "index": 1, "kind": "ModelServer", "namespace": "default", "name": "x",
                              "path": "spec.service.port", "rule": "70000 must be at most 65535",
                              "message": f"{bad}#1: ModelServer default/x: spec.service.port: 70000 must be at most 65535"}]
    assert main(["validate", "-f", str(REPO / "examples" / "quickstart"), "-o", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["valid"] is True and doc["errors"] == []
    assert doc["summary"] == "6 objects valid (2 ModelServer, 1 ModelRoute, 2 ModelInfer, 1 Model)"
    assert {"kind": "ModelRoute", "namespace": "default", "name": "llama"} in doc["objects"]


def _last_status(directory: Path) -> None:
    StatusFile(status_path(directory / ".modelroute"), now=lambda: "2026-01-01T00:00:00Z").write(statuses={})


def test_status_of_a_directory_nobody_serves_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _last_status(tmp_path)
    assert main(["status", "--dir", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert out.startswith(f"NOT RUNNING: no `modelroute up` serves {tmp_path}; below is the last status it wrote "
                          "(2026-01-01T00:00:00Z), nothing in it is live.\nupdated 2026-01-01T00:00:00Z")
    assert main(["status", "--dir", str(tmp_path), "-o", "json"]) == 1
    assert json.loads(capsys.readouterr().out)["running"] is False

    lock = InstanceLock(tmp_path / ".modelroute", directory=tmp_path)
    lock.acquire()
    try:
        assert main(["status", "--dir", str(tmp_path)]) == 0
        assert capsys.readouterr().out.startswith("updated 2026-01-01T00:00:00Z")
        with pytest.raises(InstanceConflict, match=f"process {os.getpid()}"):
            InstanceLock(tmp_path / ".modelroute", directory=tmp_path).acquire()
    finally:
        lock.release()
    assert holder(tmp_path / ".modelroute") is None


def test_the_lock_dies_with_its_holder(tmp_path: Path) -> None:
    """SIGKILL leaves no chance to clean up: the kernel releases the lock anyway."""
    run_dir = tmp_path / ".modelroute"
    code = ("import sys, time; from pathlib import Path; from controller.local.instance import InstanceLock; "
            "InstanceLock(Path(sys.argv[1]), directory=Path('.')).acquire(); print('locked', flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(run_dir)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "locked\n"
        assert holder(run_dir) == proc.pid
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    assert holder(run_dir) is None
