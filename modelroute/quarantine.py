"""When Envoy rejects a config anyway: find the objects that caused it, hold only them
back, and keep serving (and editing) everything else (SPEC 3.5, 3.8).

The engine checks inputs with Envoy's own rules, so a NACK means something those rules
missed (or a third-party plugin's output). One rejected listener or route table would
otherwise stop every later edit on that port: Envoy keeps the old one and the server
never resends the rejected version. So the control loop asks this class which objects
to compile:

- Every object version that was part of a compile the gateway Envoys fully accepted is
  *good*.
- On a rejection, the *suspects* are the compiled objects that differ from their good
  version and own a rejected resource (else every changed object; else the owners of
  the rejected resources). One suspect is *quarantined*: its good version is compiled in
  its place (or nothing, if it never had one), and its status says why, with Envoy's
  message. Several suspects are bisected: half of them are *held* back (their good
  version compiled instead) and the rest tried again.
- On acceptance, everything compiled becomes good and half of the held objects are
  released to be tried again; held objects that are fine thus come back, a bad one is
  rejected again and narrowed down further. log2(n) round trips find one bad object
  among n changed ones.
- A quarantine ends as soon as the object changes (fixed) or is deleted: the new
  version is compiled and judged like any other.

Pure logic, no clocks or I/O: the control loop feeds it compiles and verdicts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from routing_engine.api.resources import ObjectKey, Resource
from routing_engine.world import ConditionView, ObjectStatus


@dataclass(frozen=True, slots=True)
class Rejection:
    version: Resource  # the object exactly as Envoy rejected it
    message: str
    serving_previous: bool  # its last good version is compiled in its place


class Quarantine:
    """The objects of the compile being judged (`tried`) and of the last accepted one
    (`good`) are kept as the compiled sequences and indexed by key only when a rejection
    needs them: at 10,000 objects, indexing them on every compile and acceptance would
    hold up each push on the event loop."""

    def __init__(self) -> None:
        self._good_objects: Sequence[Resource] = ()
        self._good_index: dict[ObjectKey, Resource] | None = {}
        self._rejected: dict[ObjectKey, Rejection] = {}
        self._held: list[ObjectKey] = []
        self._tried_objects: Sequence[Resource] = ()
        self._tried_index: dict[ObjectKey, Resource] | None = {}

    @property
    def _good(self) -> dict[ObjectKey, Resource]:
        if self._good_index is None:
            self._good_index = {o.key: o for o in self._good_objects}
        return self._good_index

    @property
    def _tried(self) -> dict[ObjectKey, Resource]:
        if self._tried_index is None:
            self._tried_index = {o.key: o for o in self._tried_objects}
        return self._tried_index

    @property
    def held(self) -> tuple[ObjectKey, ...]:
        return tuple(self._held)

    @property
    def rejected(self) -> Mapping[ObjectKey, Rejection]:
        return MappingProxyType(self._rejected)

    def effective(self, objects: Sequence[Resource]) -> tuple[Resource, ...]:
        """What to compile: a quarantined or held object is replaced by its good version
        (or left out). Quarantines of objects that changed or went away end here."""
        if not self._rejected and not self._held:
            return objects if isinstance(objects, tuple) else tuple(objects)  # nothing held back: as handed over
        present = {o.key: o for o in objects}
        for key in [k for k, r in self._rejected.items() if not _same(present.get(k), r.version)]:
            del self._rejected[key]
        self._held = [k for k in self._held if k in present or k in self._good]
        out: list[Resource] = []
        for obj in objects:
            if obj.key in self._rejected or obj.key in self._held:
                good = self._good.get(obj.key)
                if good is not None:
                    out.append(good)
            else:
                out.append(obj)
        return tuple(out)

    def compiled(self, objects: Iterable[Resource]) -> None:
        """The objects of the compile whose verdict comes next."""
        self._tried_objects, self._tried_index = tuple(objects), None

    def accepted(self) -> bool:
        """Envoy accepted the compile: it is all good. True when a held half was released
        (compile again)."""
        self._good_objects, self._good_index = self._tried_objects, self._tried_index
        if not self._held:
            return False
        self._held = self._held[len(self._held) // 2:] if len(self._held) > 1 else []
        return True

    def rejected_by_envoy(self, owners: frozenset[ObjectKey], message: str) -> bool:
        """Envoy rejected resources of the compile, owned by `owners`. True when
        something was quarantined or held (compile again)."""
        changed = sorted(k for k, o in self._tried.items() if not _same(self._good.get(k), o))
        suspects = [k for k in changed if k in owners] or changed or sorted(k for k in owners if k in self._tried)
        if not suspects:
            return False
        if len(suspects) == 1:
            key = suspects[0]
            self._rejected[key] = Rejection(self._tried[key], message, key in self._good)
            return True
        self._held.extend(suspects[len(suspects) // 2:])
        return True

    def statuses(self, statuses: Mapping[ObjectKey, ObjectStatus]) -> Mapping[ObjectKey, ObjectStatus]:
        """Statuses with each quarantined object Failed, Programmed=False with Envoy's
        message (an object with no good version has no compiled status: it gets one)."""
        if not self._rejected:
            return statuses
        merged = dict(statuses)
        for key, rejection in sorted(self._rejected.items()):
            what = ("its last accepted version keeps serving" if rejection.serving_previous
                    else "it is not served")
            condition = ConditionView("Programmed", "False", "ValidationFailed",
                                      f"Envoy rejected this version ({rejection.message}); {what}")
            current = merged.get(key)
            others = tuple(c for c in current.conditions if c.type != "Programmed") if current else ()
            merged[key] = ObjectStatus("Failed", (*others, condition),
                                       current.service_endpoint if current else None,
                                       current.active_routes if current else None)
        return MappingProxyType(merged)


def _same(a: Resource | None, b: Resource | None) -> bool:
    return a is b or (a is not None and b is not None and a == b)
