"""The packages type-check: `mypy --strict` over them (pyproject.toml [tool.mypy]) is clean."""

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("kit", "routing_engine", "xds_server", "controller", "modelroute")


def test_mypy_strict_is_clean() -> None:
    mypy = Path(sys.executable).with_name("mypy")
    # The incremental cache (.mypy_cache, git-ignored) makes a re-run take seconds; a cold
    # run of the whole tree takes 15-30 s on two cores.
    result = subprocess.run([str(mypy), "--cache-dir", str(REPO / ".mypy_cache")], cwd=REPO,
                            capture_output=True, text=True, timeout=280)
    assert result.returncode == 0, result.stdout + result.stderr
    checked = re.search(r"Success: no issues found in (\d+) source files", result.stdout)
    assert checked is not None, result.stdout + result.stderr
    # Every module of ours was checked (a config that checks nothing also "succeeds"); mypy
    # also counts the folders without __init__.py it walked (modelroute/static/...).
    sources = sum(1 for package in PACKAGES for _ in (REPO / package).rglob("*.py"))
    assert int(checked.group(1)) >= sources, result.stdout
