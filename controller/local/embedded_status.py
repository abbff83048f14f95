"""What embedded mode adds to the engine's statuses (which cover ModelServers and
ModelRoutes), so that `modelroute status` says what Kubernetes mode would write, and
what is true of the local processes:

- **ModelInfer**: Kubernetes mode's own `infer_status`, fed with the local replicas as
  the Deployment they stand in for: Running/Pending with Ready ModelDeployed/Progressing.
  A ModelInfer whose Model does not exist is Failed with ModelNotFound, as in a cluster;
  embedded mode still runs its mock replicas (they need no model files), and the status
  says so.
- **Model, AutoscalingPolicy**: Kubernetes mode's `registry_status`. Embedded mode has no
  autoscaler: a policy that could apply is Ready=False (NotSupported) and reports the
  replica counts its target runs with.
- **Rejected objects** (the provider's validation errors): Accepted=False with
  ValidationFailed and every broken rule. With no good version: phase Failed. With one:
  it keeps serving, so its phase stays, and the condition says so.
- **Gateway down**: while the supervised Envoy is not running, nothing it serves is
  reachable: its ModelServers and ModelRoutes are Pending with Ready=False
  (GatewayNotRunning).

Pure functions of the objects, the replica counts and the errors; the wiring calls them
for every status publication.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any, Protocol

from controller.kubernetes.registry_status import model_status, model_users, policy_target, policy_target_problem
from controller.kubernetes.workloads import WorkloadError, cross_namespace_model, infer_status, policy_for
from controller.local.status_view import ReplicaCounts
from routing_engine.api.references import allows_from
from routing_engine.api.resources import AutoscalingPolicy, Model, ModelInfer, ModelRoute, ModelServer, ObjectKey, Resource
from routing_engine.world import ConditionView, ObjectStatus

_ACCEPTED, _READY = "Accepted", "Ready"
# Objects that have a status (Secrets have none, as in Kubernetes mode).
_SHOWN_KINDS = frozenset({ModelServer.KIND, ModelRoute.KIND, ModelInfer.KIND, Model.KIND, AutoscalingPolicy.KIND})


class Rejection(Protocol):
    """A validation error of one object (`routing_engine.api.errors.ManifestError`)."""

    @property
    def object_key(self) -> ObjectKey | None: ...


def workload_statuses(objects: Iterable[Resource], replicas: Mapping[ObjectKey, ReplicaCounts]
                      ) -> tuple[dict[ObjectKey, ObjectStatus], dict[ObjectKey, dict[str, Any]]]:
    """(statuses, extra status fields) of every ModelInfer, Model and AutoscalingPolicy."""
    objects = tuple(objects)
    infers = [o for o in objects if isinstance(o, ModelInfer)]
    models = {o.key: o for o in objects if isinstance(o, Model)}
    policies = sorted((o for o in objects if isinstance(o, AutoscalingPolicy)), key=lambda p: p.key)
    statuses: dict[ObjectKey, ObjectStatus] = {}
    extras: dict[ObjectKey, dict[str, Any]] = {}
    for infer in infers:
        statuses[infer.key] = _infer_status(infer, models, replicas.get(infer.key))
    users = model_users(infers)
    for model in models.values():
        statuses[model.key] = model_status(model, users.get((model.metadata.namespace, model.metadata.name), ()))
    by_key = {i.key: i for i in infers}
    for policy in policies:
        ref = policy.spec.target_ref
        target = by_key.get(ObjectKey(ModelInfer.KIND, policy.metadata.namespace, ref.name)) \
            if ref.kind == ModelInfer.KIND else None
        winner = policy_for(target, policies) if target is not None else None
        problem = policy_target_problem(policy, target, winner)
        counts = replicas.get(target.key) if target is not None else None
        current = counts.ready if counts is not None else 0
        desired = counts.desired if counts is not None else 0
        extras[policy.key] = {"currentReplicas": current, "desiredReplicas": desired}
        statuses[policy.key] = problem or ObjectStatus("", (
            ConditionView(_ACCEPTED, "True", _ACCEPTED, "passed validation"),
            ConditionView(_READY, "False", "NotSupported",
                          f"embedded mode runs spec.replicas of {policy_target(policy)} ({desired}); "
                          "autoscaling needs a Kubernetes cluster (a HorizontalPodAutoscaler)")))
    return statuses, extras


def _infer_status(infer: ModelInfer, models: Mapping[ObjectKey, Model], counts: ReplicaCounts | None) -> ObjectStatus:
    ref = infer.spec.model_ref.resolve(Model.KIND, infer.metadata.namespace)
    running = counts.ready if counts is not None else 0
    if ref not in models:
        status, _ = infer_status(infer, None, error=WorkloadError(
            "ModelNotFound", f"spec.modelRef: Model {ref.namespace}/{ref.name} does not exist (embedded mode still "
                             f"runs {running} mock replica(s) for it; a cluster would run none)"))
        return status
    if not allows_from(models[ref], infer.metadata.namespace):
        status, _ = infer_status(infer, None, error=WorkloadError(
            "NetworkPolicyViolation", f"{cross_namespace_model(models[ref], infer)} (embedded mode still runs "
                                      f"{running} mock replica(s) for it; a cluster would run none)"))
        return status
    # The replica runtime as the Deployment it stands in for: the same rules as a cluster.
    desired = counts.desired if counts is not None else infer.spec.replicas
    deployment = {"status": {"replicas": desired, "readyReplicas": running}}
    status, _ = infer_status(infer, deployment)
    return status


def with_rejections(statuses: Mapping[ObjectKey, ObjectStatus],
                    errors: Iterable[Rejection]) -> dict[ObjectKey, ObjectStatus]:
    """`statuses` with Accepted=False (ValidationFailed) on every object the provider
    rejected; objects with no good version are added as Failed."""
    messages: dict[ObjectKey, list[str]] = {}
    for error in errors:
        key = error.object_key
        if key is not None and key.kind in _SHOWN_KINDS:
            messages.setdefault(key, []).append(str(error))
    merged = dict(statuses)
    for key, texts in messages.items():
        current = merged.get(key)
        if current is None:
            merged[key] = ObjectStatus("Failed", (ConditionView(_ACCEPTED, "False", "ValidationFailed",
                                                                "; ".join(texts)),))
            continue
        rejected = ConditionView(_ACCEPTED, "False", "ValidationFailed",
                                 "; ".join(texts) + "; the last good version keeps serving")
        merged[key] = replace(current, conditions=(rejected, *(c for c in current.conditions if c.type != _ACCEPTED)))
    return merged



def with_gateway_down(statuses: Mapping[ObjectKey, ObjectStatus], message: str) -> dict[ObjectKey, ObjectStatus]:
    """While the gateway Envoy is not running: its ModelServers and ModelRoutes are not
    Ready (those that failed for their own reasons keep their phase and message)."""
    down = ConditionView(_READY, "False", "GatewayNotRunning", message)
    merged = dict(statuses)
    for key, status in statuses.items():
        if key.kind not in (ModelServer.KIND, ModelRoute.KIND) or status.phase == "Failed":
            continue
        merged[key] = replace(status, phase="Pending",
                              conditions=(*(c for c in status.conditions if c.type != _READY), down))
    return merged
