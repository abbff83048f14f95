"""The Kubernetes layer stays thin: `controller/kubernetes/client.py` is the only module
in the project's packages that imports `kubernetes` or makes HTTP client calls, so
everything else works on plain dicts and is testable without a cluster."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.support import REPO

PACKAGES = ("routing_engine", "xds_server", "controller", "modelroute")
ADAPTER = REPO / "controller" / "kubernetes" / "client.py"


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def sources() -> list[Path]:
    return [p for pkg in PACKAGES if (REPO / pkg).is_dir() for p in sorted((REPO / pkg).rglob("*.py"))]


def test_only_the_adapter_imports_kubernetes() -> None:
    importers = {p for p in sources() if any(m == "kubernetes" or m.startswith("kubernetes.")
                                             for m in imported_modules(p))}
    assert importers == {ADAPTER}


def test_only_the_adapter_is_an_http_client_in_the_kubernetes_layer() -> None:
    layer = REPO / "controller" / "kubernetes"
    clients = {p for p in layer.glob("*.py") if "ClientSession" in p.read_text()}
    assert clients == {ADAPTER}
    aiohttp_users = {p.name for p in layer.glob("*.py")
                     if any(m == "aiohttp" or m.startswith("aiohttp.") for m in imported_modules(p))}
    assert aiohttp_users == {"client.py", "webhook_server.py"}  # the webhook serves, it never calls
