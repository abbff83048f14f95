"""Embedded-mode statuses beyond the engine's: ModelInfer (as Kubernetes mode reports it,
from the local replicas), Model, AutoscalingPolicy, rejected objects, gateway down."""

from __future__ import annotations

from typing import Any

from controller.local.embedded_status import with_gateway_down, with_rejections, workload_statuses
from controller.local.replicas import ReplicaStatus
from routing_engine.api.errors import ManifestError
from routing_engine.api.resources import KIND_BY_NAME, ObjectKey, Resource
from routing_engine.world import ConditionView, ObjectStatus

WORKLOAD = "workload.matrixinfer.ai/v1alpha1"
REGISTRY = "registry.matrixinfer.ai/v1alpha1"


def obj(kind: str, name: str, spec: dict[str, Any]) -> Resource:
    api = {"ModelInfer": WORKLOAD, "Model": REGISTRY, "AutoscalingPolicy": REGISTRY}[kind]
    return KIND_BY_NAME[kind].model_validate({"apiVersion": api, "kind": kind, "metadata": {"name": name},
                                              "spec": spec})


def infer(name: str, model: str = "llama", replicas: int = 2) -> Resource:
    return obj("ModelInfer", name, {"modelRef": {"name": model}, "replicas": replicas})


MODEL = obj("Model", "llama", {"modelSpec": {"modelId": "m", "framework": "vllm", "version": "1",
                                             "source": {"uri": "hf://m"}}})


def policy(name: str, target: str) -> Resource:
    return obj("AutoscalingPolicy", name, {"targetRef": {"apiVersion": WORKLOAD, "kind": "ModelInfer", "name": target},
                                           "maxReplicas": 4})


def key(kind: str, name: str) -> ObjectKey:
    return ObjectKey(kind, "default", name)


def ready(status: ObjectStatus) -> ConditionView:
    return next(c for c in status.conditions if c.type == "Ready")


def test_model_infers_as_kubernetes_mode_reports_them() -> None:
    counts = {key("ModelInfer", "full"): ReplicaStatus(2, 2, 0), key("ModelInfer", "half"): ReplicaStatus(2, 1, 0),
              key("ModelInfer", "none"): ReplicaStatus(2, 0, 0), key("ModelInfer", "orphan"): ReplicaStatus(2, 2, 0)}
    statuses, _ = workload_statuses([MODEL, infer("full"), infer("half"), infer("none"), infer("orphan", "gone")],
                                    counts)
    full, half, none = (statuses[key("ModelInfer", n)] for n in ("full", "half", "none"))
    assert (full.phase, ready(full).status, ready(full).reason, ready(full).message) == \
        ("Running", "True", "ModelDeployed", "2/2 replicas ready")
    assert (half.phase, ready(half).reason) == ("Running", "Progressing")
    assert (none.phase, ready(none).reason) == ("Pending", "Progressing")
    orphan = statuses[key("ModelInfer", "orphan")]
    assert (orphan.phase, ready(orphan).status, ready(orphan).reason) == ("Failed", "False", "ModelNotFound")
    assert "Model default/gone does not exist" in ready(orphan).message
    assert "runs 2 mock replica(s)" in ready(orphan).message


def test_a_model_of_another_namespace_must_allow_it() -> None:
    shared = KIND_BY_NAME["Model"].model_validate({**MODEL.manifest(), "metadata": {"name": "llama",
                                                                                    "namespace": "models"}})
    user = KIND_BY_NAME["ModelInfer"].model_validate({"apiVersion": WORKLOAD, "kind": "ModelInfer", "metadata": {
        "name": "user", "namespace": "team2"}, "spec": {"modelRef": {"name": "llama", "namespace": "models"}}})
    found = ready(workload_statuses([shared, user], {})[0][ObjectKey("ModelInfer", "team2", "user")])
    assert (found.reason, "from namespace team2" in found.message) == ("NetworkPolicyViolation", True)
    allowing = shared.model_copy(update={"metadata": shared.metadata.model_copy(
        update={"annotations": {"networking.matrixinfer.ai/allow-from": "team2"}})})
    found = ready(workload_statuses([allowing, user], {})[0][ObjectKey("ModelInfer", "team2", "user")])
    assert found.reason != "NetworkPolicyViolation"


def test_models_and_policies_as_kubernetes_mode_reports_them() -> None:
    objects = [MODEL, infer("a"), policy("a-first", "a"), policy("a-second", "a"), policy("nowhere", "missing")]
    statuses, extras = workload_statuses(objects, {key("ModelInfer", "a"): ReplicaStatus(2, 1, 0)})
    model = statuses[key("Model", "llama")]
    assert model.phase == "Ready" and "used by ModelInfer default/a" in ready(model).message
    first = statuses[key("AutoscalingPolicy", "a-first")]
    assert first.phase == "" and (ready(first).status, ready(first).reason) == ("False", "NotSupported")
    assert "autoscaling needs a Kubernetes cluster" in ready(first).message
    assert extras[key("AutoscalingPolicy", "a-first")] == {"currentReplicas": 1, "desiredReplicas": 2}
    assert ready(statuses[key("AutoscalingPolicy", "a-second")]).reason == "ValidationFailed"
    assert ready(statuses[key("AutoscalingPolicy", "nowhere")]).reason == "ModelNotFound"


def error(kind: str | None, name: str | None, rule: str) -> ManifestError:
    return ManifestError("f.yaml", 1, kind, "default" if kind else None, name, "spec.x", rule)


def test_rejected_objects_fail_or_keep_their_last_good_version() -> None:
    serving = ObjectStatus("Ready", (ConditionView("Accepted", "True", "Accepted"), ConditionView("Ready", "True", "R")))
    merged = with_rejections({key("ModelServer", "old"): serving}, [
        error("ModelServer", "old", "is bad"), error("ModelServer", "old", "is worse"),
        error("ModelRoute", "new", "is required"), error("Secret", "s", "bad key"), error(None, None, "not YAML")])
    old = merged[key("ModelServer", "old")]
    accepted = next(c for c in old.conditions if c.type == "Accepted")
    assert old.phase == "Ready" and (accepted.status, accepted.reason) == ("False", "ValidationFailed")
    assert "is bad" in accepted.message and "is worse" in accepted.message
    assert accepted.message.endswith("the last good version keeps serving")
    assert len([c for c in old.conditions if c.type == "Accepted"]) == 1
    new = merged[key("ModelRoute", "new")]
    assert new.phase == "Failed" and new.conditions[0].reason == "ValidationFailed"
    assert set(merged) == {key("ModelServer", "old"), key("ModelRoute", "new")}  # no Secret, no nameless


def test_gateway_down_makes_its_servers_and_routes_not_ready() -> None:
    up = ObjectStatus("Ready", (ConditionView("Ready", "True", "EndpointsReady"),), service_endpoint="http://x")
    failed = ObjectStatus("Failed", (ConditionView("Ready", "False", "ValidationFailed", "own reason"),))
    active = ObjectStatus("Active", (ConditionView("Accepted", "True", "Accepted"),))
    running = ObjectStatus("Running", (ConditionView("Ready", "True", "ModelDeployed"),))
    merged = with_gateway_down({key("ModelServer", "up"): up, key("ModelServer", "failed"): failed,
                                key("ModelRoute", "r"): active, key("ModelInfer", "i"): running}, "Envoy restarting")
    server = merged[key("ModelServer", "up")]
    assert server.phase == "Pending" and server.service_endpoint == "http://x"
    assert (ready(server).status, ready(server).reason, ready(server).message) == \
        ("False", "GatewayNotRunning", "Envoy restarting")
    route = merged[key("ModelRoute", "r")]
    assert route.phase == "Pending" and ready(route).reason == "GatewayNotRunning"
    assert merged[key("ModelServer", "failed")] == failed and merged[key("ModelInfer", "i")] == running
