"""ModelInfer (+ Model, AutoscalingPolicy) → Deployment/Service/HPA, and status back."""

from __future__ import annotations

import json
from typing import Any

import pytest

from controller.kubernetes import workloads
from routing_engine.api.resources import AutoscalingPolicy, Model, ModelInfer
from routing_engine.world import ConditionView
from tests.kubernetes.helpers import model, model_infer


def infer_of(**spec: Any) -> ModelInfer:
    doc = model_infer(**spec)
    doc["metadata"]["uid"] = "uid-1"
    return ModelInfer.model_validate(doc)


def model_of(**kw: Any) -> Model:
    return Model.model_validate(model(**kw))


def policy(name: str, target: str, **spec: Any) -> AutoscalingPolicy:
    return AutoscalingPolicy.model_validate({
        "apiVersion": "registry.matrixinfer.ai/v1alpha1", "kind": "AutoscalingPolicy",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"targetRef": {"apiVersion": "workload.matrixinfer.ai/v1alpha1", "kind": "ModelInfer",
                               "name": target}, "maxReplicas": 4, **spec}})


def test_deployment_takes_image_and_gpu_resources_from_model_overridden_by_infer() -> None:
    infer = infer_of(replicas=2, resources={"limits": {"nvidia.com/gpu": 2, "memory": "32Gi"}},
                     nodeSelector={"gpu": "a100"},
                     tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
                     affinity={"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {}}})
    m = model_of(resources={"requests": {"nvidia.com/gpu": "1", "memory": "16Gi", "cpu": "4"},
                            "limits": {"memory": "16Gi", "nvidia.com/gpu": "1"}})
    deploy = workloads.deployment(infer, m)
    pod = deploy["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["image"] == "vllm/vllm-openai:v0.6.0"
    assert container["resources"] == {
        "requests": {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": "2"},
        "limits": {"memory": "32Gi", "nvidia.com/gpu": "2"}}
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["MODEL_ID"] == "meta-llama/Llama-2-7b" and env["MODEL_URI"] == "s3://models/llama-2-7b"
    assert env["MODEL_FRAMEWORK"] == "vllm" and env["MODEL_VERSION"] == "v2"
    assert container["readinessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert pod["nodeSelector"] == {"gpu": "a100"}
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert "nodeAffinity" in pod["affinity"]
    assert deploy["spec"]["replicas"] == 2
    assert set(deploy["spec"]["selector"]["matchLabels"].items()) <= set(
        deploy["spec"]["template"]["metadata"]["labels"].items())
    owner = deploy["metadata"]["ownerReferences"][0]
    assert owner == {"apiVersion": "workload.matrixinfer.ai/v1alpha1", "kind": "ModelInfer",
                     "name": "llama-infer", "uid": "uid-1", "controller": True, "blockOwnerDeletion": True}


def test_declared_lora_adapters_reach_the_container_in_vllm_form() -> None:
    env = {e["name"]: e["value"] for e in workloads.deployment(
        infer_of(adapters=[{"name": "sql", "uri": "hf://org/sql"}, {"name": "chat"}]), model_of())
        ["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert json.loads(env["MODEL_LORA_ADAPTERS"]) == [{"name": "sql", "path": "hf://org/sql"},
                                                      {"name": "chat", "path": "chat"}]
    plain = workloads.deployment(infer_of(), model_of())["spec"]["template"]["spec"]["containers"][0]["env"]
    assert "MODEL_LORA_ADAPTERS" not in {e["name"] for e in plain}


def test_a_gpu_request_alone_is_also_the_limit() -> None:
    res = workloads.merged_resources(model_of(resources={"requests": {"nvidia.com/gpu": "1"}}).spec.runtime.resources,
                                     None)
    assert res == {"requests": {"nvidia.com/gpu": "1"}, "limits": {"nvidia.com/gpu": "1"}}


def test_a_gpu_limit_overriding_the_models_is_also_the_request() -> None:
    """Each object has request = limit for a GPU (validated), but the ModelInfer's limit
    overrides the Model's while the Model's request stays: Kubernetes would refuse 1 != 2."""
    base = model_of(resources={"requests": {"nvidia.com/gpu": "1"}, "limits": {"nvidia.com/gpu": "1"}})
    assert base.spec.runtime is not None
    res = workloads.merged_resources(base.spec.runtime.resources,
                                     infer_of(resources={"limits": {"nvidia.com/gpu": 2}}).spec.resources)
    assert res == {"requests": {"nvidia.com/gpu": "2"}, "limits": {"nvidia.com/gpu": "2"}}


def test_missing_model_or_runtime_is_a_workload_error() -> None:
    with pytest.raises(workloads.WorkloadError) as info:
        workloads.deployment(infer_of(), None)
    assert info.value.reason == "ModelNotFound" and "default/llama-7b" in info.value.message
    bare = model()
    del bare["spec"]["runtime"]
    with pytest.raises(workloads.WorkloadError) as info:
        workloads.deployment(infer_of(), Model.model_validate(bare))
    assert info.value.reason == "ValidationFailed"


def test_a_model_of_another_namespace_must_allow_it() -> None:
    """SPEC 3.7 for spec.modelRef (an acceptance probe found it unchecked)."""
    other = model()
    other["metadata"]["namespace"] = "team2"
    infer = infer_of(modelRef={"name": other["metadata"]["name"], "namespace": "team2"})
    with pytest.raises(workloads.WorkloadError) as info:
        workloads.deployment(infer, Model.model_validate(other))
    assert info.value.reason == "NetworkPolicyViolation"
    assert "Model team2/" in info.value.message and "from namespace default" in info.value.message
    other["metadata"]["annotations"] = {"networking.matrixinfer.ai/allow-from": "ops, default"}
    assert workloads.deployment(infer, Model.model_validate(other))["kind"] == "Deployment"


def test_service_selects_the_pods() -> None:
    infer = infer_of()
    svc = workloads.service(infer)
    pod_labels = workloads.deployment(infer, model_of())["spec"]["template"]["metadata"]["labels"]
    assert set(svc["spec"]["selector"].items()) <= set(pod_labels.items())
    assert svc["spec"]["ports"][0]["targetPort"] == "http"


def test_hpa_from_inline_autoscaling_targets_the_model_infer() -> None:
    infer = infer_of(autoscaling={"enabled": True, "minReplicas": 2, "maxReplicas": 8,
                                  "targetCPUUtilizationPercentage": 60})
    hpa = workloads.hpa(infer)
    assert hpa is not None and hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "workload.matrixinfer.ai/v1alpha1",
                                             "kind": "ModelInfer", "name": "llama-infer"}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 8)
    assert hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"] == 60
    assert workloads.hpa(infer_of()) is None
    assert workloads.hpa(infer_of(autoscaling={"enabled": False, "maxReplicas": 3})) is None


def test_autoscaling_policy_wins_over_inline_spec() -> None:
    infer = infer_of(autoscaling={"enabled": True, "maxReplicas": 8})
    behavior = {"scaleDown": {"stabilizationWindowSeconds": 300}}
    metrics = [{"type": "Pods", "pods": {"metric": {"name": "queue_depth"},
                                         "target": {"type": "AverageValue", "averageValue": "10"}}}]
    chosen = policy("a-policy", "llama-infer", minReplicas=1, metrics=metrics, behavior=behavior)
    hpa = workloads.hpa(infer, [policy("z-policy", "llama-infer"), chosen, policy("other", "someone-else")])
    assert hpa is not None
    assert hpa["spec"]["maxReplicas"] == 4 and hpa["spec"]["metrics"] == metrics
    assert hpa["spec"]["behavior"] == behavior
    # A policy alone (no inline autoscaling) is enough for an HPA.
    assert workloads.hpa(infer_of(), [policy("p", "llama-infer")]) is not None


def deploy_with(status: dict[str, Any]) -> dict[str, Any]:
    return {"status": status}


def test_status_from_deployment() -> None:
    infer = infer_of(replicas=2)
    pending, extra = workloads.infer_status(infer, deploy_with({"replicas": 2}))
    assert pending.phase == "Pending" and extra == {"replicas": 2, "readyReplicas": 0}
    partly, _ = workloads.infer_status(infer, deploy_with({"replicas": 2, "readyReplicas": 1}))
    assert partly.phase == "Running" and partly.conditions[0].status == "False"
    ready, extra = workloads.infer_status(infer, deploy_with({
        "replicas": 2, "readyReplicas": 2,
        "conditions": [{"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"}]}))
    assert ready.phase == "Running"
    assert ready.conditions[0] == ConditionView("Ready", "True", "ModelDeployed", "2/2 replicas ready")
    assert [c.type for c in ready.conditions] == ["Ready", "Available"]
    failed, _ = workloads.infer_status(infer, deploy_with({"conditions": [
        {"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate",
         "message": "exceeded quota: gpu"}]}))
    assert failed.phase == "Failed" and failed.conditions[0].reason == "InsufficientResources"
    missing, _ = workloads.infer_status(infer, None, error=workloads.WorkloadError("ModelNotFound", "gone"))
    assert missing.phase == "Failed" and missing.conditions[0].reason == "ModelNotFound"
