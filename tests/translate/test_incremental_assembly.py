"""The translator's output assembly: patched part by part, it equals a one-shot merge."""

from __future__ import annotations

from collections.abc import Hashable, Mapping

from hypothesis import given, settings
from hypothesis import strategies as st

from routing_engine.api.resources import ObjectKey
from routing_engine.incremental.assembly import Assembly, Batch
from routing_engine.translate.xds import CLUSTER, ROUTE, TYPE_ORDER
from routing_engine.world import EnvoyResource

_TYPES = (CLUSTER, ROUTE)
_NAMES = ("a", "b", "c", "d", "e")
_OWNERS = tuple(ObjectKey("ModelRoute", "default", n) for n in ("x", "y", "z"))


def _resource(type_url: str, name: str, body: int) -> EnvoyResource:
    return EnvoyResource(type_url, name, f"{name}:{body}".encode(), f"v{body}")


def _reference(parts: Mapping[Hashable, Batch]) -> tuple[dict[str, dict[str, EnvoyResource]], dict]:  # type: ignore[type-arg]
    """The definition: every part's resources added in order, a name added twice taking
    the later resource and the union of owners; both levels sorted."""
    resources: dict[str, dict[str, EnvoyResource]] = {t: {} for t in TYPE_ORDER}
    owners: dict[tuple[str, str], tuple[ObjectKey, ...]] = {}
    for batch in parts.values():
        for t, found in batch.resources.items():
            for name, resource in found.items():
                resources[t][name] = resource
                before = owners.get((t, name), ())
                owners[(t, name)] = tuple(sorted({*before, *batch.owners[(t, name)]}))
    return ({t: dict(sorted(found.items())) for t, found in resources.items()}, dict(sorted(owners.items())))


_ENTRY = st.tuples(st.sampled_from(_TYPES), st.sampled_from(_NAMES), st.integers(0, 3),
                   st.lists(st.sampled_from(_OWNERS), min_size=1, max_size=2, unique=True))


def _batch(entries: list[tuple[str, str, int, list[ObjectKey]]]) -> Batch:
    batch = Batch()
    for t, name, body, owners in entries:
        batch.add(_resource(t, name, body), tuple(sorted(owners)))
    return batch


def _patched(old: Batch, entries: list[tuple[str, str, int, list[ObjectKey]]], removed: list[tuple[str, str]]) -> Batch:
    """`old` with some names set and some removed, saying which (as the translator's
    scoped layouts, backends and failover clusters do)."""
    resources = {t: dict(found) for t, found in old.resources.items()}
    owners = dict(old.owners)
    changed: dict[str, list[str]] = {}
    for t, name in removed:
        if name in resources.get(t, {}):
            del resources[t][name], owners[(t, name)]
            changed.setdefault(t, []).append(name)
    for t, name, body, names_owners in entries:
        resources.setdefault(t, {})[name] = _resource(t, name, body)
        owners[(t, name)] = tuple(sorted(names_owners))
        changed.setdefault(t, []).append(name)
    return Batch.of(resources, owners, old, changed)


_STEP = st.lists(st.tuples(st.integers(0, 3), st.sampled_from(["keep", "new", "patch", "drop"]),
                           st.lists(_ENTRY, max_size=4),
                           st.lists(st.tuples(st.sampled_from(_TYPES), st.sampled_from(_NAMES)), max_size=2)),
                 min_size=1, max_size=4)


@settings(max_examples=300, deadline=None)
@given(st.lists(_STEP, min_size=1, max_size=6))
def test_assembled_runs_equal_a_one_shot_merge(runs: list[list[tuple[int, str, list, list]]]) -> None:  # type: ignore[type-arg]
    assembly = Assembly()
    parts: dict[Hashable, Batch] = {}
    handed: tuple[Mapping, Mapping] | None = None  # type: ignore[type-arg]
    for run in runs:
        parts = dict(parts)
        for key, action, entries, removed in run:
            if action == "new":
                parts[key] = _batch(entries)
            elif action == "patch" and key in parts:
                parts[key] = _patched(parts[key], entries, removed)
            elif action == "drop":
                parts.pop(key, None)
        ordered = {k: parts[k] for k in sorted(parts)}
        expected = _reference(ordered)
        resources, owners = assembly.assemble(ordered)
        assert list(resources) == list(TYPE_ORDER)
        assert {t: list(m.items()) for t, m in resources.items()} == {t: list(m.items()) for t, m in expected[0].items()}
        assert list(owners.items()) == list(expected[1].items())
        if handed is not None:  # a mapping whose content did not change is handed out again as the same object
            for t in TYPE_ORDER:
                if dict(resources[t]) == dict(handed[0][t]):
                    assert resources[t] is handed[0][t]
            if dict(owners) == dict(handed[1]):
                assert owners is handed[1]
        handed = (resources, owners)


def test_a_patched_part_costs_its_changed_names() -> None:
    """A part that says what it changed is not scanned: only those names are looked at
    (here a name the hint leaves out keeps last run's resource, which proves it)."""
    assembly = Assembly()
    first = _batch([(ROUTE, "a", 0, [_OWNERS[0]]), (ROUTE, "b", 0, [_OWNERS[0]])])
    assembly.assemble({"t": first})
    second = Batch.of({ROUTE: {"a": _resource(ROUTE, "a", 1), "b": _resource(ROUTE, "b", 1)}},
                      dict(first.owners), first, {ROUTE: ["a"]})
    resources, _ = assembly.assemble({"t": second})
    assert resources[ROUTE]["a"].body == b"a:1"
    assert resources[ROUTE]["b"].body == b"b:0"  # not named as changed: not looked at
    assert second.base is None and second.changed is None  # the hint is dropped: no chain of batches
