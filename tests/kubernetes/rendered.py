"""The install as `kubectl kustomize` renders it (deploy/base and each overlay), read once
per test session, with lookups the deploy tests share."""

from __future__ import annotations

import functools
import shutil
import subprocess
from typing import Any

import yaml

from tests.support import REPO

DEPLOY = REPO / "deploy"
OVERLAYS = tuple(sorted(p.name for p in (DEPLOY / "overlays").iterdir() if (p / "kustomization.yaml").exists()))
KUBECTL = shutil.which("kubectl")


@functools.cache
def render_text(path: str = "base") -> str:
    """`kubectl kustomize deploy/<path>` (e.g. "base", "overlays/cert-manager")."""
    assert KUBECTL, "kubectl is required (the project's machines have /usr/bin/kubectl)"
    done = subprocess.run([KUBECTL, "kustomize", str(DEPLOY / path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def rendered(path: str = "base") -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(render_text(path)) if d]


def by_kind(kind: str, path: str = "base") -> list[dict[str, Any]]:
    return [d for d in rendered(path) if d["kind"] == kind]


def named(kind: str, name: str, path: str = "base") -> dict[str, Any]:
    (found,) = [d for d in by_kind(kind, path) if d["metadata"]["name"] == name]
    return found


def container(deployment: str, path: str = "base") -> dict[str, Any]:
    (only,) = named("Deployment", deployment, path)["spec"]["template"]["spec"]["containers"]
    return dict(only)


def arg(container_: dict[str, Any], flag: str) -> str:
    args = list(container_.get("args") or ())
    return str(args[args.index(flag) + 1])
