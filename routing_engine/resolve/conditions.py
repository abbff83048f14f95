"""Condition vocabulary of `resolve`: reasons, problems, and how they become conditions.

Resolution never raises for a resource pydantic accepted: each rule that fails records a
`Problem` (a seed error code plus a message naming the resource, the field path and the
rule) and resolution goes on. `status` turns the collected problems into Kubernetes-style
conditions at the end.

Reasons for failures are the seed's error codes (`api-overview.md`): `ModelNotFound` for
any reference that does not resolve (a missing or failed ModelServer, ModelInfer or
Secret), `ValidationFailed` for a spec or referenced material that is unusable (an
object the source holds but refused as invalid, `World.refused`, is such material),
`NetworkPolicyViolation` for a forbidden cross-namespace reference or a port/path claim
lost to an older ModelServer. Positive reasons are named after the condition type, as in
Gateway API.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from routing_engine.api.resources import ObjectKey
from routing_engine.world import ConditionView

ACCEPTED = "Accepted"
RESOLVED_REFS = "ResolvedRefs"
READY = "Ready"
SHADOWED = "Shadowed"

MODEL_NOT_FOUND = "ModelNotFound"
VALIDATION_FAILED = "ValidationFailed"
NETWORK_POLICY_VIOLATION = "NetworkPolicyViolation"

ENDPOINTS_READY = "EndpointsReady"
NO_HEALTHY_ENDPOINTS = "NoHealthyEndpoints"
GROUP_SHADOWED = "GroupShadowed"
NOT_SHADOWED = "NotShadowed"


@dataclass(frozen=True, slots=True)
class Problem:
    """One broken rule: `reason` is a seed error code, `message` is user-facing."""

    reason: str
    message: str


def problem(reason: str, owner: ObjectKey, field: str, rule: str) -> Problem:
    """`ModelRoute default/r: spec.routes[1].destination.modelServerRef: <rule>`."""
    return Problem(reason, f"{owner}: {field}: {rule}")


def unresolved(key: ObjectKey, refused: frozenset[ObjectKey]) -> tuple[str, str]:
    """(reason, rule) for a reference to `key` that found no object: not found, or found
    invalid by its source (whose own errors then say why; "not found" would send the
    user looking for an object that is there)."""
    if key in refused:
        return VALIDATION_FAILED, f"{key} exists but is invalid (its own errors say why)"
    return MODEL_NOT_FOUND, f"{key} not found"


def condition(type_: str, problems: Sequence[Problem], ok_reason: str, ok_message: str = "") -> ConditionView:
    """True with `ok_reason` when there are no problems; otherwise False with the first
    problem's reason and every message, in the order they were found."""
    if not problems:
        return ConditionView(type_, "True", ok_reason, ok_message)
    return ConditionView(type_, "False", problems[0].reason, "; ".join(p.message for p in problems))
