"""The provider's per-object state equals the one-pass definition (`state.build_state`)
on random sequences of changes: objects added, edited (valid or not), written to only in
their status, deleted; EndpointSlices moving between ModelInfers; Secrets coming and
going without events. And what the per-object work is for: an unchanged object keeps
its identity, an edit replaces one part, and a state with nothing modified is the last
one again."""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from controller.kubernetes.informer import CacheKey, cache_key
from controller.kubernetes.state import build_state
from controller.kubernetes.state_keeper import PART_SIZE, StateKeeper
from controller.provider import ProviderState
from tests.kubernetes.helpers import endpoint_slice, model_infer, route, server

Obj = dict[str, Any]
NAMES = ("a", "b", "c")
NAMESPACES = ("default", "team")


def _doc(kind: str, name: str, namespace: str, variant: int) -> Obj:
    """A document of `kind`; variant 3 is invalid where the kind can be."""
    if kind == "ModelServer":
        doc = server(f"s-{name}", infer=f"i-{name}", path=f"/v1/models/{name}{variant}")
        if variant == 2:
            doc["spec"]["tls"] = {"enabled": True, "secretName": f"cert-{name}"}
        if variant == 3:
            doc["spec"]["routing"]["timeout"] = "30"  # not a duration
    elif kind == "ModelInfer":
        doc = model_infer(f"i-{name}", model_name="llama", replicas=variant + 1)
    elif kind == "ModelRoute":
        doc = route(f"r-{name}", path=f"/v1/r/{name}", server=f"s-{NAMES[variant % len(NAMES)]}")
        if variant == 3:
            doc["spec"]["routes"][0]["weight"] = 150
    elif kind == "EndpointSlice":
        owner = NAMES[variant % len(NAMES)]
        doc = endpoint_slice(f"sl-{name}", service=f"i-{owner}", port=8000 + variant,
                             ready={f"10.0.0.{variant}": variant != 1, "10.0.1.1": True})
    else:  # Secret
        doc = {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
               "metadata": {"name": f"cert-{name}"}, "data": {"tls.crt": f"{variant}", "tls.key": "k"}}
    doc["metadata"]["namespace"] = namespace
    return doc


KINDS = ("ModelServer", "ModelInfer", "ModelRoute", "EndpointSlice", "Secret")
change = st.tuples(st.sampled_from(("put", "put", "status", "delete")), st.sampled_from(KINDS),
                   st.sampled_from(NAMES), st.sampled_from(NAMESPACES), st.integers(0, 3))


class World:
    """The informers' caches, changed as a watch would change them."""

    def __init__(self) -> None:
        self.caches: dict[str, dict[CacheKey, Obj]] = {kind: {} for kind in KINDS}
        self.version = 0

    def apply(self, op: str, kind: str, name: str, namespace: str, variant: int) -> CacheKey | None:
        """The key changed (None: nothing happened)."""
        key = cache_key(_doc(kind, name, namespace, 0))
        cache = self.caches[kind]
        self.version += 1
        if op == "delete":
            return key if cache.pop(key, None) is not None else None
        if op == "status":
            if key not in cache:
                return None
            doc = copy.deepcopy(cache[key])
            doc["status"] = {"phase": f"p{self.version}"}
        else:
            doc = _doc(kind, name, namespace, variant)
        doc["metadata"]["resourceVersion"] = str(self.version)
        cache[key] = doc
        return key

    def definition(self) -> ProviderState:
        engine = [d for kind in KINDS if kind != "EndpointSlice" for d in self.caches[kind].values()]
        return build_state(engine, self.caches["EndpointSlice"].values())


def _same(kept: ProviderState, defined: ProviderState) -> None:
    assert kept.objects == defined.objects
    assert [o.key for o in kept.objects] == [o.key for o in defined.objects]
    assert dict(kept.endpoints) == dict(defined.endpoints)
    assert list(kept.endpoints) == list(defined.endpoints)  # in key order, as the definition has them
    assert sorted(map(str, kept.errors)) == sorted(map(str, defined.errors))
    assert tuple(o for part in kept.parts for o in part) == kept.objects


def _state(keeper: StateKeeper, world: World) -> ProviderState:
    engine_caches = {kind: cache for kind, cache in world.caches.items() if kind != "Secret"}
    return keeper.state(engine_caches, list(world.caches["Secret"].values()))


@settings(max_examples=150, deadline=None)
@given(st.lists(st.lists(change, min_size=1, max_size=6), min_size=1, max_size=8))
def test_the_kept_state_is_the_defined_one_after_any_changes(batches: list[list[tuple[str, str, str, str, int]]]
                                                             ) -> None:
    world, keeper = World(), StateKeeper()
    for batch in batches:
        for op, kind, name, namespace, variant in batch:
            key = world.apply(op, kind, name, namespace, variant)
            if key is not None and kind != "Secret":  # Secrets: no events, compared whole
                keeper.changed(kind, key)
        _same(_state(keeper, world), world.definition())


def test_secret_references_follow_the_servers() -> None:
    world, keeper = World(), StateKeeper()
    for name, variant in (("a", 2), ("b", 2), ("c", 0)):
        keeper.changed("ModelServer", world.apply("put", "ModelServer", name, "default", variant) or ("", ""))
    keeper.refresh(world.caches)
    assert keeper.secret_refs() == {"default": frozenset({"cert-a", "cert-b"})}
    keeper.changed("ModelServer", world.apply("put", "ModelServer", "a", "default", 0) or ("", ""))
    keeper.changed("ModelServer", world.apply("delete", "ModelServer", "b", "default", 0) or ("", ""))
    keeper.refresh(world.caches)
    assert keeper.secret_refs() == {}


def test_an_edit_costs_one_part_and_unchanged_objects_keep_their_identity() -> None:
    world, keeper = World(), StateKeeper()
    count = 3 * PART_SIZE
    for n in range(count):
        doc = route(f"r{n:05d}", path=f"/v1/r/{n}")
        world.caches["ModelRoute"][cache_key(doc)] = doc
        keeper.changed("ModelRoute", cache_key(doc))
    first = _state(keeper, world)
    assert len(first.parts) == 3 and len(first.objects) == count

    assert _state(keeper, world) is first  # nothing changed: the same state

    edited = route("r00300", path="/v1/r/edited")  # in the second part
    world.caches["ModelRoute"][cache_key(edited)] = edited
    keeper.changed("ModelRoute", cache_key(edited))
    status_only = {**world.caches["ModelRoute"][("default", "r00005")], "status": {"phase": "Active"}}
    world.caches["ModelRoute"][("default", "r00005")] = status_only
    keeper.changed("ModelRoute", ("default", "r00005"))
    second = _state(keeper, world)
    assert second.parts[0] is first.parts[0] and second.parts[2] is first.parts[2]
    assert second.parts[1] is not first.parts[1]
    assert second.objects[5] is first.objects[5]  # a status write: the very same model
    assert second.objects[300].spec.path == "/v1/r/edited"  # type: ignore[attr-defined]
    assert all(a is b for n, (a, b) in enumerate(zip(first.objects, second.objects)) if n != 300)
    _same(second, world.definition())
