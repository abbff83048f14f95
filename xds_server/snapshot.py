"""Immutable snapshots: every resource one node group should have, by type and name.

A snapshot is a value built once. Its per-type version is derived from content (a hash
of the sorted `(name, version)` pairs), never from a counter, so a restarted control
plane computes the same versions for the same resources and Envoy sees no change.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable, Mapping, Set
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, TypeVar

from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import any_pb2

from xds_server.types import XdsResource

_EMPTY: Mapping[str, XdsResource] = MappingProxyType({})


def content_version(pairs: Iterable[tuple[str, str]]) -> str:
    """Order-independent version of a set of (name, resource version) pairs."""
    digest = hashlib.sha256()
    for name, version in sorted(pairs):
        digest.update(name.encode())
        digest.update(b"\0")
        digest.update(version.encode())
        digest.update(b"\n")
    return digest.hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class Changes:
    """How one type's resources differ from an earlier snapshot's."""

    changed: frozenset[str]  # names that are new, or at another version
    gone: frozenset[str]  # names that left


NO_CHANGES = Changes(frozenset(), frozenset())


@dataclass(frozen=True, slots=True)
class Whole:
    """Everything one subscription selects from a snapshot, as one response body: what
    a stream holding none of it is sent (a fresh Envoy; SotW's full Listener and Cluster
    sets on every change). Shared read-only by every stream with that subscription."""

    selection: Mapping[str, XdsResource]  # `Snapshot.subset`'s, in name order
    versions: Mapping[str, str]  # name → version, in name order
    names: tuple[str, ...]  # in name order
    body: bytes  # the resources' encoded pieces (`Snapshot.encoded`), joined


class DuplicateResourceError(ValueError):
    """Two resources of one type share a name: Envoy would NACK the response."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Resources per type URL, name → resource; read-only mappings all the way down."""

    resources: Mapping[str, Mapping[str, XdsResource]]
    versions: Mapping[str, str]
    build_seconds: float = field(default=0.0, compare=False)
    # Each resource as a serialized response holding just it (`encoded`), made once and
    # shared by every stream (keyed by version too: a resource kept from an older
    # snapshot may share a name).
    _encoded: dict[tuple[str, str, str, bool], bytes] = field(default_factory=dict, compare=False, repr=False)
    # What one subscription selects, and its version, computed once per snapshot for all
    # the streams that subscribe to the same names (thousands of Envoys of one group).
    _subsets: dict[tuple[str, frozenset[str] | None], tuple[Mapping[str, XdsResource], str]] = field(
        default_factory=dict, compare=False, repr=False)
    # `selected_versions` per (type, subscription).
    _versions_of: dict[tuple[str, frozenset[str] | None], Mapping[str, str]] = field(
        default_factory=dict, compare=False, repr=False)
    # `whole` per (type, subscription, delta), and how often each was asked for before
    # it was kept (a subscription only one stream has is not worth a second copy).
    _wholes: dict[tuple[str, frozenset[str] | None, bool], Whole] = field(
        default_factory=dict, compare=False, repr=False)
    _whole_asks: dict[tuple[str, frozenset[str] | None, bool], int] = field(
        default_factory=dict, compare=False, repr=False)
    # `claim` per (type, subscription), carried like `whole`; the subscriptions asked for
    # once (not built yet).
    _claims: dict[tuple[str, frozenset[str] | None], discovery_pb2.DeltaDiscoveryRequest] = field(
        default_factory=dict, compare=False, repr=False)
    _claim_asked: set[tuple[str, frozenset[str] | None]] = field(default_factory=set, compare=False, repr=False)
    # The per-type mappings and extra resources `of_types` was handed (their versions carry
    # over by identity).
    _sources: Mapping[str, tuple[Mapping[str, XdsResource], tuple[XdsResource, ...]]] = field(
        default_factory=dict, compare=False, repr=False)
    # `changes_since`, per (type, id of the earlier snapshot): that snapshot's `versions`
    # (held so that the id cannot be reused by a newer snapshot while cached) and the changes.
    _changes: dict[tuple[str, int], tuple[Mapping[str, str], Changes]] = field(
        default_factory=dict, compare=False, repr=False)

    @classmethod
    def of_types(cls, types: Mapping[str, Mapping[str, XdsResource]], extra: Iterable[XdsResource] = (), *,
                 previous: Snapshot | None = None) -> Snapshot:
        """The same snapshot as `build` of every resource in `types` plus `extra`, built
        from per-type mappings (type → name → resource, as an engine hands them out):
        a type's mapping is kept as it is (it must not change afterwards), and its
        version is `previous`'s when `previous` was built from the very same mapping
        object (and the same `extra` objects of that type). So a push after a one-route
        edit hashes the changed types only, not 10,000 unchanged routing scopes."""
        started = time.perf_counter()
        added: dict[str, dict[str, XdsResource]] = {}
        for resource in extra:
            named = added.setdefault(resource.type_url, {})
            if resource.name in named or resource.name in types.get(resource.type_url, _EMPTY):
                raise DuplicateResourceError(f"{resource.type_url} {resource.name!r}: defined twice in one snapshot")
            named[resource.name] = resource
        frozen: dict[str, Mapping[str, XdsResource]] = {}
        versions: dict[str, str] = {}
        sources: dict[str, tuple[Mapping[str, XdsResource], tuple[XdsResource, ...]]] = {}
        carried: set[str] = set()
        for type_url in {*types, *added}:
            source = types.get(type_url, _EMPTY)
            extras = tuple(added.get(type_url, {}).values())
            if not source and not extras:
                continue  # as `build`: no empty types
            if extras:
                frozen[type_url] = MappingProxyType({**source, **added[type_url]})
            else:
                frozen[type_url] = source if isinstance(source, MappingProxyType) else MappingProxyType(dict(source))
            sources[type_url] = (source, extras)
            before = previous._sources.get(type_url) if previous is not None else None
            if (previous is not None and before is not None and before[0] is source and len(before[1]) == len(extras)
                    and all(a is b for a, b in zip(before[1], extras))):
                versions[type_url] = previous.versions[type_url]  # the same mapping and the same extra objects
                carried.add(type_url)
            else:
                versions[type_url] = content_version((n, r.version) for n, r in frozen[type_url].items())
        # What subscriptions select of an unchanged type is the same too (10,000 endpoint
        # names are not sorted and hashed again for a one-route edit).
        if previous is None:
            return cls(MappingProxyType(frozen), MappingProxyType(versions), time.perf_counter() - started,
                       _sources=sources)
        return cls(MappingProxyType(frozen), MappingProxyType(versions), time.perf_counter() - started,
                   _sources=sources, _subsets=_carried(previous._subsets, carried),
                   _versions_of=_carried(previous._versions_of, carried), _wholes=_carried(previous._wholes, carried),
                   _claims=_carried(previous._claims, carried))

    @classmethod
    def build(cls, resources: Iterable[XdsResource]) -> Snapshot:
        started = time.perf_counter()
        by_type: dict[str, dict[str, XdsResource]] = {}
        for resource in resources:
            named = by_type.setdefault(resource.type_url, {})
            if resource.name in named:
                raise DuplicateResourceError(f"{resource.type_url} {resource.name!r}: defined twice in one snapshot")
            named[resource.name] = resource
        frozen = MappingProxyType({t: MappingProxyType(named) for t, named in by_type.items()})
        versions = MappingProxyType({
            t: content_version((n, r.version) for n, r in named.items()) for t, named in by_type.items()
        })
        return cls(frozen, versions, time.perf_counter() - started)

    def of_type(self, type_url: str) -> Mapping[str, XdsResource]:
        return self.resources.get(type_url, _EMPTY)

    def version(self, type_url: str) -> str:
        """The whole type's content version (reported as delta `system_version_info`)."""
        return self.versions.get(type_url) or content_version(())

    def subset(self, type_url: str, names: frozenset[str] | None) -> tuple[Mapping[str, XdsResource], str]:
        """The resources of `type_url` a subscription to `names` (None: wildcard) selects,
        in name order, and their content version. Read-only: shared by every stream."""
        key = (type_url, names)
        found = self._subsets.get(key)
        if found is None:
            of_type = self.of_type(type_url)
            if names is None:
                selected = MappingProxyType({n: of_type[n] for n in sorted(of_type)})
                found = (selected, self.version(type_url))
            else:
                selected = MappingProxyType({n: of_type[n] for n in sorted(names) if n in of_type})
                found = (selected, content_version((n, r.version) for n, r in selected.items()))
            self._subsets[key] = found
        return found

    def selected_versions(self, type_url: str, names: frozenset[str] | None) -> Mapping[str, str]:
        """name → version of `subset(type_url, names)`, in name order: what a client
        holding all of it holds (a reconnecting delta client's `initial_resource_versions`
        is compared with it at once, not name by name)."""
        key = (type_url, names)
        found = self._versions_of.get(key)
        if found is None:
            selection, _ = self.subset(type_url, names)
            found = self._versions_of[key] = MappingProxyType({n: r.version for n, r in selection.items()})
        return found

    def claim(self, type_url: str, names: frozenset[str] | None) -> discovery_pb2.DeltaDiscoveryRequest | None:
        """A request holding nothing but `initial_resource_versions` = `selected_versions`:
        what a delta client reconnecting with exactly its selection claims, for comparing
        whole with a claim (`Held.holds_exactly`). Building it takes longer (28 ms at
        40,000 names) than reading one claim, so it is built when the second stream asks
        (None before): when a thousand Envoys reconnect at once. Carried into the next
        snapshot while the type is unchanged."""
        key = (type_url, names)
        found = self._claims.get(key)
        if found is None:
            if key not in self._claim_asked:
                self._claim_asked.add(key)
                return None
            found = self._claims[key] = discovery_pb2.DeltaDiscoveryRequest()
            found.initial_resource_versions.update(self.selected_versions(type_url, names))
        return found

    def whole(self, type_url: str, names: frozenset[str] | None, *, delta: bool) -> Whole:
        """All of `subset(type_url, names)` as one response body (see `encoded`): a
        thousand fresh Envoys of one group are sent the same tens of megabytes, which is
        joined from 40,000 pieces once, not once per stream. Kept from the second stream
        that asks on (a subscription only one stream has costs no second copy), and
        carried into the next snapshot while the type is unchanged."""
        key = (type_url, names, delta)
        found = self._wholes.get(key)
        if found is not None:
            return found
        selection, _ = self.subset(type_url, names)
        body = b"".join([self.encoded(r, delta=delta) for r in selection.values()])
        found = Whole(selection, self.selected_versions(type_url, names), tuple(selection), body)
        asks = self._whole_asks.get(key, 0) + 1
        if asks > 1:
            self._wholes[key] = found
            self._whole_asks.pop(key, None)
        else:
            self._whole_asks[key] = asks
        return found

    def changes_since(self, type_url: str, earlier: Snapshot) -> Changes:
        """What changed in `type_url` since `earlier`, computed once per pair for every
        stream that holds `earlier`: a stream in step with a snapshot is then brought up
        to date by what changed, not by comparing each of thousands of resources again
        (`sotw` and `delta` keep which snapshot a stream is in step with)."""
        if earlier is self or earlier.versions.get(type_url) == self.versions.get(type_url):
            return NO_CHANGES  # same content (a type's version is the hash of its names and versions)
        key = (type_url, id(earlier))
        found = self._changes.get(key)
        if found is not None and found[0] is earlier.versions:
            return found[1]
        now, before = self.of_type(type_url), earlier.of_type(type_url)
        changed = frozenset(n for n, r in now.items()
                            if (b := before.get(n)) is None or (b is not r and b.version != r.version))
        changes = Changes(changed, frozenset(before.keys() - now.keys()))
        self._changes[key] = (earlier.versions, changes)
        return changes

    def as_any(self, resource: XdsResource) -> any_pb2.Any:
        return any_pb2.Any(type_url=resource.type_url, value=resource.body)

    def encoded(self, resource: XdsResource, *, delta: bool) -> bytes:
        """`resource` as a serialized DiscoveryResponse (delta: DeltaDiscoveryResponse)
        whose only field is that one resource. A serialized message is the concatenation
        of its fields, and protobuf parses concatenated messages as one (fields in any
        order, repeated fields appended), so a response to any stream is its own small
        envelope (version, type, nonce) followed by these pieces: a resource is
        serialized once per snapshot, not once per stream."""
        key = (resource.type_url, resource.name, resource.version, delta)
        piece = self._encoded.get(key)
        if piece is None:
            piece = self._encoded[key] = _encode(resource, delta)
        return piece


_Key = TypeVar("_Key", bound=tuple[Any, ...])
_Memo = TypeVar("_Memo")


def _carried(memo: Mapping[_Key, _Memo], types: Set[str]) -> dict[_Key, _Memo]:
    """What a snapshot worked out per (type, ...) that holds for the next one too: the
    entries of the types it carries unchanged."""
    return {key: found for key, found in memo.items() if key[0] in types}


def _encode(resource: XdsResource, delta: bool) -> bytes:
    """`Snapshot.encoded`, made."""
    wrapped = any_pb2.Any(type_url=resource.type_url, value=resource.body)
    if delta:
        entry = discovery_pb2.Resource(name=resource.name, version=resource.version, resource=wrapped)
        piece: bytes = discovery_pb2.DeltaDiscoveryResponse(resources=[entry]).SerializeToString()
    else:
        piece = discovery_pb2.DiscoveryResponse(resources=[wrapped]).SerializeToString()
    return piece
