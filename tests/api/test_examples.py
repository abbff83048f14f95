"""The shipped examples are the first thing a user copies: each must load without errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from routing_engine.api.loader import load_manifests
from tests.support import REPO

EXAMPLE_FILES = sorted((REPO / "examples" / "seeds").glob("*.yaml")) + sorted(
    (REPO / "examples" / "quickstart").glob("*.yaml")
) + sorted((REPO / "examples" / "inference-routing").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_example_loads_without_errors(path: Path) -> None:
    objects, errors = load_manifests([path])
    assert [str(e) for e in errors] == []
    assert objects, f"{path} holds no objects"


def test_seed_examples_cover_every_kind() -> None:
    objects, _ = load_manifests([REPO / "examples" / "seeds"])
    assert {o.KIND for o in objects} == {
        "ModelServer",
        "ModelRoute",
        "ModelInfer",
        "Model",
        "AutoscalingPolicy",
        "Secret",
    }


def test_quickstart_is_the_documented_ab_setup() -> None:
    objects, errors = load_manifests([REPO / "examples" / "quickstart"])
    assert errors == []
    by_kind: dict[str, list[str]] = {}
    for obj in objects:
        by_kind.setdefault(obj.KIND, []).append(obj.metadata.name)
    assert by_kind == {
        "Model": ["llama"],
        "ModelInfer": ["llama-v1", "llama-v2"],
        "ModelServer": ["llama-v1", "llama-v2"],
        "ModelRoute": ["llama"],
    }
    route = next(o for o in objects if o.KIND == "ModelRoute")
    weights = [r.weight for r in route.spec.routes if not r.match.headers]
    assert weights == [80, 20]
    assert route.spec.routes[0].match.headers["x-variant"].exact == "v2"
    assert route.spec.fallback is not None
