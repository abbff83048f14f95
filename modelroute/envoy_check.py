"""Ask the real Envoy whether it accepts a configuration (`envoy --mode validate`).

The engine is pure, so running the binary lives here, at the edge: `modelroute compile
--validate` and the tests call it. Several documents can be checked at once; they run as
separate processes, at most `parallel` at a time (each takes ~0.5 s of one core).
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from controller.local.envoy_process import find_envoy

VALIDATE_TIMEOUT_S = 60.0


@dataclass(frozen=True, slots=True)
class EnvoyVerdict:
    ok: bool
    message: str  # Envoy's own words (its error, or "OK")


def validate(config: Mapping[str, Any], *, binary: str | None = None) -> EnvoyVerdict:
    with tempfile.TemporaryDirectory(prefix="modelroute-validate-") as tmp:
        path = Path(tmp) / "bootstrap.json"
        path.write_text(json.dumps(config), encoding="utf-8")
        try:
            proc = subprocess.run(
                [binary or find_envoy(), "--mode", "validate", "-c", str(path), "-l", "error", "--disable-hot-restart"],
                capture_output=True,
                text=True,
                timeout=VALIDATE_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return EnvoyVerdict(False, f"envoy --mode validate timed out after {VALIDATE_TIMEOUT_S:.0f}s")
    output = (proc.stdout + proc.stderr).strip()
    if proc.returncode == 0:
        return EnvoyVerdict(True, "OK")
    return EnvoyVerdict(False, output[-4000:] or f"envoy exited with {proc.returncode}")


def validate_many(configs: Sequence[Mapping[str, Any]], *, parallel: int = 2) -> list[EnvoyVerdict]:
    """Verdicts in the order of `configs`."""
    binary = find_envoy()
    with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
        return list(pool.map(lambda c: validate(c, binary=binary), configs))
