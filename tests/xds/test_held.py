"""`Held` (what a client holds of one type, over a shared base) behaves as the plain
dict it replaces, whatever mix of sets, deletions, updates and rebases it went through,
starting empty or from a reconnect's claim left unread (`Held.claimed`)."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from envoy.service.discovery.v3 import discovery_pb2

from tests.xds.client import res
from xds_server.held import Held
from xds_server.types import CLUSTER

NAMES = ("a", "b", "c", "d")
VERSIONS = ("1", "2")

name = st.sampled_from(NAMES)
selection = st.dictionaries(name, st.sampled_from(VERSIONS))  # name → content of a resource
step = st.one_of(
    st.tuples(st.just("set"), name, st.sampled_from(VERSIONS)),
    st.tuples(st.just("delete"), name),
    st.tuples(st.just("update"), st.dictionaries(name, st.sampled_from(VERSIONS))),
    st.tuples(st.just("rebase"), selection),
    st.tuples(st.just("compare"), selection),  # whole, as `Snapshot.claim` would be
)


def claim(versions: dict[str, str], **fields: Any) -> discovery_pb2.DeltaDiscoveryRequest:
    return discovery_pb2.DeltaDiscoveryRequest(initial_resource_versions=versions, **fields)


def check(held: Held, model: dict[str, str]) -> None:
    assert dict(held) == model and len(held) == len(model)
    for n in NAMES:
        assert (n in held) == (n in model)
        assert held.get(n) == model.get(n) == held.lookup()(n)
        assert held.get(n, "none") == model.get(n, "none")
    # `holds_exactly` and `within` against the same, fewer, more and other versions
    probes = [model, *({k: v for k, v in model.items() if k != n} for n in model),
              *({**model, n: "1"} for n in NAMES), *({**model, n: "other"} for n in NAMES)]
    for probe in probes:
        assert held.holds_exactly(probe) == (probe == model), probe
        assert held.within(probe) == (model.keys() <= probe.keys()), probe


@settings(max_examples=800, deadline=None)
@given(st.one_of(st.none(), selection), st.lists(step, max_size=25), st.booleans())
def test_held_is_the_dict_it_stands_for(claimed: dict[str, str] | None, steps: list[tuple[Any, ...]],
                                        check_each: bool) -> None:
    """(`check` reads everything, a claim included: with `check_each` off, every step but
    the last meets whatever the steps before left, an unread claim too.)"""
    if claimed is None:
        held, model = Held(), {}
    else:
        held, model = Held.claimed(claim(claimed, type_url="t", resource_names_subscribe=["a"])), dict(claimed)
    for op in steps:
        if op[0] == "set":
            held[op[1]] = model[op[1]] = op[2]
        elif op[0] == "delete":
            if op[1] in model:
                del held[op[1]], model[op[1]]
            else:
                assert held.pop(op[1], None) is None
        elif op[0] == "update":
            held.update(op[1])
            model.update(op[1])
        elif op[0] == "compare":
            assert held.holds_exactly(op[1], claim(op[1])) == (op[1] == model)
        else:
            resources = {n: res(CLUSTER, n, content) for n, content in op[1].items()}
            held.rebase(resources)
            model = {n: r.version for n, r in resources.items()}
        if check_each:
            check(held, model)
    check(held, model)


def test_a_claim_compared_whole_is_not_read_and_is_stripped_of_the_rest_of_its_request() -> None:
    request = claim({"a": "1", "b": "2"}, type_url="t", response_nonce="n", resource_names_subscribe=["a"])
    held = Held.claimed(request)
    assert held.unread and len(held) == 2 and held
    assert not held.holds_exactly({"a": "1", "b": "3"}, claim({"a": "1", "b": "3"}))
    assert not held.unread and held == {"a": "1", "b": "2"}  # (read once found different)
    held = Held.claimed(request)
    same = claim({"b": "2", "a": "1"})
    assert held.holds_exactly({"a": "1", "b": "2"}, same) and held.unread
    assert held.holds_exactly({"a": "1", "b": "2"}, same) and held.unread  # (remembered)
    assert [d.name for d, _ in request.ListFields()] == ["initial_resource_versions"]
    assert held.within({"a": 0, "b": 0}) and not held.unread
    assert held._claim_equals is None  # (not kept alive once read: it is a snapshot's)
    held = Held.claimed(request)
    assert held.holds_exactly({"a": "1", "b": "2"}, same)
    held.rebase({n: res(CLUSTER, n, "1") for n in NAMES})
    assert held._claim_equals is None and not held.unread


def test_a_rebased_stream_shares_its_base_and_keeps_only_its_own_changes() -> None:
    base = {n: res(CLUSTER, n, "1") for n in NAMES}
    first, second = Held({"a": "x"}), Held()
    first.rebase(base)
    second.rebase(base)
    second["b"] = "changed"
    del second["c"]
    assert first["b"] == base["b"].version and second["b"] == "changed" and "c" not in second
    assert first._base is second._base is base and first._own == {} and second._own == {"b": "changed"}
