"""The shape of the Kubernetes API that the informer, reconciler and status writer use.

They depend on this Protocol, not on `client.KubeClient`, so the adapter stays the only
module that knows HTTP and credentials. Objects are plain JSON dicts (`Obj`), exactly
as the API server sends them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from controller.kubernetes.resources import ResourceType

Obj = dict[str, Any]
EventType = Literal["ADDED", "MODIFIED", "DELETED", "BOOKMARK"]


@dataclass(frozen=True, slots=True)
class WatchEvent:
    type: EventType
    object: Obj

    @property
    def resource_version(self) -> str:
        return str(self.object.get("metadata", {}).get("resourceVersion", ""))


@dataclass(frozen=True, slots=True)
class ObjectList:
    items: tuple[Obj, ...]
    resource_version: str


class KubeApi(Protocol):
    async def list(self, rtype: ResourceType, *, namespace: str | None = None,
                   label_selector: str | None = None, field_selector: str | None = None) -> ObjectList: ...

    def watch(self, rtype: ResourceType, *, resource_version: str, namespace: str | None = None,
              label_selector: str | None = None, field_selector: str | None = None,
              timeout_seconds: int | None = None) -> AsyncIterator[WatchEvent]: ...

    async def get(self, rtype: ResourceType, namespace: str, name: str) -> Obj: ...

    async def create(self, rtype: ResourceType, obj: Obj) -> Obj: ...

    async def replace(self, rtype: ResourceType, obj: Obj) -> Obj: ...

    async def patch(self, rtype: ResourceType, namespace: str, name: str, patch: Obj) -> Obj: ...

    async def replace_status(self, rtype: ResourceType, obj: Obj) -> Obj: ...

    async def patch_status(self, rtype: ResourceType, namespace: str, name: str, patch: Obj) -> Obj: ...

    async def delete(self, rtype: ResourceType, namespace: str, name: str) -> Obj: ...


def namespace_of(obj: Obj) -> str:
    return str(obj.get("metadata", {}).get("namespace") or "default")


def name_of(obj: Obj) -> str:
    return str(obj["metadata"]["name"])
