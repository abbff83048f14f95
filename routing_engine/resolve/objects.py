"""Indexes of the world's objects and the two cross-object rules every phase needs:
which of two objects is older, and whether a cross-namespace reference is allowed.

The world arrives as an unordered tuple (providers list objects in whatever order their
source gives); everything here is keyed or sorted so that no later phase ever depends
on that order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from routing_engine.api.resources import ModelInfer, ModelRoute, ModelServer, ObjectKey, Resource, Secret

AgeKey = tuple[bool, datetime, str, str]
_INDEXED = (ModelServer.KIND, ModelRoute.KIND, ModelInfer.KIND, Secret.KIND)
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


@dataclass(frozen=True, slots=True)
class ObjectIndex:
    """The objects resolution reads, by key.

    A world should hold one object per key (the loader reports duplicates). If two get
    through anyway, the choice must not depend on their order, or a reordering would
    change the output: the higher `metadata.generation` wins, then the greater
    canonical JSON."""

    servers: Mapping[ObjectKey, ModelServer]
    routes: Mapping[ObjectKey, ModelRoute]
    infers: Mapping[ObjectKey, ModelInfer]
    secrets: Mapping[ObjectKey, Secret]
    refused: frozenset[ObjectKey] = frozenset()  # `World.refused`: present, but invalid

    @staticmethod
    def of(objects: tuple[Resource, ...]) -> "ObjectIndex":
        chosen = choose(objects, lambda obj: obj.key)
        return ObjectIndex.build(chosen, sorted(chosen))

    @staticmethod
    def build(chosen: Mapping[ObjectKey, Resource], ordered: Iterable[ObjectKey],
              refused: frozenset[ObjectKey] = frozenset()) -> "ObjectIndex":
        """`chosen` (from `choose`) indexed by kind, each index in the order of `ordered`
        (the sorted keys of `chosen`, which a caller may have kept from last time)."""
        by_kind: dict[str, dict[ObjectKey, Any]] = {kind: {} for kind in _INDEXED}
        for key in ordered:
            bucket = by_kind.get(key.kind)
            if bucket is not None:
                bucket[key] = chosen[key]
        return ObjectIndex(
            servers=by_kind[ModelServer.KIND],
            routes=by_kind[ModelRoute.KIND],
            infers=by_kind[ModelInfer.KIND],
            secrets=by_kind[Secret.KIND],
            refused=refused,
        )

    def secret(self, namespace: str, name: str) -> Secret | None:
        return self.secrets.get(ObjectKey(Secret.KIND, namespace, name))


def choose(objects: Iterable[Resource], key_of: Callable[[Resource], ObjectKey]) -> dict[ObjectKey, Resource]:
    """One object per key, whatever the input order (see `ObjectIndex`)."""
    chosen: dict[ObjectKey, Resource] = {}
    for obj in objects:
        key = key_of(obj)
        other = chosen.setdefault(key, obj)
        if other is not obj and _precedence(obj) > _precedence(other):
            chosen[key] = obj
    return chosen


def _precedence(obj: Resource) -> tuple[int, str]:
    return (obj.metadata.generation or 0, obj.model_dump_json())


def age_key(obj: Resource) -> AgeKey:
    """Sort key: older first (metadata.creationTimestamp), then namespace/name.

    Objects without a (parseable) timestamp sort after every timestamped one: in the
    file provider no object has one and namespace/name alone decides, and in Kubernetes
    every object has one.
    """
    stamp = _parse_timestamp(obj.metadata.creation_timestamp)
    return (stamp is None, stamp or _EPOCH, obj.metadata.namespace, obj.metadata.name)


def _parse_timestamp(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=timezone.utc)
