"""Makes the cluster match `workloads`: creates or updates a ModelInfer's Deployment,
Service and HPA, deletes an HPA it no longer wants, and writes the ModelInfer status
from the Deployment.

- Writes happen only when the object differs: the desired manifest is compared as a
  subset of what the API server holds, because the server adds defaults (strategy,
  terminationMessagePath, ...) that would otherwise make every pass an update.
- An update replaces `spec` wholesale (so a field removed from the ModelInfer, e.g. a
  nodeSelector, disappears from the Deployment) and carries the resourceVersion it was
  computed from; a Conflict (someone else wrote in between) re-reads and retries, an
  AlreadyExists on create (another replica raced us) reads and compares.
- Server-allocated Service fields (clusterIP, ...) are carried over on update.
- Reads come from the caller's informer caches when it has them (`Children`), as a
  controller-runtime client reads: a child that already matches costs no API call, so a
  controller restarting over 10,000 up-to-date ModelInfers reads nothing per object
  (it read ~4 objects each; docs/decisions.md has the numbers). A stale cache cannot
  cause a wrong write (updates and deletes follow a fresh GET, an update carries its
  resourceVersion, a create of what the cache lacks fails if it exists); it can only
  skip one, and the watch event that makes the cache current makes the caller reconcile
  the owner again.
- Nothing here owns a loop: `controller.kubernetes.workload_controller` decides when.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

from controller.kubernetes import workloads
from controller.kubernetes.errors import AlreadyExists, Conflict, NotFound
from controller.kubernetes.interface import KubeApi, Obj, name_of, namespace_of
from controller.kubernetes.resources import DEPLOYMENT, HPA, MODEL_INFER, SERVICE, ResourceType
from controller.kubernetes.status_writer import StatusWriter
from routing_engine.api.resources import AutoscalingPolicy, Model, ModelInfer

log = logging.getLogger(__name__)

Outcome = Literal["created", "updated", "unchanged", "deleted", "absent"]
_SERVICE_ALLOCATED = ("clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy", "healthCheckNodePort")


class _Absent:
    """An informer's answer for an object it knows is not there."""


ABSENT = _Absent()
# What a cache says of one object: the object, ABSENT, or None (no cache: read it).
Cached = Obj | _Absent | None
Children = Callable[[ResourceType, str, str], Cached]  # (type, namespace, name)


def _no_cache(rtype: ResourceType, namespace: str, name: str) -> Cached:
    return None


def is_subset(desired: Any, actual: Any) -> bool:
    """True when every value in `desired` is in `actual` (maps: by key; lists: same
    length, element by element); what the server added is ignored."""
    if isinstance(desired, dict):
        return isinstance(actual, dict) and all(k in actual and is_subset(v, actual[k]) for k, v in desired.items())
    if isinstance(desired, list):
        return isinstance(actual, list) and len(desired) == len(actual) and all(
            is_subset(d, a) for d, a in zip(desired, actual, strict=True))
    return bool(desired == actual)


def updated_object(current: Obj, desired: Obj) -> Obj:
    """`current` with the desired labels, annotations, owner references and spec."""
    new = copy.deepcopy(current)
    meta = new["metadata"]
    for field in ("labels", "annotations"):  # merged: others' keys (kubectl, tools) are kept
        if desired["metadata"].get(field) or meta.get(field):
            meta[field] = {**(meta.get(field) or {}), **(desired["metadata"].get(field) or {})}
    meta["ownerReferences"] = desired["metadata"].get("ownerReferences", [])
    spec = copy.deepcopy(desired["spec"])
    if desired["kind"] == "Service":
        for key in _SERVICE_ALLOCATED:
            if key in (current.get("spec") or {}) and key not in spec:
                spec[key] = current["spec"][key]
    new["spec"] = spec
    return new


def _unchanged(current: Obj, desired: Obj) -> bool:
    meta, want = current["metadata"], desired["metadata"]
    return is_subset(desired["spec"], current.get("spec")) and all(
        is_subset(want.get(f) or {}, meta.get(f) or {}) for f in ("labels", "annotations")) and (
        desired["metadata"].get("ownerReferences", []) == current["metadata"].get("ownerReferences", []))


async def apply(api: KubeApi, rtype: ResourceType, desired: Obj, *, attempts: int = 5,
                cached: Cached = None) -> tuple[Obj, Outcome]:
    """Create `desired`, or update it only where it differs; conflict-safe. `cached`:
    what an informer holds; an object that already matches is not read, and one it
    knows is ABSENT is created without a read first."""
    if isinstance(cached, dict) and _unchanged(cached, desired):
        return cached, "unchanged"
    namespace, name = namespace_of(desired), name_of(desired)
    read = cached is not ABSENT
    for _ in range(attempts):
        current = await _read(api, rtype, namespace, name) if read else None
        read = True
        if current is None:
            try:
                return await api.create(rtype, desired), "created"
            except AlreadyExists:
                continue
        if _unchanged(current, desired):
            return current, "unchanged"
        try:
            return await api.replace(rtype, updated_object(current, desired)), "updated"
        except Conflict:
            log.info("conflict, re-reading", extra={"resource": f"{rtype.kind} {namespace}/{name}"})
    raise Conflict(409, "Conflict", f"{rtype.kind} {namespace}/{name}: still conflicting after {attempts} attempts")


async def _read(api: KubeApi, rtype: ResourceType, namespace: str, name: str) -> Obj | None:
    try:
        return await api.get(rtype, namespace, name)
    except NotFound:
        return None


async def delete_owned(api: KubeApi, rtype: ResourceType, namespace: str, name: str, owner_uid: str,
                       cached: Cached = None) -> Outcome:
    """Delete the object only if `owner_uid` controls it (never a user's own object),
    as read just before. `cached` ABSENT (an informer of our labelled children has none)
    saves that read: an object of ours whose label was removed is released, not deleted,
    as a ReplicaSet releases a pod whose labels no longer match."""
    current = None if cached is ABSENT else await _read(api, rtype, namespace, name)
    if current is None:
        return "absent"
    if not any(r.get("uid") == owner_uid and r.get("controller") for r in current["metadata"].get("ownerReferences") or ()):
        return "absent"
    try:
        await api.delete(rtype, namespace, name)
    except NotFound:
        return "absent"
    return "deleted"


@dataclass(frozen=True, slots=True)
class ReconcileResult:
    deployment: Outcome | None
    service: Outcome | None
    hpa: Outcome | None
    status_written: bool
    error: str | None = None


class ModelInferReconciler:
    """`children`: the caller's informer caches of Deployments, Services and HPAs
    (default: none, every child is read)."""

    def __init__(self, api: KubeApi, status: StatusWriter, children: Children = _no_cache) -> None:
        self._api = api
        self._status = status
        self._children = children

    async def reconcile(self, infer: ModelInfer, model: Model | None,
                        policies: Iterable[AutoscalingPolicy] = (), *, current: Obj | None = None) -> ReconcileResult:
        """`current`: the ModelInfer as an informer holds it (saves reading it back for
        its status)."""
        ns, name = infer.metadata.namespace, infer.metadata.name
        try:
            desired = workloads.workload(infer, model, policies)
        except workloads.WorkloadError as err:
            log.warning("cannot run ModelInfer", extra={"resource": str(infer.key), "reason": err.reason,
                                                        "error": err.message})
            status, extra = workloads.infer_status(infer, None, error=err)
            written = await self._status.write(MODEL_INFER, ns, name, status, extra=extra, current=current)
            return ReconcileResult(None, None, None, written, err.message)
        deploy, deploy_outcome = await apply(self._api, DEPLOYMENT, desired.deployment,
                                             cached=self._children(DEPLOYMENT, ns, name))
        _, service_outcome = await apply(self._api, SERVICE, desired.service, cached=self._children(SERVICE, ns, name))
        if desired.hpa is not None:
            _, hpa_outcome = await apply(self._api, HPA, desired.hpa, cached=self._children(HPA, ns, name))
        else:
            assert infer.metadata.uid is not None  # workload() checked it
            hpa_outcome = await delete_owned(self._api, HPA, ns, name, infer.metadata.uid,
                                             self._children(HPA, ns, name))
        status, extra = workloads.infer_status(infer, deploy)
        written = await self._status.write(MODEL_INFER, ns, name, status, extra=extra, current=current)
        return ReconcileResult(deploy_outcome, service_outcome, hpa_outcome, written)
