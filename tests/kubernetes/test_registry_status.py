"""Model and AutoscalingPolicy status through the workload controller (fake API): a valid
Model is Ready and names its users; a policy reports its HPA's replica counts and
conditions, ModelNotFound for a missing target, ValidationFailed when another policy
already scales the target; an invalid Model is Failed/ValidationFailed (runtime)."""

from __future__ import annotations

from typing import Any

from controller.kubernetes.client import KubeClient
from controller.kubernetes.registry_status import model_status, policy_status
from controller.kubernetes.resources import AUTOSCALING_POLICY, HPA, MODEL, MODEL_INFER
from controller.kubernetes.workload_controller import WorkloadController
from routing_engine.api.resources import AutoscalingPolicy, Model, ModelInfer
from tests.kubernetes.fakeapi import FakeKubeApi
from tests.kubernetes.helpers import eventually, model, model_infer, running
from tests.kubernetes.test_runtime import Sink, plane, replica


def policy(name: str, target: str) -> dict[str, Any]:
    return {"apiVersion": "registry.matrixinfer.ai/v1alpha1", "kind": "AutoscalingPolicy",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"targetRef": {"apiVersion": "workload.matrixinfer.ai/v1alpha1", "kind": "ModelInfer",
                                   "name": target}, "minReplicas": 1, "maxReplicas": 5}}


def status(fake_api: FakeKubeApi, rtype: Any, name: str) -> dict[str, Any]:
    return (fake_api.read(rtype, "default", name) or {}).get("status") or {}


def ready(fake_api: FakeKubeApi, rtype: Any, name: str) -> tuple[str, str] | None:
    for cond in status(fake_api, rtype, name).get("conditions") or ():
        if cond["type"] == "Ready":
            return cond["status"], cond["reason"]
    return None


async def test_model_and_policy_status(api: KubeClient, fake_api: FakeKubeApi) -> None:
    for doc in (model(), model("unused"), model_infer(), policy("a-scaling", "llama-infer"),
                policy("b-scaling", "llama-infer"), policy("orphan", "no-such-infer")):
        fake_api.seed(doc)
    async with running(WorkloadController(api, resync_period=None).run()):
        await eventually(lambda: status(fake_api, MODEL, "llama-7b").get("phase") == "Ready", what="Model Ready")
        used = next(c for c in status(fake_api, MODEL, "llama-7b")["conditions"] if c["type"] == "Ready")
        assert used["message"] == "used by ModelInfer default/llama-infer"
        await eventually(lambda: status(fake_api, MODEL, "unused").get("phase") == "Ready", what="unused Model")
        await eventually(lambda: ready(fake_api, AUTOSCALING_POLICY, "orphan") == ("False", "ModelNotFound"),
                         what="orphan policy ModelNotFound")
        await eventually(lambda: ready(fake_api, AUTOSCALING_POLICY, "b-scaling") == ("False", "ValidationFailed"),
                         what="the losing policy")
        await eventually(lambda: fake_api.read(HPA, "default", "llama-infer") is not None, what="the HPA")
        await eventually(lambda: ready(fake_api, AUTOSCALING_POLICY, "a-scaling") == ("True", "HPAReady"),
                         what="the winning policy")
        assert "phase" not in status(fake_api, AUTOSCALING_POLICY, "a-scaling")  # the kind has none
        # The HPA controller scales: the policy's status follows the HPA's.
        fake_api.write(HPA, "default", "llama-infer", lambda h: h.update(status={
            "currentReplicas": 2, "desiredReplicas": 3,
            "conditions": [{"type": "ScalingLimited", "status": "False", "reason": "DesiredWithinRange",
                            "message": "the desired count is within the acceptable range"}]}))
        await eventually(lambda: status(fake_api, AUTOSCALING_POLICY, "a-scaling").get("desiredReplicas") == 3,
                         what="desiredReplicas from the HPA")
        winner = status(fake_api, AUTOSCALING_POLICY, "a-scaling")
        assert winner["currentReplicas"] == 2
        assert {c["type"]: c["reason"] for c in winner["conditions"]}["ScalingLimited"] == "DesiredWithinRange"
        assert status(fake_api, AUTOSCALING_POLICY, "b-scaling")["desiredReplicas"] == 0


def test_policy_without_hpa_yet_is_progressing() -> None:
    infer = ModelInfer.model_validate(model_infer() | {"metadata": {"name": "llama-infer", "namespace": "default",
                                                                    "uid": "u1"}})
    p = AutoscalingPolicy.model_validate(policy("a", "llama-infer"))
    status_, extra = policy_status(p, infer, p, None)
    assert status_.conditions[0].reason == "Progressing" and extra == {"currentReplicas": 0, "desiredReplicas": 0}


def test_a_model_with_many_users_names_the_first_ten_and_counts_the_rest() -> None:
    llama = Model.model_validate(model())
    users = [f"default/infer-{i:05}" for i in range(10_000)]

    def message(found: list[str]) -> str:
        return next(c.message for c in model_status(llama, found).conditions if c.type == "Ready")

    assert message(users[:10]) == "used by ModelInfer " + ", ".join(users[:10])
    many = message(users)
    assert many == f"used by 10,000 ModelInfers: {', '.join(users[:10])} and 9,990 more"
    assert len(many) < 300


async def test_invalid_model_is_failed_with_validation_failed(api: KubeClient, fake_api: FakeKubeApi) -> None:
    bad = model("broken")
    del bad["spec"]["modelSpec"]["framework"]
    fake_api.seed(bad)
    fake_api.seed(model())
    sink = Sink()
    leader = plane(api, sink, "a")
    async with replica(api, sink, leader):
        await eventually(lambda: status(fake_api, MODEL, "broken").get("phase") == "Failed", what="Failed")
        await eventually(lambda: status(fake_api, MODEL, "llama-7b").get("phase") == "Ready", what="Ready")
    (cond,) = status(fake_api, MODEL, "broken")["conditions"]
    assert cond["reason"] == "ValidationFailed" and "framework" in cond["message"]


async def test_model_users_follow_model_infer_specs_not_their_status_writes(api: KubeClient,
                                                                           fake_api: FakeKubeApi) -> None:
    """A ModelInfer moved to another Model moves in both Models' statuses; a status write
    on it (every reconcile makes them) does not recount the Models' users."""
    for doc in (model(), model("other"), model_infer()):
        fake_api.seed(doc)
    controller = WorkloadController(api, resync_period=None)
    counted = 0
    recount = controller.write_registry_statuses

    async def counting() -> int:
        nonlocal counted
        counted += 1
        return await recount()

    controller.write_registry_statuses = counting  # type: ignore[method-assign]

    def users(name: str) -> str:
        return next((c["message"] for c in status(fake_api, MODEL, name).get("conditions") or ()
                     if c["type"] == "Ready"), "")

    async with running(controller.run()):
        await eventually(lambda: users("llama-7b") == "used by ModelInfer default/llama-infer", what="llama's user")
        await eventually(lambda: status(fake_api, MODEL_INFER, "llama-infer").get("phase") == "Pending",
                         what="the ModelInfer's status")
        # The Models' own status events (each makes one more recount) seen and recounted:
        seen = controller.models.get
        await eventually(lambda: "conditions" in ((seen("default", "llama-7b") or {}).get("status") or {})
                         and not controller._registry_dirty.is_set(), what="the recounts done")
        settled = counted
        fake_api.write(MODEL_INFER, "default", "llama-infer",
                       lambda m: m["status"].update(note="another writer's field"))
        await eventually(lambda: "note" in controller.infers.get("default", "llama-infer")["status"],
                         what="the status write seen")
        await eventually(lambda: not controller._queued, what="its reconcile done")
        assert counted == settled
        await api.patch(MODEL_INFER, "default", "llama-infer", {"spec": {"modelRef": {"name": "other"}}})
        await eventually(lambda: users("other") == "used by ModelInfer default/llama-infer", what="other's user")
        await eventually(lambda: users("llama-7b") == "no ModelInfer references it yet", what="llama unused")
