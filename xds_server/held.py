"""What one client holds of one type: resource name → version.

Thousands of Envoys of one node group hold the same thing: what the current snapshot
selects for them. A plain dict per stream costs ~0.8 MB per Envoy at a 10,000-route
world (the versions of ~40,000 resources), 8 GB for 10,000 Envoys. So a stream's
`Held` is a base shared by every stream in step with one snapshot (that snapshot's
selection, read-only) plus the stream's own changes since; when the stream is in step
with a newer snapshot again and holds exactly its selection, it is rebased onto it
(`rebase`) and its own changes are dropped.

A reconnecting delta client says what it holds in its first request's
`initial_resource_versions`, 40,000 names at a 10,000-route world: reading that map into
a dict takes 12 ms, while upb compares it with the same map in another message in 2 ms.
So a stream's claim is kept unread (`claimed`) and first compared whole with what its
snapshot selects (`holds_exactly`); it is read only if something else is asked first,
or it differs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, MutableMapping
from types import MappingProxyType

from envoy.service.discovery.v3 import discovery_pb2

from xds_server.types import XdsResource

_NOTHING: Mapping[str, XdsResource] = MappingProxyType({})
_CLAIMED_FIELD = "initial_resource_versions"


class Held(MutableMapping[str, str]):
    """name → version: `base`'s resources at their versions, overlaid by `own` and
    without `dropped`, or a claim not yet read (`claimed`). Its length is kept as it
    changes, so whether it holds exactly a selection it covers is one comparison of
    lengths."""

    __slots__ = ("_base", "_own", "_dropped", "_count", "_claim", "_claim_equals")

    def __init__(self, versions: Mapping[str, str] | None = None) -> None:
        self._base: Mapping[str, XdsResource] = _NOTHING
        self._own: dict[str, str] = {}
        self._dropped: set[str] = set()
        self._count = 0
        self._claim: discovery_pb2.DeltaDiscoveryRequest | None = None
        self._claim_equals: discovery_pb2.DeltaDiscoveryRequest | None = None  # (found equal already)
        if versions:
            self.update(versions)

    @classmethod
    def of(cls, selection: Mapping[str, XdsResource]) -> Held:
        """Exactly `selection` at its resources' versions, shared (not copied)."""
        held = cls()
        held.rebase(selection)
        return held

    @classmethod
    def claimed(cls, request: discovery_pb2.DeltaDiscoveryRequest) -> Held:
        """What `request` (a delta stream's first of its type) says the client holds, its
        `initial_resource_versions`, unread. The caller is done with `request`: when
        compared whole, it is stripped of every other field."""
        held = cls()
        held._claim, held._count = request, len(request.initial_resource_versions)
        return held

    @property
    def unread(self) -> bool:
        """A claim not read yet: compare it whole (`holds_exactly`) before asking more."""
        return self._claim is not None

    def _read_claim(self) -> None:
        claim, self._claim, self._claim_equals = self._claim, None, None
        if claim is not None:
            self._own.update(claim.initial_resource_versions)

    def __getitem__(self, name: str) -> str:
        if self._claim is not None:
            self._read_claim()
        version = self._own.get(name)
        if version is not None:
            return version
        if name in self._dropped:
            raise KeyError(name)
        return self._base[name].version

    def get(self, name: str, default: str | None = None) -> str | None:  # type: ignore[override]
        if self._claim is not None:
            self._read_claim()
        version = self._own.get(name)
        if version is not None:
            return version
        resource = self._base.get(name)
        return resource.version if resource is not None and name not in self._dropped else default

    def __contains__(self, name: object) -> bool:
        if self._claim is not None:
            self._read_claim()
        return name in self._own or (name in self._base and name not in self._dropped)

    def __setitem__(self, name: str, version: str) -> None:
        if name not in self:  # (reads a claim)
            self._count += 1
        self._own[name] = version
        self._dropped.discard(name)

    def __delitem__(self, name: str) -> None:
        if name not in self:  # (reads a claim)
            raise KeyError(name)
        self._count -= 1
        self._own.pop(name, None)
        if name in self._base:
            self._dropped.add(name)

    def __iter__(self) -> Iterator[str]:
        if self._claim is not None:
            self._read_claim()
        yield from self._own
        for name in self._base:
            if name not in self._own and name not in self._dropped:
                yield name

    def __len__(self) -> int:
        return self._count

    def update(self, versions: Mapping[str, str]) -> None:  # type: ignore[override]
        if self._claim is not None:
            self._read_claim()
        if not self._base:  # (nothing shared: a plain dict's update; nothing can be dropped)
            self._own.update(versions)
            self._count = len(self._own)
            return
        for name, version in versions.items():
            self[name] = version

    def holds_exactly(self, versions: Mapping[str, str],
                      as_claim: discovery_pb2.DeltaDiscoveryRequest | None = None) -> bool:
        """It holds these names at these versions and nothing else. `as_claim`, if given:
        the same as a request holding nothing but `initial_resource_versions` (see
        `Snapshot.claim`), compared whole with a claim not yet read."""
        if self._count != len(versions):
            return False
        if self._claim is not None:
            if as_claim is not None and as_claim is self._claim_equals:
                return True
            if as_claim is not None:
                claim = self._claim
                for descriptor, _ in claim.ListFields():
                    if descriptor.name != _CLAIMED_FIELD:
                        claim.ClearField(descriptor.name)
                if claim == as_claim:  # (in C)
                    self._claim_equals = as_claim
                    return True
            self._read_claim()
        if not self._base:
            return self._own == versions  # (one comparison in C: a reconnect's 40,000 names)
        return all(self.get(n) == v for n, v in versions.items())

    def within(self, names: Mapping[str, object]) -> bool:
        """Every name it holds is one of `names`."""
        if self._claim is not None:
            self._read_claim()
        if not self._base:
            return self._own.keys() <= names.keys()  # (in C: a reconnect's 40,000 names)
        return all(n in names for n in self)

    def lookup(self) -> Callable[[str], str | None]:
        """`get` for a loop over thousands of names: the plain dict's own while nothing
        is shared (a stream's first evaluation)."""
        if self._claim is not None:
            self._read_claim()
        return self._own.get if not self._base else self.get

    def rebase(self, selection: Mapping[str, XdsResource]) -> None:
        """It now holds exactly `selection` at its resources' versions (the caller knows:
        see `sotw.SotwTypeState.synced`, `delta.DeltaTypeState.synced`)."""
        self._base, self._count = selection, len(selection)
        self._claim = self._claim_equals = None
        self._own = {}
        self._dropped = set()
