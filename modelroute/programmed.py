"""`Programmed` conditions from Envoy's ACKs and NACKs (SPEC 3.5).

The xDS server reports, per response, which resources Envoy accepted or rejected; the
engine's `Compiled.owners` maps each resource back to the ModelServers and ModelRoutes it
came from. A NACK names every resource of the rejected response (SotW cannot say which one
was bad), so when Envoy's message names some of them we blame only those: one bad route
must not mark every other route unprogrammed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from routing_engine.api.resources import ObjectKey
from routing_engine.world import ConditionView, ObjectStatus

ResourceId = tuple[str, str]  # (type_url, name)


@dataclass(slots=True)
class ProgrammedTracker:
    owners: Mapping[ResourceId, tuple[ObjectKey, ...]] = field(default_factory=dict)
    # resource → None (ACKed) or Envoy's error message (NACKed)
    _state: dict[ResourceId, str | None] = field(default_factory=dict)

    def use(self, owners: Mapping[ResourceId, tuple[ObjectKey, ...]]) -> None:
        """A new compile: forget resources that are gone, keep what is known of the rest."""
        self.owners = owners
        self._state = {rid: s for rid, s in self._state.items() if rid in owners}

    def ack(self, type_url: str, names: Sequence[str]) -> None:
        for name in names:
            self._state[(type_url, name)] = None

    def nack(self, type_url: str, names: Sequence[str], message: str) -> None:
        blamed = [n for n in names if n in message] or list(names)
        for name in blamed:
            self._state[(type_url, name)] = message

    def conditions(self) -> dict[ObjectKey, ConditionView]:
        """Programmed per owner: False if any of its resources was rejected, True once
        all of them were accepted, Unknown while some wait for Envoy."""
        pending: dict[ObjectKey, int] = {}
        failed: dict[ObjectKey, str] = {}
        for rid, owner_keys in self.owners.items():
            known = rid in self._state
            error = self._state.get(rid)
            for owner in owner_keys:
                pending.setdefault(owner, 0)
                if not known:
                    pending[owner] += 1
                elif error is not None:
                    failed.setdefault(owner, error)
        result: dict[ObjectKey, ConditionView] = {}
        for owner in sorted(pending):
            if owner in failed:
                result[owner] = ConditionView("Programmed", "False", "ValidationFailed",
                                              f"Envoy rejected the configuration: {failed[owner]}")
            elif pending[owner]:
                result[owner] = ConditionView("Programmed", "Unknown", "Pending", "waiting for Envoy to accept it")
            else:
                result[owner] = ConditionView("Programmed", "True", "Programmed", "Envoy accepted the configuration")
        return result


def with_programmed(statuses: Mapping[ObjectKey, ObjectStatus],
                    programmed: Mapping[ObjectKey, ConditionView]) -> Mapping[ObjectKey, ObjectStatus]:
    """Statuses with the Programmed condition added; a rejected object's phase is Failed."""
    merged: dict[ObjectKey, ObjectStatus] = {}
    for key, status in statuses.items():
        condition = programmed.get(key)
        if condition is None:
            merged[key] = status
            continue
        conditions = (*(c for c in status.conditions if c.type != "Programmed"), condition)
        phase = "Failed" if condition.status == "False" else status.phase
        merged[key] = ObjectStatus(phase, conditions, status.service_endpoint, status.active_routes)
    return MappingProxyType(merged)
