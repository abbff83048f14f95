"""Shared by the issue #9 benchmark modules: where results go, how samples are summarized,
the machine description, and the separate venvs for the alternatives we compare with."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
RESULTS = BENCH / "results"
VENVS = BENCH / ".venvs"


def write_result(name: str, data: dict[str, Any]) -> Path:
    """bench/results/<name>.json, written via a .tmp file so a killed run never leaves a
    half-written result."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    tmp.replace(path)
    return path


def spread(samples: Sequence[float]) -> dict[str, float]:
    """Median and spread of timing samples (same unit as the input)."""
    a = np.asarray(samples, dtype=float)
    return {"n": int(a.size), "median": float(np.median(a)), "min": float(a.min()), "max": float(a.max()),
            "p95": float(np.percentile(a, 95))}


def percentiles(samples: Sequence[float]) -> dict[str, float]:
    a = np.asarray(samples, dtype=float)
    return {"n": int(a.size), "p50": round(float(np.percentile(a, 50)), 2), "p95": round(float(np.percentile(a, 95)), 2),
            "p99": round(float(np.percentile(a, 99)), 2), "max": round(float(a.max()), 2),
            "min": round(float(a.min()), 2)}


def machine() -> dict[str, Any]:
    model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem_kb = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kb = int(line.split()[1])
    return {"nproc": os.cpu_count(), "cpu_model": model, "mem_gb": round(mem_kb / 2**20, 1),
            "loadavg": os.getloadavg(), "python": platform.python_version(), "kernel": platform.release()}


def venv_python(name: str, packages: Sequence[str], *, timeout: float = 900) -> Path:
    """bench/.venvs/<name>/bin/python with `packages` installed (created on first use with
    the project's interpreter: `python -m venv` + `pip install`). Raises RuntimeError with
    pip's output tail when the install fails."""
    venv = VENVS / name
    python = venv / "bin" / "python"
    marker = venv / ".installed"
    if python.exists() and marker.exists() and marker.read_text().split() == sorted(packages):
        return python
    VENVS.mkdir(parents=True, exist_ok=True)
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    done = subprocess.run([str(python), "-m", "pip", "install", "-q", *packages], capture_output=True, text=True,
                          timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"pip install {' '.join(packages)} into {venv} failed:\n{done.stdout[-2000:]}"
                           f"{done.stderr[-2000:]}")
    marker.write_text("\n".join(sorted(packages)) + "\n")
    return python
