"""Writes what the engine and the reconciler conclude into the status subresource.

Why it is careful:
- Several writers share a status (the engine's conditions, the canary controller's
  `status.canary`, an HPA's view): a JSON merge patch touches only the fields this writer
  owns, and carries the resourceVersion it was computed from, so a concurrent write makes
  it fail with Conflict instead of being overwritten; it then re-reads and recomputes.
- Writes cost API calls and wake every watcher: nothing is written when the status
  already says the same thing.
- `lastTransitionTime` moves only when a condition's status changes (Kubernetes
  convention); a new message alone keeps the old time. `observedGeneration` is the
  generation the status was computed for, on the status and on each condition.
A kind without a phase (AutoscalingPolicy) passes an empty one: none is written.
The clock is injectable so tests pin timestamps. With an `EventRecorder`, each write
that changes what happened (phase, Programmed, a rollout step) also records the
matching Kubernetes Events on the object (`events.status_events`).
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Callable, Mapping
from typing import Any

from typing import TYPE_CHECKING

from controller.kubernetes.errors import Conflict, NotFound
from controller.kubernetes.interface import KubeApi, Obj
from controller.kubernetes.resources import ResourceType
from routing_engine.world import ObjectStatus

if TYPE_CHECKING:
    from controller.kubernetes.events import EventRecorder

log = logging.getLogger(__name__)

Clock = Callable[[], datetime.datetime]


def utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def rfc3339(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def desired_status(status: ObjectStatus, *, current: Mapping[str, Any] | None, generation: int | None,
                   now: str, extra: Mapping[str, Any] | None = None) -> Obj:
    """The status fields this writer owns, with transition times carried over from `current`."""
    previous = {c.get("type"): c for c in (current or {}).get("conditions") or () if isinstance(c, dict)}
    conditions = []
    for cond in status.conditions:
        before = previous.get(cond.type)
        # The time carried over while the status holds; `now` when it moved (or had none).
        kept = before.get("lastTransitionTime") if before is not None and before.get("status") == cond.status else None
        entry: Obj = {"type": cond.type, "status": cond.status, "reason": cond.reason, "message": cond.message,
                      "lastTransitionTime": kept or now}
        if generation is not None:
            entry["observedGeneration"] = generation
        conditions.append(entry)
    body: Obj = {"phase": status.phase, "conditions": conditions} if status.phase else {"conditions": conditions}
    if generation is not None:
        body["observedGeneration"] = generation
    if status.service_endpoint is not None:
        body["serviceEndpoint"] = status.service_endpoint
    if status.active_routes is not None:
        body["activeRoutes"] = status.active_routes
    body.update(extra or {})
    return body


def is_current(current: Mapping[str, Any] | None, desired: Mapping[str, Any]) -> bool:
    """True when every field this writer owns already has the desired value."""
    current = current or {}
    return all(current.get(k) == v for k, v in desired.items())


class StatusWriter:
    def __init__(self, api: KubeApi, *, clock: Clock = utc_now, attempts: int = 5,
                 events: EventRecorder | None = None) -> None:
        self._api = api
        self._clock = clock
        self._attempts = attempts
        self.events = events
        self.writes = 0  # status patches sent (for metrics and tests)

    async def write(self, rtype: ResourceType, namespace: str, name: str, status: ObjectStatus, *,
                    extra: Mapping[str, Any] | None = None, current: Obj | None = None) -> bool:
        """Patch the status when it differs; True if a write happened. `current` (e.g. from
        an informer cache) saves a read; a Conflict re-reads. A deleted object is skipped."""
        for _ in range(self._attempts):
            try:
                obj = current if current is not None else await self._api.get(rtype, namespace, name)
            except NotFound:
                return False
            meta = obj.get("metadata", {})
            body = desired_status(status, current=obj.get("status"), generation=meta.get("generation"),
                                  now=rfc3339(self._clock()), extra=extra)
            if is_current(obj.get("status"), body):
                return False
            patch = {"metadata": {"resourceVersion": meta.get("resourceVersion")}, "status": body}
            try:
                await self._api.patch_status(rtype, namespace, name, patch)
            except Conflict:
                log.info("status conflict, re-reading", extra={"resource": f"{rtype.kind} {namespace}/{name}"})
                current = None
                continue
            except NotFound:
                return False
            self.writes += 1
            if self.events is not None:
                await self.events.status_changed(obj, body)
            return True
        raise Conflict(409, "Conflict", f"{rtype.kind} {namespace}/{name}: status still conflicting after "
                                        f"{self._attempts} attempts")
