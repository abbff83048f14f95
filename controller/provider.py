"""What every source of the world hands the control plane: one `ProviderState` type.

    source ──► Provider ──ProviderState──► modelroute.app.App ──► ControlLoop ──► xDS
    (a directory, the API server, a test's list)

A provider watches one source and publishes its whole state whenever it changed: the
objects the engine compiles, the endpoints the source itself observes, and the errors of
what it left out or could not read. The file provider (`controller.local.file_provider`)
and the Kubernetes provider (`controller.kubernetes.provider`) are the two built in; a
third source is one more class with `start`/`close`, not a third run mode.

Endpoints are part of the state when the source observes them: in a cluster they are
EndpointSlices, listed with the same guarantee as the objects (no state before every
informer listed), so the first compile already has them. A directory observes none; in
embedded mode the replicas' endpoints come from the workload runtime that runs them
(`controller.local.replicas`), which the application merges in (docs/decisions.md).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Protocol

from routing_engine.api.errors import ManifestError
from routing_engine.api.resources import ObjectKey, Resource
from routing_engine.world import BackendEndpoint, World

Endpoints = Mapping[ObjectKey, tuple[BackendEndpoint, ...]]
_NO_ENDPOINTS: Endpoints = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class ProviderState:
    """One source's view of the world at one moment.

    `objects` are the valid objects, ordered as the source lists them (deterministic
    engine input); `endpoints` the endpoints per ModelInfer the source observes (none
    for a directory); `errors` what the source left out or could not read, each naming
    where it is and, when the document named one, its object (`object_key`). An object
    with errors may still be in `objects` at its last good version (the file provider
    keeps serving it)."""

    objects: tuple[Resource, ...] = ()
    endpoints: Endpoints = field(default_factory=lambda: _NO_ENDPOINTS)
    errors: tuple[ManifestError, ...] = ()

    def world(self, live_weights: Mapping[ObjectKey, tuple[int, int]] | None = None) -> World:
        return World(self.objects, MappingProxyType(dict(self.endpoints)),
                     MappingProxyType(dict(live_weights or {})))


Publish = Callable[[ProviderState], Awaitable[None]]


class Provider(Protocol):
    """A source of the world."""

    async def start(self, publish: Publish) -> None:
        """Read the source and keep watching it in the background, handing `publish` its
        first state (only once the whole source was read: a half-read source looks like
        deleted objects) and then every state that differs from the last. The first state
        may be published before `start` returns (a directory) or later (informers listing).
        Raises when the source cannot be watched at all."""

    async def close(self) -> None:
        """Stop watching; nothing is published after it returns."""


def errors_by_file(errors: Iterable[ManifestError]) -> Mapping[str, tuple[str, ...]]:
    """File (or source) → its error messages, in the order given: what the status view
    lists under "errors"."""
    found: dict[str, tuple[str, ...]] = {}
    for error in errors:
        found[error.file] = (*found.get(error.file, ()), str(error))
    return MappingProxyType(found)
