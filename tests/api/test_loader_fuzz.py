"""Whatever bytes land in a watched folder, the loader answers with objects and errors,
never an exception: random YAML/JSON structures, random text, and random one-field
mutations of the seed examples."""

from __future__ import annotations

import copy
import json
import os
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from routing_engine.api.errors import ManifestError
from routing_engine.api.loader import load_text, parse_document
from routing_engine.api.resources import Resource
from tests.support import REPO

SEED_DOCS = [
    doc
    for path in sorted((REPO / "examples" / "seeds").glob("*.yaml"))
    for doc in yaml.safe_load_all(path.read_text())
]


def _keys(node: Any) -> set[str]:
    if isinstance(node, dict):
        return set(node) | {k for v in node.values() for k in _keys(v)}
    if isinstance(node, list):
        return {k for v in node for k in _keys(v)}
    return set()


# Field names of the API, so random mappings often get past the first checks.
VOCABULARY = sorted({"items", "List"} | {k for doc in SEED_DOCS for k in _keys(doc)})

SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
    | st.sampled_from(["ModelServer", "ModelRoute", "v1", "Secret", "List", "30s", "0s", "/v1/x", "a-b"])
)
KEYS = st.text(max_size=12) | st.sampled_from(VOCABULARY)
JSON_LIKE = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=5),
    max_leaves=30,
)
SETTINGS = settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "300")), deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _assert_well_formed(result: tuple[list[Resource], list[ManifestError]], source: str) -> None:
    objects, errors = result
    assert all(isinstance(o, Resource) for o in objects)
    for error in errors:
        assert error.file == source
        assert error.rule
        line = str(error)
        assert "\n" not in line and line.startswith(source)
        assert "please report" not in line  # the loader's last-resort guard never fired


@SETTINGS
@given(docs=st.lists(JSON_LIKE, min_size=1, max_size=3))
def test_random_structures_as_yaml(docs: list[Any]) -> None:
    text = yaml.safe_dump_all(docs)
    _assert_well_formed(load_text(text, "fuzz.yaml"), "fuzz.yaml")


@SETTINGS
@given(doc=JSON_LIKE)
def test_random_structures_as_json(doc: Any) -> None:
    text = json.dumps(doc)
    _assert_well_formed(load_text(text, "fuzz.json"), "fuzz.json")


@SETTINGS
@given(text=st.text(max_size=200))
def test_random_text(text: str) -> None:
    _assert_well_formed(load_text(text, "noise.yaml"), "noise.yaml")
    _assert_well_formed(load_text(text, "noise.json"), "noise.json")


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, prefix + (key,))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += _paths(value, prefix + (i,))
    return found


@SETTINGS
@given(data=st.data())
def test_random_mutations_of_seed_examples(data: st.DataObject) -> None:
    doc = copy.deepcopy(data.draw(st.sampled_from(SEED_DOCS)))
    for _ in range(data.draw(st.integers(min_value=1, max_value=3))):
        path = data.draw(st.sampled_from(_paths(doc)[1:]))
        parent: Any = doc
        for part in path[:-1]:
            parent = parent[part]
        if data.draw(st.booleans()) and isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent[path[-1]] = data.draw(JSON_LIKE)
        if not _paths(doc)[1:]:
            break
    obj, errors = parse_document(doc, source="mutant", index=1)
    assert (obj is None) == bool(errors)
    for error in errors:
        assert error.file == "mutant" and error.rule and "\n" not in str(error)
        assert "please report" not in error.rule
    _assert_well_formed(load_text(yaml.safe_dump(doc), "mutant.yaml"), "mutant.yaml")
