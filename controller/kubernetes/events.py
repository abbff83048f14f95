"""Kubernetes Events on the MatrixInfer objects: what `kubectl describe` and `kubectl get
events` show when something happened to one of them.

The leader emits them as it writes a status (`StatusWriter`), from the difference between
the status stored and the one written, so an event says what changed and nothing is
announced twice:
- the phase changed (`Ready`, `Active`, `Running`, `Pending`; a `Failed` phase is a
  Warning whose reason and message are the failing condition's, e.g. `ModelNotFound`);
- `Programmed` became False because Envoy rejected the configuration (Warning
  `ConfigRejected` with Envoy's message; the phase change it causes is not announced
  again), or True again (`Programmed`);
- a canary rollout started, moved its weights, was promoted, paused or rolled back
  (`CanaryStarted`, `CanaryWeightChanged`, `CanaryPromoted`, `CanaryPaused`, Warning
  `CanaryRolledBack`), from `status.canary`.

Events are core/v1 Events in the object's namespace, reported by component `modelroute`
and this replica's identity. Like client-go's recorder, a repeat of the same event on the
same object within `series_s` raises the stored Event's `count` instead of creating a new
one. An event that cannot be written is logged and dropped: it never holds up a status.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from controller.kubernetes.errors import ApiError, NotFound
from controller.kubernetes.interface import KubeApi, Obj
from controller.kubernetes.resources import EVENT
from controller.kubernetes.status_writer import Clock, rfc3339, utc_now

log = logging.getLogger(__name__)

COMPONENT = "modelroute"
_MAX_MESSAGE = 1024
_FAILED = "Failed"


@dataclass(frozen=True, slots=True)
class EventSpec:
    type: Literal["Normal", "Warning"]
    reason: str
    message: str


def _false_condition(status: Mapping[str, Any]) -> Mapping[str, Any] | None:
    return next((c for c in status.get("conditions") or () if isinstance(c, dict) and c.get("status") == "False"),
                None)


def _condition(status: Mapping[str, Any] | None, type_: str) -> str | None:
    for c in (status or {}).get("conditions") or ():
        if isinstance(c, dict) and c.get("type") == type_:
            return str(c.get("status"))
    return None


def _programmed_message(status: Mapping[str, Any]) -> str:
    return next((str(c.get("message", "")) for c in status.get("conditions") or ()
                 if isinstance(c, dict) and c.get("type") == "Programmed"), "")


def _split(canary: Mapping[str, Any]) -> str:
    return f"stable {canary.get('stableWeight')}% / canary {canary.get('canaryWeight')}%"


def _canary_events(before: Mapping[str, Any] | None, after: Mapping[str, Any] | None) -> list[EventSpec]:
    if not isinstance(after, dict):
        return []
    before = before if isinstance(before, dict) else {}
    phase, old_phase = after.get("phase"), before.get("phase")
    note = f": {after['message']}" if after.get("message") else ""
    if phase != old_phase:
        if phase == "Progressing":
            return [EventSpec("Normal", "CanaryStarted" if old_phase is None else "CanaryResumed",
                              f"rollout progressing at {_split(after)}")]
        if phase == "Promoted":
            return [EventSpec("Normal", "CanaryPromoted", f"canary promoted: {_split(after)}{note}")]
        if phase == "RolledBack":
            return [EventSpec("Warning", "CanaryRolledBack", f"canary rolled back: {_split(after)}{note}")]
        if phase == "Paused":
            return [EventSpec("Normal", "CanaryPaused", f"rollout paused at {_split(after)}{note}")]
        return []
    if (after.get("stableWeight"), after.get("canaryWeight")) != (before.get("stableWeight"), before.get("canaryWeight")):
        rate = after.get("lastSuccessRate")
        measured = f" (canary success rate {rate}%)" if rate is not None else ""
        return [EventSpec("Normal", "CanaryWeightChanged", f"{_split(before)} → {_split(after)}{measured}")]
    return []


def status_events(before: Mapping[str, Any] | None, after: Mapping[str, Any]) -> list[EventSpec]:
    """What happened between two statuses of one object, as events (see module docstring)."""
    before = before or {}
    found: list[EventSpec] = []
    programmed_before, programmed_after = _condition(before, "Programmed"), _condition(after, "Programmed")
    rejected = programmed_after == "False" and programmed_before != "False"
    if rejected:
        found.append(EventSpec("Warning", "ConfigRejected", _programmed_message(after)))
    elif programmed_after == "True" and programmed_before == "False":
        found.append(EventSpec("Normal", "Programmed", _programmed_message(after)))
    phase, old_phase = after.get("phase"), before.get("phase")
    if phase and phase != old_phase and not (rejected and phase == _FAILED):
        failing = _false_condition(after)
        if phase == _FAILED and failing is not None:
            found.append(EventSpec("Warning", str(failing.get("reason") or _FAILED), str(failing.get("message", ""))))
        else:
            why = f": {failing.get('message')}" if failing is not None and failing.get("message") else ""
            found.append(EventSpec("Warning" if phase == _FAILED else "Normal", str(phase),
                                   f"phase {old_phase or 'none'} → {phase}{why}"))
    found.extend(_canary_events(before.get("canary"), after.get("canary")))
    return found


class EventRecorder:
    def __init__(self, api: KubeApi, *, instance: str, clock: Clock = utc_now, series_s: float = 600.0,
                 monotonic: Callable[[], float] = time.monotonic, remembered: int = 4096) -> None:
        self._api = api
        self._instance = instance
        self._clock = clock
        self._monotonic = monotonic
        self._series_s = series_s
        self._remembered = remembered
        # (uid, type, reason, message) → (event namespace, name, count, first seen)
        self._series: OrderedDict[tuple[str, str, str, str], tuple[str, str, int, float]] = OrderedDict()
        self.emitted = 0  # Events created or counted up, for tests and metrics

    async def status_changed(self, obj: Obj, written: Mapping[str, Any]) -> None:
        """Record what happened between `obj`'s stored status and the `written` one."""
        for event in status_events(obj.get("status"), written):
            await self.record(obj, event)

    async def record(self, obj: Obj, event: EventSpec) -> None:
        meta = obj.get("metadata") or {}
        namespace, name, uid = str(meta.get("namespace") or "default"), str(meta.get("name")), str(meta.get("uid", ""))
        message = event.message[:_MAX_MESSAGE]
        key = (uid or f"{namespace}/{name}", event.type, event.reason, message)
        now = rfc3339(self._clock())
        try:
            known = self._series.get(key)
            if known is not None and self._monotonic() - known[3] < self._series_s:
                ns, event_name, count, first = known
                try:
                    await self._api.patch(EVENT, ns, event_name, {"count": count + 1, "lastTimestamp": now})
                    self._remember(key, (ns, event_name, count + 1, first))
                    self.emitted += 1
                    return
                except NotFound:
                    pass  # expired (Events live an hour): start a new one
            involved = {"apiVersion": obj.get("apiVersion"), "kind": obj.get("kind"), "name": name,
                        "namespace": namespace, "uid": uid, "resourceVersion": meta.get("resourceVersion")}
            body = {"apiVersion": "v1", "kind": "Event",
                    "metadata": {"name": f"{name}.{uuid.uuid4().hex[:16]}", "namespace": namespace},
                    "involvedObject": {k: v for k, v in involved.items() if v},
                    "type": event.type, "reason": event.reason, "message": message,
                    "source": {"component": COMPONENT}, "reportingComponent": COMPONENT,
                    "reportingInstance": self._instance, "firstTimestamp": now, "lastTimestamp": now, "count": 1}
            created = await self._api.create(EVENT, body)
            self._remember(key, (namespace, str(created["metadata"]["name"]), 1, self._monotonic()))
            self.emitted += 1
        except ApiError as err:
            log.warning("event not recorded", extra={"resource": f"{obj.get('kind')} {namespace}/{name}",
                                                     "reason": event.reason, "error": str(err)})

    def _remember(self, key: tuple[str, str, str, str], value: tuple[str, str, int, float]) -> None:
        self._series[key] = value
        self._series.move_to_end(key)
        while len(self._series) > self._remembered:
            self._series.popitem(last=False)
