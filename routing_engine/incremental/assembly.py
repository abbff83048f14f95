"""The translator's output, kept between runs and patched part by part.

A run's output is the union of parts: each listener's route tables and scopes, each
listener's Listener, the backends' clusters and endpoints, the failover clusters and
each plugin's extra resources. A part is an immutable `Batch`. A part handed in again
as the very same object contributes what it did last run, so nothing of it is looked
at; a part that says which names it changed against the batch it replaces (`Batch.of`)
costs those names only. A one-route edit at 10,000 routes therefore costs the few
names that changed plus C-level copies of the sorted mappings handed out, not a merge
of 50,000 resources. A resource equal to last run's keeps last run's object, so a
mapping whose content did not change is handed out again as the very same object (the
xDS snapshot then reuses its version without hashing it again).

The result is the same as adding every part's resources in order to one fresh batch
(tests compare the two after random edit sequences): a name added twice takes the
later resource and the union of owners. Worlds where two parts add one name are rare;
they are merged whole on every run, which is simply that definition.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping
from types import MappingProxyType
from typing import Any

from routing_engine.api.resources import ObjectKey
from routing_engine.translate.result import Collected
from routing_engine.translate.xds import TYPE_ORDER
from routing_engine.world import EnvoyResource

Owners = tuple[ObjectKey, ...]
ResourceId = tuple[str, str]  # (type URL, name)


class Batch(Collected):
    """Resources with their owners (`Collected`), never changed once handed
    to `Assembly.assemble`. `base` and `changed`, when set, say that this batch is
    `base` with only the names in `changed` (per type) set, replaced or removed: a hint
    the next `assemble` reads and then drops, so batches never chain up in memory."""

    __slots__ = ("base", "changed")

    def __init__(self) -> None:
        super().__init__()
        self.base: Batch | None = None
        self.changed: Mapping[str, Iterable[str]] | None = None

    @classmethod
    def of(cls, resources: dict[str, dict[str, EnvoyResource]], owners: dict[ResourceId, Owners],
           base: Batch | None = None, changed: Mapping[str, Iterable[str]] | None = None) -> Batch:
        batch = cls()
        batch.resources, batch.owners = resources, owners
        if base is not None and changed is not None:
            batch.base, batch.changed = base, changed
        return batch


EMPTY = Batch()


class _Overlap(Exception):
    """A part adds a name another part adds too: merge the run whole."""


class Assembly:
    """The union of a run's parts as sorted, read-only mappings; see the module doc."""

    def __init__(self) -> None:
        self._parts: dict[Hashable, Batch] = {}
        self._resources: dict[str, dict[str, EnvoyResource]] = {t: {} for t in TYPE_ORDER}
        self._owners: dict[ResourceId, Owners] = {}
        self._whole = True  # the next run merges whole: the first run, or parts shared a name
        # What was handed out last, sorted by key: per type, and the owners.
        self._handed: dict[str, dict[str, EnvoyResource]] = {t: {} for t in TYPE_ORDER}
        self._handed_owners: dict[ResourceId, Owners] = {}
        self._mappings: Mapping[str, Mapping[str, EnvoyResource]] = MappingProxyType(
            {t: MappingProxyType(self._handed[t]) for t in TYPE_ORDER})
        self._owners_mapping: Mapping[ResourceId, Owners] = MappingProxyType(self._handed_owners)

    def assemble(self, parts: dict[Hashable, Batch]
                 ) -> tuple[Mapping[str, Mapping[str, EnvoyResource]], Mapping[ResourceId, Owners]]:
        """Every part's resources (type → name → resource, both levels sorted by key; every
        type of TYPE_ORDER present) and their owners (sorted by resource). A mapping whose
        content did not change is the very object handed out last run."""
        try:
            if not self._whole:
                try:
                    return self._patched(parts)
                except _Overlap:
                    pass
            return self._merged(parts)
        finally:
            for batch in parts.values():
                batch.base = batch.changed = None

    def _merged(self, parts: dict[Hashable, Batch]) -> tuple[Mapping[str, Mapping[str, EnvoyResource]],
                                                               Mapping[ResourceId, Owners]]:
        resources: dict[str, dict[str, EnvoyResource]] = {t: {} for t in TYPE_ORDER}
        owners: dict[ResourceId, Owners] = {}
        overlap = False
        for batch in parts.values():
            if all(resources[t].keys().isdisjoint(found) for t, found in batch.resources.items()):
                for t, found in batch.resources.items():
                    resources[t].update(found)
                owners.update(batch.owners)
                continue
            overlap = True
            for t, found in batch.resources.items():
                for name, resource in found.items():
                    key = (t, name)
                    resources[t][name] = resource
                    previous, added = owners.get(key), batch.owners[key]
                    owners[key] = added if previous is None else tuple(sorted({*previous, *added}))
        self._parts, self._resources, self._owners, self._whole = dict(parts), resources, owners, overlap
        changed = {t for t in TYPE_ORDER if resources[t] != self._handed[t]}
        return self._handout(changed, {t: None for t in changed}, owners != self._handed_owners, None)

    def _patched(self, parts: dict[Hashable, Batch]) -> tuple[Mapping[str, Mapping[str, EnvoyResource]],
                                                                Mapping[ResourceId, Owners]]:
        """Last run's union with the parts that are not the same objects applied; raises
        `_Overlap` (nothing changed yet) when a part brings a name another part has."""
        removed: list[tuple[str, str]] = []
        updated: list[tuple[str, str, EnvoyResource, Owners]] = []
        arrived: set[ResourceId] = set()  # names a part has now and did not have
        for key in {**self._parts, **parts}:
            old, new = self._parts.get(key, EMPTY), parts.get(key, EMPTY)
            if old is new:
                continue
            for t, names in _names(old, new):
                before, after = old.resources.get(t, _NONE), new.resources.get(t, _NONE)
                merged = self._resources[t]
                for name in names:
                    resource = after.get(name)
                    if resource is None:
                        if name in before:
                            removed.append((t, name))
                    elif name not in before and (name in merged or (t, name) in arrived):
                        raise _Overlap
                    else:
                        if name not in before:
                            arrived.add((t, name))
                        updated.append((t, name, resource, new.owners[(t, name)]))
        dirty: dict[str, dict[str, bool]] = {}  # type → name → whether it came or went
        owners_dirty: dict[ResourceId, bool] = {}
        for t, name in removed:
            if self._resources[t].pop(name, None) is not None:
                del self._owners[(t, name)]
                dirty.setdefault(t, {})[name] = owners_dirty[(t, name)] = True
        for t, name, resource, owners in updated:
            merged, key = self._resources[t], (t, name)
            known = merged.get(name)
            if known is not resource and known != resource:  # an equal resource keeps last run's object
                merged[name] = resource
                dirty.setdefault(t, {})[name] = known is None or dirty.get(t, {}).get(name, False)
            if self._owners.get(key) != owners:
                owners_dirty[key] = key not in self._owners or owners_dirty.get(key, False)
                self._owners[key] = owners
        self._parts = dict(parts)
        return self._handout(set(dirty), dirty, bool(owners_dirty), owners_dirty)

    def _handout(self, types: set[str], dirty: Mapping[str, Mapping[str, bool] | None], owners_changed: bool,
                 owners_dirty: Mapping[ResourceId, bool] | None
                 ) -> tuple[Mapping[str, Mapping[str, EnvoyResource]], Mapping[ResourceId, Owners]]:
        """New sorted mappings for what changed (a copy patched in place when no name came
        or went; else sorted again), last run's objects for the rest."""
        if types:
            for t in types:
                self._handed[t] = _sorted_copy(self._handed[t], self._resources[t], dirty[t])
            self._mappings = MappingProxyType({t: MappingProxyType(self._handed[t])
                                               if t in types else self._mappings[t] for t in TYPE_ORDER})
        if owners_changed:
            self._handed_owners = _sorted_copy(self._handed_owners, self._owners, owners_dirty)
            self._owners_mapping = MappingProxyType(self._handed_owners)
        return self._mappings, self._owners_mapping


_NONE: dict[str, Any] = {}


def _names(old: Batch, new: Batch) -> Iterable[tuple[str, Iterable[str]]]:
    """Per type, the names that may differ between two parts."""
    if new.base is old and new.changed is not None:
        return new.changed.items()
    found: list[tuple[str, Iterable[str]]] = []
    for t in {**old.resources, **new.resources}:
        before, after = old.resources.get(t, _NONE), new.resources.get(t, _NONE)
        differs = [name for name, resource in after.items()
                   if before.get(name) is not resource or old.owners[(t, name)] != new.owners[(t, name)]]
        found.append((t, [*differs, *(before.keys() - after.keys())]))
    return found


def _sorted_copy(handed: dict[Any, Any], current: dict[Any, Any], dirty: Mapping[Any, bool] | None) -> dict[Any, Any]:
    """`current` sorted by key, made from `handed` (last run's, sorted) when only values of
    the `dirty` keys changed (False: neither added nor removed)."""
    if dirty is not None and not any(dirty.values()):
        copy = dict(handed)  # keeps the order
        for key in dirty:
            copy[key] = current[key]
        return copy
    order = sorted(current)
    return dict(zip(order, map(current.__getitem__, order)))
