"""The provider against the fake API: first snapshot only after every informer listed,
route changes and EndpointSlice changes republished, invalid objects reported and left
out, status-only writes not republished."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from controller.kubernetes.client import KubeClient
from controller.kubernetes.provider import KubernetesProvider
from controller.kubernetes.state import build_state, endpoints_from_slices
from controller.provider import ProviderState
from controller.kubernetes.resources import ENDPOINT_SLICE, MODEL_ROUTE
from routing_engine.api.resources import ObjectKey
from routing_engine.world import BackendEndpoint
from tests.kubernetes.fakeapi import FakeKubeApi
from tests.kubernetes.helpers import endpoint_slice, eventually, model, model_infer, route, running, server
from tests.support import record_freezes

INFER = ObjectKey("ModelInfer", "default", "llama-infer")


def labelled(slice_: dict) -> dict:
    slice_["metadata"]["labels"]["workload.matrixinfer.ai/modelinfer"] = "llama-infer"
    return slice_


class Published:
    def __init__(self) -> None:
        self.queue: asyncio.Queue[ProviderState] = asyncio.Queue()

    async def __call__(self, state: ProviderState) -> None:
        self.queue.put_nowait(state)

    async def next(self, timeout: float = 5.0) -> ProviderState:
        return await asyncio.wait_for(self.queue.get(), timeout)


@pytest.fixture
async def provider(api: KubeClient, fake_api: FakeKubeApi) -> AsyncIterator[tuple[KubernetesProvider, Published]]:
    for doc in (model(), model_infer(), server("llama-server", infer="llama-infer"), route("r1", server="llama-server")):
        fake_api.seed(doc)
    published = Published()
    p = KubernetesProvider(api)
    async with running(p.run(published)):
        yield p, published


def names(snapshot: ProviderState, kind: str) -> list[str]:
    return [o.metadata.name for o in snapshot.objects if o.KIND == kind]


def test_endpoints_from_slices_merge_and_keep_readiness() -> None:
    slices = [endpoint_slice("a", service="llama-infer", ready={"10.0.0.2": True, "10.0.0.1": False}),
              endpoint_slice("b", service="llama-infer", ready={"10.0.0.3": True}, port=9000),
              endpoint_slice("c", service="not-a-model-infer", ready={"10.9.9.9": True})]
    del slices[1]["endpoints"][0]["conditions"]  # no `ready`: ready, per the EndpointSlice API
    assert endpoints_from_slices(slices, [INFER]) == {INFER: (
        BackendEndpoint("10.0.0.1", 8080, False), BackendEndpoint("10.0.0.2", 8080, True),
        BackendEndpoint("10.0.0.3", 9000, True))}


def test_invalid_object_reported_and_left_out() -> None:
    bad = route("bad")
    bad["spec"]["routes"][0]["timeout"] = "30"
    snapshot = build_state([route("good"), bad], [])
    assert names(snapshot, "ModelRoute") == ["good"]
    assert len(snapshot.errors) == 1
    assert "ModelRoute default/bad" in str(snapshot.errors[0])
    assert "spec.routes[0].timeout" in str(snapshot.errors[0])


async def test_first_snapshot_has_everything(provider: tuple[KubernetesProvider, Published]) -> None:
    _, published = provider
    first = await published.next()
    assert [o.key for o in first.objects] == sorted(
        [ObjectKey("Model", "default", "llama-7b"), ObjectKey("ModelInfer", "default", "llama-infer"),
         ObjectKey("ModelRoute", "default", "r1"), ObjectKey("ModelServer", "default", "llama-server")])
    assert first.world().objects == first.objects


async def test_route_change_publishes_new_objects(provider: tuple[KubernetesProvider, Published],
                                                  api: KubeClient) -> None:
    _, published = provider
    await published.next()
    await api.patch(MODEL_ROUTE, "default", "r1", {"spec": {"path": "/v1/changed"}})
    changed = await published.next()
    (r1,) = [o for o in changed.objects if o.KIND == "ModelRoute"]
    assert r1.spec.path == "/v1/changed"  # type: ignore[attr-defined]
    await api.create(MODEL_ROUTE, route("r2", server="llama-server"))
    assert names(await published.next(), "ModelRoute") == ["r1", "r2"]
    await api.delete(MODEL_ROUTE, "default", "r1")
    assert names(await published.next(), "ModelRoute") == ["r2"]


async def test_endpoint_slice_changes_publish_new_endpoints(provider: tuple[KubernetesProvider, Published],
                                                            api: KubeClient, fake_api: FakeKubeApi) -> None:
    _, published = provider
    assert (await published.next()).endpoints == {}
    await api.create(ENDPOINT_SLICE, labelled(endpoint_slice("llama-abc", service="llama-infer",
                                                             ready={"10.0.0.1": False})))
    assert (await published.next()).endpoints == {INFER: (BackendEndpoint("10.0.0.1", 8080, False),)}
    fake_api.write(ENDPOINT_SLICE, "default", "llama-abc",
                   lambda s: s["endpoints"][0]["conditions"].update(ready=True))
    assert (await published.next()).endpoints == {INFER: (BackendEndpoint("10.0.0.1", 8080, True),)}
    await api.delete(ENDPOINT_SLICE, "default", "llama-abc")
    assert (await published.next()).endpoints == {}


async def test_unlabelled_slices_are_not_watched(provider: tuple[KubernetesProvider, Published],
                                                 api: KubeClient) -> None:
    p, published = provider
    await published.next()
    await api.create(ENDPOINT_SLICE, endpoint_slice("kube-dns-x", service="kube-dns", ready={"10.1.1.1": True}))
    await api.patch(MODEL_ROUTE, "default", "r1", {"spec": {"path": "/v1/after"}})
    await published.next()
    assert p.slices.cache == {}


async def test_invalid_route_is_reported_while_others_stay(provider: tuple[KubernetesProvider, Published],
                                                           api: KubeClient) -> None:
    _, published = provider
    await published.next()
    bad = route("bad", server="llama-server")
    bad["spec"]["routes"][0]["weight"] = 150
    await api.create(MODEL_ROUTE, bad)
    snapshot = await published.next()
    assert names(snapshot, "ModelRoute") == ["r1"]
    assert [e.object_key for e in snapshot.errors] == [ObjectKey("ModelRoute", "default", "bad")]


async def test_status_write_does_not_republish(provider: tuple[KubernetesProvider, Published],
                                               api: KubeClient) -> None:
    p, published = provider
    await published.next()
    written = await api.patch_status(MODEL_ROUTE, "default", "r1", {"status": {"phase": "Active"}})
    await eventually(lambda: p.informers["ModelRoute"].resource_version == written["metadata"]["resourceVersion"],
                     what="the status write to reach the informer")
    await asyncio.sleep(0.1)  # let the provider build its snapshot
    assert published.queue.empty()
    await api.patch(MODEL_ROUTE, "default", "r1", {"spec": {"path": "/v1/marker"}})
    (r1,) = [o for o in (await published.next()).objects if o.KIND == "ModelRoute"]
    assert r1.spec.path == "/v1/marker"  # type: ignore[attr-defined]


def test_unchanged_objects_keep_their_identity_across_snapshots() -> None:
    """The engine's caches work by identity: a re-list or a status write must hand back
    the same model object; a spec or annotation change a new one."""
    from controller.kubernetes.state import parse_objects

    cache: dict = {}
    first = route("a", path="/v1/a")
    (a1,), _ = parse_objects([first], cache)
    relisted = {**first, "metadata": {**first["metadata"], "resourceVersion": "999"},
                "status": {"phase": "Active"}}
    (a2,), _ = parse_objects([relisted], cache)
    assert a2 is a1
    annotated = {**first, "metadata": {**first["metadata"], "annotations": {"x": "y"}}}
    (a3,), _ = parse_objects([annotated], cache)
    assert a3 is not a1 and a3.metadata.annotations == {"x": "y"}
    assert len(cache) == 1  # only the current objects are kept


async def test_the_first_read_of_the_cluster_runs_with_the_collector_paused(
        api: KubeClient, fake_api: FakeKubeApi, monkeypatch: pytest.MonkeyPatch) -> None:
    """The first read validates every object of the cluster (30,000 at 10,000 routes),
    which all live on: the collector is paused and what it made is frozen; later reads,
    one object each, run as usual."""
    import gc

    from controller.kubernetes.state_keeper import StateKeeper

    collector_on: list[bool] = []
    refresh = StateKeeper.refresh

    def recorded(self: StateKeeper, caches: object) -> None:
        collector_on.append(gc.isenabled())
        refresh(self, caches)  # type: ignore[arg-type]
    monkeypatch.setattr(StateKeeper, "refresh", recorded)
    freezes = record_freezes(monkeypatch)
    fake_api.seed(route("r1"))
    published = Published()
    assert gc.isenabled()
    try:
        async with running(KubernetesProvider(api).run(published)):
            first = await published.next()
            assert collector_on and collector_on[0] is False
            assert freezes and not any(freezes) and gc.isenabled()  # frozen while paused
            first_reads, first_freezes = len(collector_on), len(freezes)
            await api.patch(MODEL_ROUTE, "default", "r1", {"spec": {"path": "/v1/changed"}})
            assert (await published.next()) != first
            assert collector_on[first_reads:] and all(collector_on[first_reads:])
            assert len(freezes) == first_freezes  # later reads leave the heap as it is
        assert gc.isenabled()
    finally:
        gc.unfreeze()
