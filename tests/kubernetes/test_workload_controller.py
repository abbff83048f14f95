"""The workload controller's loop against the fake API: a ModelInfer applied becomes a
Deployment; Deployment progress reaches the ModelInfer status; a Model change rolls the
Deployment; an AutoscalingPolicy creates the HPA; API failures are retried."""

from __future__ import annotations

import asyncio

from controller.kubernetes.client import KubeClient
from kit.backoff import Backoff
from controller.kubernetes.resources import AUTOSCALING_POLICY, DEPLOYMENT, HPA, MODEL, MODEL_INFER, SERVICE
from controller.kubernetes.informer import Informer
from controller.kubernetes.workload_controller import WorkloadController
from tests.kubernetes.fakeapi import ApiFailure, FakeKubeApi
from tests.kubernetes.helpers import eventually, model, model_infer, running


def image(fake_api: FakeKubeApi) -> str | None:
    deploy = fake_api.read(DEPLOYMENT, "default", "llama-infer")
    return deploy["spec"]["template"]["spec"]["containers"][0]["image"] if deploy else None


def phase(fake_api: FakeKubeApi) -> str | None:
    obj = fake_api.read(MODEL_INFER, "default", "llama-infer")
    return ((obj or {}).get("status") or {}).get("phase")


async def test_model_infer_to_running(api: KubeClient, fake_api: FakeKubeApi) -> None:
    async with running(WorkloadController(api).run()):
        await api.create(MODEL, model())
        await api.create(MODEL_INFER, model_infer(resources={"limits": {"nvidia.com/gpu": 1}}))
        await eventually(lambda: image(fake_api) == "vllm/vllm-openai:v0.6.0", what="the Deployment")
        await eventually(lambda: phase(fake_api) == "Pending", what="Pending")
        # The Deployment controller reports the pods ready.
        fake_api.write(DEPLOYMENT, "default", "llama-infer", lambda d: d.update(status={
            "replicas": 1, "readyReplicas": 1}))
        await eventually(lambda: phase(fake_api) == "Running", what="Running")
        # A new model image rolls the Deployment.
        await api.patch(MODEL, "default", "llama-7b", {"spec": {"runtime": {"image": "vllm/vllm-openai:v0.7.0"}}})
        await eventually(lambda: image(fake_api) == "vllm/vllm-openai:v0.7.0", what="the new image")
        await api.create(AUTOSCALING_POLICY, {
            "apiVersion": "registry.matrixinfer.ai/v1alpha1", "kind": "AutoscalingPolicy",
            "metadata": {"name": "llama-scaling", "namespace": "default"},
            "spec": {"targetRef": {"apiVersion": "workload.matrixinfer.ai/v1alpha1", "kind": "ModelInfer",
                                   "name": "llama-infer"}, "minReplicas": 1, "maxReplicas": 5}})
        await eventually(lambda: fake_api.read(HPA, "default", "llama-infer") is not None, what="the HPA")


async def test_failed_reconcile_is_retried_after_backoff(api: KubeClient, fake_api: FakeKubeApi) -> None:
    fake_api.seed(model())
    delays: list[float] = []

    async def quick_sleep(seconds: float) -> None:
        delays.append(seconds)
        await asyncio.sleep(0)

    def refuse() -> None:  # the first Deployment create fails as if the API server hiccuped
        raise ApiFailure(500, "InternalError", "etcd leader changed")

    fake_api.before("POST", DEPLOYMENT, refuse)
    controller = WorkloadController(api, backoff=Backoff(initial=0.25), sleep=quick_sleep, resync_period=None)
    async with running(controller.run()):
        await api.create(MODEL_INFER, model_infer())
        await eventually(lambda: image(fake_api) is not None, what="the Deployment after a retry")
    assert delays == [0.25]


async def test_a_restart_over_up_to_date_model_infers_makes_no_call_per_object(api: KubeClient,
                                                                               fake_api: FakeKubeApi) -> None:
    """Children and ModelInfers are read from the informers: a controller restarting over
    ModelInfers whose Deployment, Service and status are already right lists and watches,
    and reads or writes nothing per object (it made ~4 GETs each: ~140 s at 10,000)."""
    fake_api.seed(model())
    names = [f"infer-{i}" for i in range(5)]
    for name in names:
        fake_api.seed(model_infer(name))
    first = WorkloadController(api, resync_period=None)
    async with running(first.run()):
        await eventually(lambda: len(first.results) == len(names) and all(
            r.deployment == "unchanged" and not r.status_written for r in first.results.values()), what="settled")
    fake_api.requests.clear()
    second = WorkloadController(api, resync_period=None)
    async with running(second.run()):
        await eventually(lambda: len(second.results) == len(names), what="every ModelInfer reconciled")
    assert {(r.deployment, r.service, r.hpa, r.status_written) for r in second.results.values()} == {
        ("unchanged", "unchanged", "absent", False)}
    per_object = [(method, path) for method, path in fake_api.requests
                  if any(path.endswith(f"/{n}") or f"/{n}/" in path for n in names)]
    assert per_object == []
    assert fake_api.requests  # it did list and watch


async def test_children_changed_or_deleted_by_hand_are_put_back(api: KubeClient, fake_api: FakeKubeApi) -> None:
    async with running(WorkloadController(api, resync_period=None).run()):
        await api.create(MODEL, model())
        await api.create(MODEL_INFER, model_infer())
        await eventually(lambda: image(fake_api) == "vllm/vllm-openai:v0.6.0", what="the Deployment")
        fake_api.write(DEPLOYMENT, "default", "llama-infer",
                       lambda d: d["spec"]["template"]["spec"]["containers"][0].update(image="someone/else:1"))
        await eventually(lambda: image(fake_api) == "vllm/vllm-openai:v0.6.0", what="the image put back")
        fake_api.remove(SERVICE, "default", "llama-infer")
        await eventually(lambda: fake_api.read(SERVICE, "default", "llama-infer") is not None,
                         what="the Service created again")


async def test_shared_informers_are_subscribed_to_not_listed_again(api: KubeClient, fake_api: FakeKubeApi) -> None:
    """With the provider's informers shared, ModelInfers and Models are listed and watched
    once; a controller that stops (leadership lost) unsubscribes, and one that starts
    again is handed every cached ModelInfer (a new leader reconciles them all)."""
    fake_api.seed(model())
    fake_api.seed(model_infer())
    shared = {MODEL_INFER: Informer(api, MODEL_INFER), MODEL: Informer(api, MODEL)}
    async with running(shared[MODEL_INFER].run()), running(shared[MODEL].run()):
        for _ in range(2):
            controller = WorkloadController(api, resync_period=None, shared=shared)
            assert controller.infers is shared[MODEL_INFER] and controller.models is shared[MODEL]
            async with running(controller.run()):
                await eventually(lambda: ("default", "llama-infer") in controller.results, what="a reconcile")
                assert image(fake_api) == "vllm/vllm-openai:v0.6.0"
            assert not shared[MODEL_INFER]._subscribers
    collections = [p for m, p in fake_api.requests if m == "GET" and p.rsplit("/", 1)[-1] in ("modelinfers", "models")]
    assert len(collections) == 4  # a list and a watch of each kind, for both controllers


async def test_a_new_term_never_deletes_from_the_last_terms_cache(api: KubeClient, fake_api: FakeKubeApi) -> None:
    """One controller leading twice: between its terms a user takes our HPA over (no
    controller reference) and switches autoscaling off. The new term must read before it
    deletes: the user's HPA stays."""
    fake_api.seed(model())
    fake_api.seed(model_infer(autoscaling={"enabled": True, "minReplicas": 1, "maxReplicas": 4}))
    shared = {MODEL_INFER: Informer(api, MODEL_INFER), MODEL: Informer(api, MODEL)}
    async with running(shared[MODEL_INFER].run()), running(shared[MODEL].run()):
        controller = WorkloadController(api, resync_period=None, shared=shared)
        async with running(controller.run()):
            await eventually(lambda: controller.hpas.get("default", "llama-infer") is not None, what="our HPA")
        fake_api.write(HPA, "default", "llama-infer", lambda h: h["metadata"].update(ownerReferences=[]))
        await api.patch(MODEL_INFER, "default", "llama-infer", {"spec": {"autoscaling": None}})
        await eventually(lambda: "autoscaling" not in shared[MODEL_INFER].get("default", "llama-infer")["spec"],
                         what="the edit seen")
        async with running(controller.run()):
            await eventually(lambda: (r := controller.results.get(("default", "llama-infer"))) is not None
                             and r.hpa == "absent" and controller.hpas.synced.is_set(), what="the new term's reconcile")
    assert fake_api.read(HPA, "default", "llama-infer") is not None


async def test_a_model_infer_made_again_is_recounted_though_its_generation_is_the_same(api: KubeClient) -> None:
    """Deleted and created again while a watch was down, a ModelInfer comes back from the
    re-list as MODIFIED at generation 1, as before: its uid tells it apart."""
    from controller.kubernetes.informer import Change

    controller = WorkloadController(api, resync_period=None)
    doc = {**model_infer(), "metadata": {"name": "llama-infer", "namespace": "default", "uid": "u1", "generation": 1}}
    await controller._on_infer(Change("ADDED", doc))
    controller._registry_dirty.clear()
    await controller._on_infer(Change("MODIFIED", {**doc, "status": {"phase": "Running"}}))
    assert not controller._registry_dirty.is_set()  # a status write
    again = {**model_infer(model_name="other"), "metadata": {**doc["metadata"], "uid": "u2"}}
    await controller._on_infer(Change("MODIFIED", again))
    assert controller._registry_dirty.is_set()


def test_valid_models_are_parsed_again_only_when_their_spec_changed() -> None:
    """A ModelInfer status write hands the informer a new object each time: the Model
    statuses are recomputed after each, and must not re-parse 10,000 ModelInfers."""
    from controller.kubernetes.workload_controller import ValidCache
    from routing_engine.api.resources import ModelInfer

    cache = {("default", "a"): model_infer("a"), ("default", "b"): model_infer("b"),
             ("default", "bad"): model_infer("bad", replicas="many")}
    valid = ValidCache(ModelInfer)
    first = valid.valid(cache)
    assert [i.metadata.name for i in first] == ["a", "b"] and valid.generation == 1

    cache[("default", "a")] = {**cache[("default", "a")], "status": {"phase": "Running"}}  # a status write
    again = valid.valid(cache)
    assert again[0] is first[0] and again[1] is first[1] and valid.generation == 1

    cache[("default", "b")] = model_infer("b", replicas=3)  # a spec change
    changed = valid.valid(cache)
    assert changed[0] is first[0] and changed[1] is not first[1] and changed[1].spec.replicas == 3
    assert valid.generation == 2

    del cache[("default", "a")]
    assert [i.metadata.name for i in valid.valid(cache)] == ["b"] and valid.generation == 3
