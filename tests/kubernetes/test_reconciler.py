"""ModelInfer → Deployment/Service/HPA through the fake API: created with the right GPU
resources and owners, updated only when different, conflicts retried, HPA removed when
autoscaling goes, status from the Deployment, children garbage-collected."""

from __future__ import annotations

from typing import Any

from controller.kubernetes.client import KubeClient
from controller.kubernetes.reconciler import ABSENT, ModelInferReconciler, apply, is_subset
from controller.kubernetes.resources import DEPLOYMENT, HPA, MODEL_INFER, SERVICE
from controller.kubernetes.status_writer import StatusWriter
from routing_engine.api.resources import Model, ModelInfer
from tests.kubernetes.fakeapi import FakeKubeApi
from tests.kubernetes.helpers import model, model_infer

GPU_MODEL = model(resources={"requests": {"nvidia.com/gpu": "1", "memory": "16Gi"}, "limits": {"nvidia.com/gpu": "1"}})


def seeded(fake_api: FakeKubeApi, **spec: Any) -> ModelInfer:
    return ModelInfer.model_validate(fake_api.seed(model_infer(**spec)))


def writes(fake_api: FakeKubeApi, method: str, plural: str) -> int:
    return sum(1 for m, p in fake_api.requests if m == method and f"/{plural}" in p and not p.endswith("/status"))


def test_is_subset_ignores_server_defaults_but_not_changes() -> None:
    desired = {"replicas": 1, "template": {"spec": {"containers": [{"name": "m", "image": "a"}]}}}
    defaulted = {"replicas": 1, "strategy": {"type": "RollingUpdate"},
                 "template": {"spec": {"containers": [{"name": "m", "image": "a", "imagePullPolicy": "IfNotPresent"}],
                                       "restartPolicy": "Always"}}}
    assert is_subset(desired, defaulted)
    assert not is_subset({**desired, "replicas": 2}, defaulted)
    two = {"template": {"spec": {"containers": [{"name": "m"}, {"name": "sidecar"}]}}}
    assert not is_subset(two, defaulted)


async def test_apply_creates_deployment_service_hpa_with_gpu_resources(api: KubeClient, fake_api: FakeKubeApi) -> None:
    infer = seeded(fake_api, replicas=2, resources={"limits": {"nvidia.com/gpu": 2}},
                   autoscaling={"enabled": True, "minReplicas": 2, "maxReplicas": 6})
    result = await ModelInferReconciler(api, StatusWriter(api)).reconcile(infer, Model.model_validate(GPU_MODEL))
    assert (result.deployment, result.service, result.hpa) == ("created", "created", "created")
    deploy = fake_api.read(DEPLOYMENT, "default", "llama-infer")
    container = deploy["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert container["resources"]["requests"] == {"memory": "16Gi", "nvidia.com/gpu": "2"}
    assert deploy["spec"]["replicas"] == 2
    for rtype in (DEPLOYMENT, SERVICE, HPA):
        (owner,) = fake_api.read(rtype, "default", "llama-infer")["metadata"]["ownerReferences"]
        assert owner["uid"] == infer.metadata.uid and owner["controller"] is True
    hpa = fake_api.read(HPA, "default", "llama-infer")
    assert hpa["spec"]["scaleTargetRef"]["kind"] == "ModelInfer" and hpa["spec"]["maxReplicas"] == 6
    status = fake_api.read(MODEL_INFER, "default", "llama-infer")["status"]
    assert status["phase"] == "Pending" and status["readyReplicas"] == 0


async def test_second_pass_writes_nothing_even_with_server_defaults(api: KubeClient, fake_api: FakeKubeApi) -> None:
    infer = seeded(fake_api)
    reconciler = ModelInferReconciler(api, StatusWriter(api))
    await reconciler.reconcile(infer, Model.model_validate(GPU_MODEL))

    def default(d: dict) -> None:  # what a real API server adds
        d["spec"]["strategy"] = {"type": "RollingUpdate"}
        d["spec"]["template"]["spec"]["containers"][0]["terminationMessagePath"] = "/dev/termination-log"

    fake_api.write(DEPLOYMENT, "default", "llama-infer", default)
    fake_api.write(SERVICE, "default", "llama-infer", lambda s: s["spec"].update(clusterIP="10.96.0.7"))
    before = len(fake_api.requests)
    result = await reconciler.reconcile(infer, Model.model_validate(GPU_MODEL))
    assert (result.deployment, result.service, result.hpa, result.status_written) == (
        "unchanged", "unchanged", "absent", False)
    assert not [r for r in fake_api.requests[before:] if r[0] in ("PUT", "PATCH", "POST", "DELETE")]


async def test_spec_change_updates_and_removes_dropped_fields(api: KubeClient, fake_api: FakeKubeApi) -> None:
    infer = seeded(fake_api, nodeSelector={"gpu": "a100"})
    reconciler = ModelInferReconciler(api, StatusWriter(api))
    await reconciler.reconcile(infer, Model.model_validate(GPU_MODEL))
    fake_api.write(SERVICE, "default", "llama-infer", lambda s: s["spec"].update(clusterIP="10.96.0.7"))
    fake_api.write(SERVICE, "default", "llama-infer", lambda s: s["spec"]["ports"][0].update(port=1234))
    changed = ModelInfer.model_validate(fake_api.write(MODEL_INFER, "default", "llama-infer", lambda o: o.update(
        spec={"modelRef": {"name": "llama-7b"}, "replicas": 3})))
    result = await reconciler.reconcile(changed, Model.model_validate(GPU_MODEL))
    assert (result.deployment, result.service) == ("updated", "updated")
    spec = fake_api.read(DEPLOYMENT, "default", "llama-infer")["spec"]
    assert spec["replicas"] == 3 and "nodeSelector" not in spec["template"]["spec"]
    svc = fake_api.read(SERVICE, "default", "llama-infer")["spec"]
    assert svc["ports"][0]["port"] == 8080 and svc["clusterIP"] == "10.96.0.7"


async def test_update_conflict_is_reread_and_retried(api: KubeClient, fake_api: FakeKubeApi) -> None:
    infer = seeded(fake_api)
    reconciler = ModelInferReconciler(api, StatusWriter(api))
    await reconciler.reconcile(infer, Model.model_validate(GPU_MODEL))
    # Someone (a user, kubectl scale) writes the Deployment between our read and our write.
    fake_api.before("PUT", DEPLOYMENT, lambda: fake_api.write(
        DEPLOYMENT, "default", "llama-infer", lambda d: d["metadata"].setdefault("annotations", {}).update(x="y")))
    _, outcome = await apply(api, DEPLOYMENT, {**fake_api.read(DEPLOYMENT, "default", "llama-infer"),
                                               "spec": {**fake_api.read(DEPLOYMENT, "default", "llama-infer")["spec"],
                                                        "replicas": 5}})
    assert outcome == "updated" and writes(fake_api, "PUT", "deployments") == 2
    final = fake_api.read(DEPLOYMENT, "default", "llama-infer")
    assert final["spec"]["replicas"] == 5 and final["metadata"]["annotations"] == {"x": "y"}


async def test_create_race_reads_the_existing_object(api: KubeClient, fake_api: FakeKubeApi) -> None:
    desired = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "llama-infer", "namespace": "default"},
               "spec": {"ports": [{"port": 8080}]}}
    fake_api.before("POST", SERVICE, lambda: fake_api.seed(desired))  # another replica won
    _, outcome = await apply(api, SERVICE, desired)
    assert outcome == "unchanged"
    assert writes(fake_api, "POST", "services") == 1 and writes(fake_api, "PUT", "services") == 0


async def test_a_stale_cache_never_makes_a_wrong_write(api: KubeClient, fake_api: FakeKubeApi) -> None:
    """What an informer says ABSENT is created without a read first; when it exists after
    all (the cache lagged), the create fails and the object is read and updated like any
    other. An object the cache holds that matches is taken as it is."""
    desired = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "llama-infer", "namespace": "default"},
               "spec": {"ports": [{"port": 8080}]}}
    fake_api.seed({**desired, "spec": {"ports": [{"port": 9090}]}})  # the cache has not seen it yet
    _, outcome = await apply(api, SERVICE, desired, cached=ABSENT)
    assert outcome == "updated"
    assert fake_api.read(SERVICE, "default", "llama-infer")["spec"]["ports"] == [{"port": 8080}]
    assert writes(fake_api, "POST", "services") == 1 and writes(fake_api, "PUT", "services") == 1
    # An object the cache holds and that matches: nothing read, nothing written.
    fake_api.requests.clear()
    _, outcome = await apply(api, SERVICE, desired, cached=fake_api.read(SERVICE, "default", "llama-infer"))
    assert outcome == "unchanged" and fake_api.requests == []


async def test_hpa_removed_when_autoscaling_is_switched_off_but_never_a_users_hpa(
        api: KubeClient, fake_api: FakeKubeApi) -> None:
    infer = seeded(fake_api, autoscaling={"enabled": True, "maxReplicas": 4})
    reconciler = ModelInferReconciler(api, StatusWriter(api))
    await reconciler.reconcile(infer, Model.model_validate(GPU_MODEL))
    off = ModelInfer.model_validate(fake_api.write(MODEL_INFER, "default", "llama-infer",
                                                   lambda o: o["spec"].pop("autoscaling")))
    assert (await reconciler.reconcile(off, Model.model_validate(GPU_MODEL))).hpa == "deleted"
    assert fake_api.read(HPA, "default", "llama-infer") is None
    fake_api.seed({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
                   "metadata": {"name": "llama-infer", "namespace": "default"}, "spec": {"maxReplicas": 9}})
    assert (await reconciler.reconcile(off, Model.model_validate(GPU_MODEL))).hpa == "absent"
    assert fake_api.read(HPA, "default", "llama-infer") is not None


async def test_missing_model_fails_the_model_infer_without_workloads(api: KubeClient, fake_api: FakeKubeApi) -> None:
    infer = seeded(fake_api)
    result = await ModelInferReconciler(api, StatusWriter(api)).reconcile(infer, None)
    assert result.deployment is None and result.error
    assert fake_api.items(DEPLOYMENT) == []
    status = fake_api.read(MODEL_INFER, "default", "llama-infer")["status"]
    assert status["phase"] == "Failed" and status["conditions"][0]["reason"] == "ModelNotFound"


async def test_status_follows_the_deployment(api: KubeClient, fake_api: FakeKubeApi) -> None:
    infer = seeded(fake_api, replicas=2)
    reconciler = ModelInferReconciler(api, StatusWriter(api))
    await reconciler.reconcile(infer, Model.model_validate(GPU_MODEL))
    fake_api.write(DEPLOYMENT, "default", "llama-infer", lambda d: d.update(status={
        "replicas": 2, "readyReplicas": 2,
        "conditions": [{"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"}]}))
    assert (await reconciler.reconcile(infer, Model.model_validate(GPU_MODEL))).status_written
    status = fake_api.read(MODEL_INFER, "default", "llama-infer")["status"]
    assert (status["phase"], status["replicas"], status["readyReplicas"]) == ("Running", 2, 2)
    assert [c["type"] for c in status["conditions"]] == ["Ready", "Available"]


async def test_deleting_the_model_infer_collects_its_children(api: KubeClient, fake_api: FakeKubeApi) -> None:
    infer = seeded(fake_api, autoscaling={"enabled": True, "maxReplicas": 4})
    await ModelInferReconciler(api, StatusWriter(api)).reconcile(infer, Model.model_validate(GPU_MODEL))
    await api.delete(MODEL_INFER, "default", "llama-infer")
    assert fake_api.items(DEPLOYMENT) == fake_api.items(SERVICE) == fake_api.items(HPA) == []
