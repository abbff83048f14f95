"""Status of the registry kinds (SPEC 2): Model and AutoscalingPolicy, as pure functions
of what the workload controller caches; `WorkloadController` writes them (leader only).

- Model: `Ready` once valid (an invalid one is left out by the provider and gets
  Failed/ValidationFailed from `runtime.invalid_statuses`), with the ModelInfers that use
  it in the message: the first `NAMED_USERS` by name, then how many more (a condition
  message is for a person; 10,000 names made it ~150 KB, rewritten with each). A
  ModelInfer whose Model is missing reports ModelNotFound itself.
- AutoscalingPolicy: `currentReplicas`/`desiredReplicas` from the HorizontalPodAutoscaler
  it compiles to (named after its target ModelInfer), the HPA's own conditions
  (AbleToScale, ScalingActive, ScalingLimited) and `Ready`: False with ModelNotFound when
  the target does not exist, ValidationFailed when another policy already scales it (the
  first by name wins, `workloads.policy_for`), Progressing until the HPA exists. The kind
  has no `phase` (SPEC 2), so none is written.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Literal

from controller.kubernetes.interface import Obj
from routing_engine.api.resources import AutoscalingPolicy, Model, ModelInfer
from routing_engine.world import ConditionView, ObjectStatus

_HPA_CONDITIONS = ("AbleToScale", "ScalingActive", "ScalingLimited")
NAMED_USERS = 10  # ModelInfers named in a Model's Ready message


def _condition_status(value: object) -> Literal["True", "False", "Unknown"]:
    """A condition status read from the API server: "True", "False", else "Unknown"."""
    text = str(value)
    return "True" if text == "True" else "False" if text == "False" else "Unknown"


def model_users(infers: Iterable[ModelInfer]) -> dict[tuple[str, str], list[str]]:
    """(namespace, name) of a Model → the ModelInfers that reference it ("ns/name", sorted):
    one pass over the ModelInfers for every Model's status."""
    users: dict[tuple[str, str], list[str]] = {}
    for i in infers:
        ref, meta = i.spec.model_ref, i.metadata
        users.setdefault((ref.namespace or meta.namespace, ref.name), []).append(f"{meta.namespace}/{meta.name}")
    for found in users.values():
        found.sort()
    return users


def model_status(model: Model, users: Sequence[str]) -> ObjectStatus:
    """`users`: the ModelInfers that reference it (`model_users`)."""
    if not users:
        used = "no ModelInfer references it yet"
    elif len(users) <= NAMED_USERS:
        used = f"used by ModelInfer {', '.join(users)}"
    else:
        used = (f"used by {len(users):,} ModelInfers: {', '.join(users[:NAMED_USERS])} "
                f"and {len(users) - NAMED_USERS:,} more")
    return ObjectStatus("Ready", (ConditionView("Accepted", "True", "Accepted", "passed validation"),
                                  ConditionView("Ready", "True", "Ready", used)))


def policy_target(policy: AutoscalingPolicy) -> str:
    ref = policy.spec.target_ref
    return f"{ref.kind} {policy.metadata.namespace}/{ref.name}"


def policy_target_problem(policy: AutoscalingPolicy, infer: ModelInfer | None,
                          winner: AutoscalingPolicy | None) -> ObjectStatus | None:
    """Why the policy cannot scale its target (missing, or scaled by another policy), as
    its status; None when it can. The same in both modes."""
    target = policy_target(policy)
    if infer is None:
        return ObjectStatus("", (ConditionView("Ready", "False", "ModelNotFound",
                                               f"spec.targetRef: {target} not found"),))
    if winner is not None and winner.metadata.name != policy.metadata.name:
        return ObjectStatus("", (ConditionView(
            "Ready", "False", "ValidationFailed",
            f"spec.targetRef: {target} is already scaled by AutoscalingPolicy {winner.metadata.name} "
            "(one policy per target; the first by name wins)"),))
    return None


def policy_status(policy: AutoscalingPolicy, infer: ModelInfer | None, winner: AutoscalingPolicy | None,
                  hpa: Obj | None) -> tuple[ObjectStatus, dict[str, Any]]:
    """(conditions, {currentReplicas, desiredReplicas}) of one policy."""
    ref = policy.spec.target_ref
    target = policy_target(policy)
    zero = {"currentReplicas": 0, "desiredReplicas": 0}
    problem = policy_target_problem(policy, infer, winner)
    if problem is not None:
        return problem, zero
    if hpa is None:
        return ObjectStatus("", (ConditionView("Ready", "False", "Progressing",
                                               f"creating the HorizontalPodAutoscaler for {target}"),)), zero
    status = hpa.get("status") or {}
    current, desired = int(status.get("currentReplicas") or 0), int(status.get("desiredReplicas") or 0)
    conditions = [ConditionView("Ready", "True", "HPAReady",
                                f"HorizontalPodAutoscaler {policy.metadata.namespace}/{ref.name}: "
                                f"{current} replicas, {desired} desired")]
    for cond in status.get("conditions") or ():
        if cond.get("type") in _HPA_CONDITIONS:
            conditions.append(ConditionView(str(cond["type"]), _condition_status(cond.get("status", "Unknown")),
                                            str(cond.get("reason", "")), str(cond.get("message", ""))))
    return ObjectStatus("", tuple(conditions)), {"currentReplicas": current, "desiredReplicas": desired}
