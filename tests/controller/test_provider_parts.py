"""A state's parts and `PartsFilter`: what is picked per part, and kept while the very
same part comes again, equals filtering the whole world each time (random sequences of
states sharing parts); only new parts are looked at."""

from __future__ import annotations

from hypothesis import given, settings, strategies as st

from controller.provider import PartsFilter, ProviderState
from routing_engine.api.resources import ModelInfer, Resource


def infer(name: str, replicas: int) -> ModelInfer:
    return ModelInfer.model_validate({"apiVersion": "workload.matrixinfer.ai/v1alpha1", "kind": "ModelInfer",
                                      "metadata": {"name": name, "namespace": "default"},
                                      "spec": {"modelRef": {"name": "m"}, "replicas": replicas}})


POOL = tuple(infer(f"i{k}", 1 + k % 3) for k in range(8))
# A few parts that come back as the very same tuples, and fresh ones made each time.
SHARED = tuple(tuple(POOL[k:k + n]) for k in range(0, 8, 2) for n in (1, 2, 3))
parts = st.sampled_from(SHARED) | st.lists(st.sampled_from(POOL), max_size=3).map(tuple)


def wanted(obj: Resource) -> bool:
    return isinstance(obj, ModelInfer) and obj.spec.replicas != 2


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(parts, max_size=5), min_size=1, max_size=12))
def test_picked_per_part_equals_filtering_the_world(states: list[list[tuple[Resource, ...]]]) -> None:
    looked_at: list[Resource] = []

    def counting(obj: Resource) -> bool:
        looked_at.append(obj)
        return wanted(obj)

    pick = PartsFilter(counting)
    before: list[tuple[Resource, ...]] = []
    for cut in states:
        state = ProviderState.of_parts(cut)
        looked_at.clear()
        assert pick(state.split()) == tuple(o for o in state.objects if wanted(o))
        again = {id(p) for p in before}
        assert len(looked_at) == sum(len(p) for p in state.split() if id(p) not in again)
        before = list(state.split())


def test_a_state_without_parts_is_one_part() -> None:
    state = ProviderState(POOL[:3])
    assert state.split() == (POOL[:3],)
    assert ProviderState().split() == ()
    assert ProviderState.of_parts([(), POOL[:2], POOL[2:3]]).objects == POOL[:3]
    assert ProviderState.of_parts([POOL[:2]]) == ProviderState(POOL[:2])  # parts are no content
