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

A state may also say how its objects are made up (`parts`: the file provider's one part
per file, each the very same tuple while its file is unchanged). What the application
derives from the objects on every edit (the canary runner's routes, the engine probe's
and the replica runtime's ModelInfers) is then kept per part (`PartsFilter`), so an edit
costs what changed, not a pass over 10,000s of objects.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from itertools import chain
from types import MappingProxyType
from typing import Protocol

from routing_engine.api.errors import ManifestError, refused_keys
from routing_engine.api.resources import ObjectKey, Resource
from routing_engine.world import BackendEndpoint, World

Endpoints = Mapping[ObjectKey, tuple[BackendEndpoint, ...]]
_NO_ENDPOINTS: Endpoints = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class ProviderState:
    """One source's view of the world at one moment.

    `objects` are the valid objects, one per key, ordered as the source lists them
    (deterministic engine input); `endpoints` the endpoints per ModelInfer the source observes (none
    for a directory); `errors` what the source left out or could not read, each naming
    where it is and, when the document named one, its object (`object_key`). An object
    with errors may still be in `objects` at its last good version (the file provider
    keeps serving it).

    `parts`, when the source has them, are `objects` cut in consecutive pieces whose
    identity is kept while they are unchanged (no part: `objects` is one). They are a
    hint for memoizing (`PartsFilter`), not content: states compare by their objects."""

    objects: tuple[Resource, ...] = ()
    endpoints: Endpoints = field(default_factory=lambda: _NO_ENDPOINTS)
    errors: tuple[ManifestError, ...] = ()
    parts: tuple[tuple[Resource, ...], ...] = field(default=(), compare=False)

    @classmethod
    def of_parts(cls, parts: Iterable[tuple[Resource, ...]], *, endpoints: Endpoints | None = None,
                 errors: tuple[ManifestError, ...] = ()) -> "ProviderState":
        """A state whose objects are `parts`, in order (empty parts left out)."""
        kept = tuple(p for p in parts if p)
        return cls(tuple(chain.from_iterable(kept)), _NO_ENDPOINTS if endpoints is None else endpoints, errors, kept)

    def split(self) -> tuple[tuple[Resource, ...], ...]:
        """The objects in parts: `parts`, or the objects as one part."""
        return self.parts if self.parts or not self.objects else (self.objects,)

    @property
    def refused(self) -> frozenset[ObjectKey]:
        """The objects the source holds but left out as invalid (`World.refused`)."""
        return refused_keys(self.errors)

    def world(self, live_weights: Mapping[ObjectKey, tuple[int, int]] | None = None) -> World:
        return World(self.objects, MappingProxyType(dict(self.endpoints)),
                     MappingProxyType(dict(live_weights or {})), self.refused)


Publish = Callable[[ProviderState], Awaitable[None]]


class PartsFilter:
    """The objects of a state's parts that `wanted` picks, in order, with each part's pick
    kept while the very same part comes again: a consumer that needs a few kinds (the
    ModelInfers to run, the routes with a canary) pays for the parts that changed, not
    for the whole world, on every edit. `wanted` must depend on the object alone."""

    def __init__(self, wanted: Callable[[Resource], bool]) -> None:
        self._wanted = wanted
        self._picked: dict[int, tuple[tuple[Resource, ...], tuple[Resource, ...]]] = {}  # id(part) → (part, pick)

    def __call__(self, parts: Iterable[tuple[Resource, ...]]) -> tuple[Resource, ...]:
        picked: dict[int, tuple[tuple[Resource, ...], tuple[Resource, ...]]] = {}
        found: list[tuple[Resource, ...]] = []
        for part in parts:
            known = self._picked.get(id(part))
            if known is None or known[0] is not part:  # an id is reused only once its part is gone
                known = (part, tuple(o for o in part if self._wanted(o)))
            picked[id(part)] = known
            found.append(known[1])
        self._picked = picked  # only the parts of this call (they stay alive): other ids may be reused
        return tuple(chain.from_iterable(found))


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
