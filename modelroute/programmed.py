"""`Programmed` conditions from Envoy's ACKs and NACKs (SPEC 3.5), per resource version.

The xDS server reports, per response, which resources at which versions Envoy accepted
or rejected; the engine's `Compiled.owners` maps each resource back to the ModelServers
and ModelRoutes it came from. An object is Programmed when every one of its resources
is accepted *at the version of the current compile*: a version rejected once stays
rejected, and one accepted once stays accepted, so a fix that brings back a version
Envoy already holds (and so is never sent again) clears `Programmed=False` at once.

A NACK names every resource of the rejected response (SotW cannot say which one was
bad), so when Envoy's message names some of them only those are blamed: one bad route
must not mark every other route unprogrammed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from routing_engine.api.resources import ObjectKey
from routing_engine.world import ConditionView, EnvoyResource, ObjectStatus

ResourceId = tuple[str, str]  # (type_url, name)

# Verdicts remembered per resource: the current version and a few before it (a revert
# brings an old version back, which Envoy already holds and is never sent again).
_VERSIONS_KEPT = 4
# Resources that left the compile keep their verdicts too (a bisection step or a revert
# brings them back under the same name), the most recently judged first, up to this many
# beyond the current compile's.
_GONE_KEPT = 256


@dataclass(frozen=True, slots=True)
class Rejected:
    """The current compile has resources Envoy rejected: which, whose, and why."""

    resources: tuple[ResourceId, ...]
    owners: frozenset[ObjectKey]
    message: str


@dataclass(slots=True)
class ProgrammedTracker:
    owners: Mapping[ResourceId, tuple[ObjectKey, ...]] = field(default_factory=dict)
    versions: Mapping[ResourceId, str] = field(default_factory=dict)  # of the current compile
    # resource → {version: None (accepted) | Envoy's message (rejected)}, oldest first
    _verdicts: dict[ResourceId, dict[str, str | None]] = field(default_factory=dict)

    def use(self, owners: Mapping[ResourceId, tuple[ObjectKey, ...]],
            resources: Mapping[str, Mapping[str, EnvoyResource]]) -> None:
        """A new compile: judge its resources from now on. Verdicts of resources that are
        gone are kept, a bounded number of them, most recent first."""
        self.owners = owners
        self.versions = {(t, n): r.version for t, by_name in resources.items() for n, r in by_name.items()}
        gone = [rid for rid in self._verdicts if rid not in owners]  # oldest first
        for rid in gone[:max(0, len(gone) - max(_GONE_KEPT, len(owners)))]:
            del self._verdicts[rid]

    def ack(self, type_url: str, resources: Mapping[str, str]) -> None:
        for name, version in resources.items():
            self._record((type_url, name), version, None)

    def nack(self, type_url: str, resources: Mapping[str, str], message: str) -> None:
        blamed = [n for n in resources if n in message] or list(resources)
        for name in blamed:
            self._record((type_url, name), resources[name], message)

    def _record(self, rid: ResourceId, version: str, verdict: str | None) -> None:
        known = self._verdicts.pop(rid, {})
        self._verdicts[rid] = known  # most recently judged last
        known.pop(version, None)
        known[version] = verdict
        while len(known) > _VERSIONS_KEPT:
            del known[next(iter(known))]

    def _state(self, rid: ResourceId) -> tuple[bool, str | None]:
        """(known, error) of the current version of `rid`."""
        known = self._verdicts.get(rid)
        version = self.versions.get(rid)
        if known is None or version not in known:
            return False, None
        return True, known[version]

    def rejected(self) -> Rejected | None:
        """The current compile's rejected resources, if any."""
        found = sorted((rid, error) for rid in self.owners for known, error in [self._state(rid)]
                       if known and error is not None)  # sorted when found: rare, and 10,000s of ids otherwise
        if not found:
            return None
        owners = frozenset(o for rid, _ in found for o in self.owners[rid])
        return Rejected(tuple(rid for rid, _ in found), owners, found[0][1] or "")

    def all_accepted(self) -> bool:
        return bool(self.owners) and all(self._state(rid) == (True, None) for rid in self.owners)

    def conditions(self) -> dict[ObjectKey, ConditionView]:
        """Programmed per owner: False if any of its resources was rejected, True once
        all of them were accepted, Unknown while some wait for Envoy."""
        pending: dict[ObjectKey, int] = {}
        failed: dict[ObjectKey, str] = {}
        for rid, owner_keys in self.owners.items():
            known, error = self._state(rid)
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
