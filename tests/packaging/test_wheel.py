"""Issue #17, packaging: the wheel, installed into a fresh virtual environment (not this
checkout), runs `modelroute up` on the quickstart and serves a request through Envoy —
so everything the CLI reads at run time (the Envoy bootstrap templates above all) is in
the wheel. Dependencies come from the configured package index, as for a user."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tomllib
import urllib.request
from pathlib import Path

import pytest

from tests.e2e.test_cli import alive, descendants, read_until
from tests.support import REPO, free_port, stop_process

pytestmark = pytest.mark.slow

IGNORED = shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".modelroute",
                                 ".pytest_cache", ".hypothesis")


def _run(argv: list[str], *, cwd: Path, timeout: float) -> str:
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")})
    assert done.returncode == 0, f"{' '.join(argv)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def test_the_installed_wheel_serves_the_quickstart(tmp_path: Path) -> None:
    source = tmp_path / "source"  # a clean copy: no build/ left over from an earlier build leaks in
    shutil.copytree(REPO, source, ignore=IGNORED)
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", str(source), "-w", str(tmp_path / "dist")],
         cwd=tmp_path, timeout=240)
    (wheel,) = (tmp_path / "dist").glob("modelroute-*.whl")

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], cwd=tmp_path, timeout=120)
    _run([str(venv / "bin" / "pip"), "install", "--quiet", str(wheel)], cwd=tmp_path, timeout=280)
    bin_dir = venv / "bin"
    assert {"modelroute", "kubectl-matrixinfer", "kubectl_complete-matrixinfer", "envoy"} <= {p.name for p in bin_dir.iterdir()}
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert _run([str(bin_dir / "modelroute"), "--version"], cwd=tmp_path, timeout=60) == f"modelroute {version}\n"
    site = Path(_run([str(bin_dir / "python"), "-c", "import xds_server, pathlib; "
                      "print(pathlib.Path(xds_server.__file__).parents[1])"], cwd=tmp_path, timeout=60).strip())
    assert site != REPO and site.is_relative_to(venv)  # the installed copy, not this checkout
    for template in ("gateway.yaml", "sidecar.yaml"):  # shipped, and identical to envoy/
        assert (site / "envoy" / template).read_text() == (REPO / "envoy" / template).read_text()

    directory = tmp_path / "quickstart"
    shutil.copytree(REPO / "examples" / "quickstart", directory)
    port = free_port()
    servers = directory / "model-servers.yaml"
    servers.write_text(servers.read_text().replace("port: 8080", f"port: {port}"))
    proc = subprocess.Popen([str(bin_dir / "modelroute"), "up", str(directory), "--xds-port", "0",
                             "--admin-address", "127.0.0.1:0", "--log-level", "warning"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, cwd=tmp_path, start_new_session=True,
                            env={k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")})
    children: set[int] = set()
    try:
        out = read_until(proc, "Ctrl-C to stop", timeout=90)
        assert f"http://127.0.0.1:{port}/v1/models/llama-v1" in out, out
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/models/llama/infer", data=b"{}", method="POST",
                                         headers={"content-type": "application/json"})
        with opener.open(request, timeout=10) as resp:
            assert resp.status == 200
            assert json.loads(resp.read())["served_by"]["modelinfer"] in {"llama-v1", "llama-v2"}
        # The experiment page's files are package data of the wheel.
        page = re.search(r"experiments: (http://127\.0\.0\.1:\d+/experiments)", out)
        assert page is not None, out
        for url in (page.group(1), page.group(1) + "/static/vendor/uPlot.iife.min.js"):
            with opener.open(url, timeout=10) as resp:
                assert resp.status == 200 and resp.read()
        children = descendants(proc.pid)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0
    finally:
        stop_process(proc)
        for pid in children:  # only if the test failed: never leave them running
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
