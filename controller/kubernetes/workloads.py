"""What a ModelInfer becomes in Kubernetes: pure functions from validated models to the
Deployment, Service and HorizontalPodAutoscaler manifests, and the ModelInfer status
read back from its Deployment. No I/O: the reconciler applies what these return.

Decisions (KServe/Deployment conventions where the spec is silent):
- Names: Deployment, Service and HPA are all named after the ModelInfer; pods carry
  `workload.matrixinfer.ai/modelinfer: <name>`. All three have the ModelInfer as
  controlling owner, so deleting it garbage-collects them.
- The model container listens on `MODEL_PORT` (named `http`); the Service exposes it,
  and its EndpointSlices are what the provider turns into engine endpoints.
- Resources: the Model's `runtime.resources`, overridden key by key by the ModelInfer's
  `resources`. Extended resources such as `nvidia.com/gpu` cannot be overcommitted in
  Kubernetes (request must equal limit); each object has them so (the API models refuse
  anything else, `routing_engine.api.quantities`), but a ModelInfer's limit can override
  the Model's, so the merged limit is written as both.
- `spec.replicas` of the ModelInfer is the Deployment's replica count; an HPA scales the
  ModelInfer through its scale subresource and the reconciler carries the count over.
- LoRA adapters (ext, issue 18): the declared list goes to the container as
  `MODEL_LORA_ADAPTERS`, JSON in vLLM's `--lora-modules` form (`[{"name", "path"}]`);
  which adapters a pod really has loaded is read from the pod itself by the control
  plane (`controller/engines/probe.py`), so a rollout never routes an adapter to a pod that
  does not have it yet.
- Autoscaling: an AutoscalingPolicy whose targetRef names the ModelInfer wins over the
  inline `spec.autoscaling` (it is the registry-level, more specific object); with
  several, the first by name wins. Without metrics, CPU utilization at
  `targetCPUUtilizationPercentage` (default 80, the HPA default) is used.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from routing_engine.api.references import ALLOW_FROM_ANNOTATION, allows_from
from routing_engine.api.resources import AutoscalingPolicy, Model, ModelInfer, ResourceRequirements
from routing_engine.world import ConditionView, ObjectStatus

Obj = dict[str, Any]

MODEL_PORT = 8080
INFER_LABEL = "workload.matrixinfer.ai/modelinfer"
MANAGED_BY = {"app.kubernetes.io/managed-by": "modelroute"}
CONTAINER = "model"
DEFAULT_CPU_TARGET = 80


class WorkloadError(Exception):
    """The ModelInfer cannot be turned into a workload; `reason` is a spec error code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True, slots=True)
class Workload:
    deployment: Obj
    service: Obj
    hpa: Obj | None  # None: no autoscaling, any existing HPA is deleted


def selector(infer: ModelInfer) -> dict[str, str]:
    return {INFER_LABEL: infer.metadata.name}


def owner_reference(infer: ModelInfer) -> Obj:
    if not infer.metadata.uid:
        raise WorkloadError("ValidationFailed", f"{infer.key} has no uid (not read from the API server)")
    return {"apiVersion": infer.API_VERSION, "kind": infer.KIND, "name": infer.metadata.name,
            "uid": infer.metadata.uid, "controller": True, "blockOwnerDeletion": True}


def _metadata(infer: ModelInfer) -> Obj:
    return {"name": infer.metadata.name, "namespace": infer.metadata.namespace,
            "labels": {**MANAGED_BY, **selector(infer)}, "ownerReferences": [owner_reference(infer)]}


def merged_resources(base: ResourceRequirements | None, override: ResourceRequirements | None) -> Obj:
    """Model runtime resources, overridden key by key by the ModelInfer's."""
    requests: dict[str, str] = {}
    limits: dict[str, str] = {}
    for source in (base, override):
        if source is not None:
            requests.update({k: str(v) for k, v in source.requests.items()})
            limits.update({k: str(v) for k, v in source.limits.items()})
    for name in sorted(set(requests) | set(limits)):
        if "/" in name:  # extended resource (nvidia.com/gpu): request == limit, the limit if given
            requests[name] = limits[name] = limits.get(name, requests.get(name, ""))
    result: Obj = {}
    if requests:
        result["requests"] = dict(sorted(requests.items()))
    if limits:
        result["limits"] = dict(sorted(limits.items()))
    return result


def model_env(model: Model) -> list[Obj]:
    details = model.spec.model_spec
    return [{"name": "MODEL_ID", "value": details.model_id},
            {"name": "MODEL_URI", "value": details.source.uri},
            {"name": "MODEL_FRAMEWORK", "value": details.framework},
            {"name": "MODEL_VERSION", "value": details.version},
            {"name": "PORT", "value": str(MODEL_PORT)}]


def cross_namespace_model(model: Model, infer: ModelInfer) -> str:
    """Why `infer` may not use `model` of another namespace (SPEC 3.7)."""
    return (f"spec.modelRef: Model {model.metadata.namespace}/{model.metadata.name} does not allow references "
            f"from namespace {infer.metadata.namespace} (annotation {ALLOW_FROM_ANNOTATION})")


def deployment(infer: ModelInfer, model: Model | None) -> Obj:
    if model is None:
        raise WorkloadError("ModelNotFound", f"Model {infer.spec.model_ref.namespace or infer.metadata.namespace}/"
                                             f"{infer.spec.model_ref.name} does not exist")
    if not allows_from(model, infer.metadata.namespace):
        raise WorkloadError("NetworkPolicyViolation", cross_namespace_model(model, infer))
    if model.spec.runtime is None:
        raise WorkloadError("ValidationFailed", f"{model.key}: spec.runtime.image is required to run it")
    spec = infer.spec
    env = model_env(model)
    if spec.adapters:
        modules = [{"name": a.name, "path": a.uri or a.name} for a in spec.adapters]
        env.append({"name": "MODEL_LORA_ADAPTERS", "value": json.dumps(modules, separators=(",", ":"))})
    container: Obj = {
        "name": CONTAINER,
        "image": model.spec.runtime.image,
        "ports": [{"name": "http", "containerPort": MODEL_PORT, "protocol": "TCP"}],
        "env": env,
        "readinessProbe": {"httpGet": {"path": "/health", "port": "http"},
                           "periodSeconds": 10, "failureThreshold": 3},
    }
    resources = merged_resources(model.spec.runtime.resources, spec.resources)
    if resources:
        container["resources"] = resources
    pod: Obj = {"containers": [container]}
    if spec.node_selector:
        pod["nodeSelector"] = dict(spec.node_selector)
    if spec.tolerations:
        pod["tolerations"] = [t.model_dump(by_alias=True, exclude_none=True) for t in spec.tolerations]
    if spec.affinity:
        pod["affinity"] = spec.affinity
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": _metadata(infer),
            "spec": {"replicas": spec.replicas, "selector": {"matchLabels": selector(infer)},
                     "template": {"metadata": {"labels": {**MANAGED_BY, **selector(infer)}}, "spec": pod}}}


def service(infer: ModelInfer) -> Obj:
    return {"apiVersion": "v1", "kind": "Service", "metadata": _metadata(infer),
            "spec": {"type": "ClusterIP", "selector": selector(infer),
                     "ports": [{"name": "http", "port": MODEL_PORT, "targetPort": "http", "protocol": "TCP"}]}}


def policy_for(infer: ModelInfer, policies: Iterable[AutoscalingPolicy]) -> AutoscalingPolicy | None:
    """The AutoscalingPolicy targeting `infer` (same namespace), first by name."""
    matching = [p for p in policies
                if p.metadata.namespace == infer.metadata.namespace and p.spec.target_ref.kind == infer.KIND
                and p.spec.target_ref.name == infer.metadata.name
                and p.spec.target_ref.api_version.split("/")[0] == infer.API_VERSION.split("/")[0]]
    return min(matching, key=lambda p: p.metadata.name, default=None)


def _cpu_metric(percent: int) -> Obj:
    return {"type": "Resource", "resource": {"name": "cpu", "target": {
        "type": "Utilization", "averageUtilization": percent}}}


def hpa(infer: ModelInfer, policies: Iterable[AutoscalingPolicy] = ()) -> Obj | None:
    policy = policy_for(infer, policies)
    spec: Obj = {"scaleTargetRef": {"apiVersion": infer.API_VERSION, "kind": infer.KIND,
                                    "name": infer.metadata.name}}
    if policy is not None:
        p = policy.spec
        spec.update(minReplicas=p.min_replicas or 1, maxReplicas=p.max_replicas,
                    metrics=list(p.metrics) or [_cpu_metric(DEFAULT_CPU_TARGET)])
        if p.behavior:
            spec["behavior"] = p.behavior
    else:
        auto = infer.spec.autoscaling
        if auto is None or not auto.enabled:
            return None
        assert auto.max_replicas is not None  # validated: required when enabled
        spec.update(minReplicas=auto.min_replicas or 1, maxReplicas=auto.max_replicas,
                    metrics=list(auto.metrics) or [_cpu_metric(auto.target_cpu_utilization_percentage
                                                               or DEFAULT_CPU_TARGET)])
    return {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": _metadata(infer),
            "spec": spec}


def workload(infer: ModelInfer, model: Model | None, policies: Iterable[AutoscalingPolicy] = ()) -> Workload:
    return Workload(deployment(infer, model), service(infer), hpa(infer, policies))


# --- status from the Deployment ---------------------------------------------------------------


def _deployment_condition(deploy: Obj, type_: str) -> Mapping[str, Any]:
    for cond in (deploy.get("status") or {}).get("conditions") or ():
        if cond.get("type") == type_:
            return dict(cond)
    return {}


def infer_status(infer: ModelInfer, deploy: Obj | None, *, error: WorkloadError | None = None) -> tuple[ObjectStatus, Obj]:
    """(phase + conditions, extra status fields replicas/readyReplicas) of a ModelInfer."""
    if error is not None:
        return ObjectStatus("Failed", (ConditionView("Ready", "False", error.reason, error.message),)), \
            {"replicas": 0, "readyReplicas": 0}
    desired = infer.spec.replicas
    status = (deploy or {}).get("status") or {}
    replicas, ready = int(status.get("replicas", 0)), int(status.get("readyReplicas", 0))
    extra = {"replicas": replicas, "readyReplicas": ready}
    if deploy is None:
        return ObjectStatus("Pending", (ConditionView("Ready", "False", "Progressing", "creating the Deployment"),)), extra
    progressing = _deployment_condition(deploy, "Progressing")
    available = _deployment_condition(deploy, "Available")
    failure = _deployment_condition(deploy, "ReplicaFailure")
    conditions: list[ConditionView] = []
    if failure.get("status") == "True" or progressing.get("reason") == "ProgressDeadlineExceeded":
        message = str(failure.get("message") or progressing.get("message") or "")
        reason = "InsufficientResources" if failure.get("status") == "True" else "ProgressDeadlineExceeded"
        phase = "Failed"
        conditions.append(ConditionView("Ready", "False", reason, message))
    elif ready >= max(desired, 1) or (desired == 0 and replicas == 0):
        phase = "Running"
        conditions.append(ConditionView("Ready", "True", "ModelDeployed", f"{ready}/{desired} replicas ready"))
    else:
        phase = "Running" if ready > 0 else "Pending"
        conditions.append(ConditionView("Ready", "False", "Progressing", f"{ready}/{desired} replicas ready"))
    if available:
        conditions.append(ConditionView("Available", available.get("status", "Unknown"),
                                        str(available.get("reason", "")), str(available.get("message", ""))))
    if progressing:
        conditions.append(ConditionView("Progressing", progressing.get("status", "Unknown"),
                                        str(progressing.get("reason", "")), str(progressing.get("message", ""))))
    return ObjectStatus(phase, tuple(conditions)), extra
