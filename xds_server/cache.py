"""Snapshot cache keyed by node group, with watches: the content side of the server.

Like go-control-plane's `SnapshotCache`, it never sees gRPC: the protocol layer asks
"which group is this node in", "what is the current snapshot" and "call me back when
there is a newer one". Which resources a given request receives is decided by the
protocol layer from the snapshot it is handed. Like it too, the cache does not debounce:
a snapshot is published when it is set (callers coalesce changes before they compile,
e.g. the control loop's debouncer).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from envoy.config.core.v3 import base_pb2

from xds_server.consistency import check_consistency
from xds_server.hooks import Hooks
from xds_server.snapshot import DuplicateResourceError, Snapshot, content_version

__all__ = ["SnapshotCache", "Snapshot", "Watch", "check_consistency", "content_version",
           "DuplicateResourceError", "default_node_group"]

log = logging.getLogger("modelroute.xds")

NodeGroup = Callable[[base_pb2.Node], str]
SnapshotCallback = Callable[[Snapshot], None]


def default_node_group(node: base_pb2.Node) -> str:
    """Envoys share a snapshot when they share `node.cluster` (the bootstrap sets it to role/scope)."""
    group: str = node.cluster
    return group


@dataclass(eq=False, slots=True)
class Watch:
    """A registration for newer snapshots of one group; `cancel()` when the stream ends."""

    group: str
    callback: SnapshotCallback
    _cache: SnapshotCache | None = field(default=None, repr=False)

    def cancel(self) -> None:
        if self._cache is not None:
            self._cache.unwatch(self)
            self._cache = None


class SnapshotCache:
    """`set_snapshot` must be called on the event loop thread (watch callbacks run there)."""

    def __init__(self, node_group: NodeGroup = default_node_group, *, hooks: Hooks | None = None) -> None:
        self._node_group = node_group
        self._hooks = hooks or Hooks()
        self._published: dict[str, Snapshot] = {}
        # Verdicts from clients, by identity: the snapshot last rejected, the last accepted
        # one (and the one before, in case the last turns out to be partly rejected).
        self._rejected: dict[str, Snapshot] = {}
        self._good: dict[str, Snapshot] = {}
        self._previous_good: dict[str, Snapshot] = {}
        self._watches: dict[str, set[Watch]] = {}

    def node_group(self, node: base_pb2.Node) -> str:
        return self._node_group(node)

    def set_snapshot(self, group: str, snapshot: Snapshot) -> None:
        """Publish `snapshot` for `group` now. A snapshot with the same content as the
        current one is ignored: recompiles that change nothing (e.g. after a status write)
        must not wake every stream."""
        current = self._published.get(group)
        if current is not None and current.versions == snapshot.versions:
            return
        self._published[group] = snapshot
        self._hooks.on_snapshot(group, snapshot)
        for watch in list(self._watches.get(group, ())):
            try:
                watch.callback(snapshot)
            except Exception:
                log.exception("xds watch callback failed", extra={"node_group": group})

    def get_snapshot(self, group: str) -> Snapshot | None:
        """What a new stream of this group starts from: the published snapshot,
        or, once a client NACKed it, the last snapshot a client accepted — so an Envoy that
        joins after a bad push still gets a working config."""
        current = self._published.get(group)
        if current is not None and current is self._rejected.get(group):
            return self._good.get(group) or current
        return current

    def report(self, group: str, snapshot: Snapshot, accepted: bool) -> None:
        """A client of `group` ACKed (accepted) or NACKed content computed from `snapshot`.

        Streams already connected are not reverted: the protocol layer just never resends
        the rejected versions, and a newer `set_snapshot` supersedes the rejected one.
        """
        good = self._good.get(group)
        if not accepted:
            self._rejected[group] = snapshot
            if good is snapshot:  # part of it was ACKed before another part was NACKed
                self._good.pop(group)
                previous = self._previous_good.pop(group, None)
                if previous is not None:
                    self._good[group] = previous
        elif snapshot is not self._rejected.get(group) and snapshot is not good:
            if good is not None:
                self._previous_good[group] = good
            self._good[group] = snapshot

    def groups(self) -> list[str]:
        return sorted(self._published)

    def clear_snapshot(self, group: str) -> None:
        """Forget a group (its Envoys keep their config; new streams wait for a snapshot)."""
        for table in (self._published, self._rejected, self._good, self._previous_good):
            table.pop(group, None)

    def watch(self, group: str, callback: SnapshotCallback) -> Watch:
        watch = Watch(group, callback, self)
        self._watches.setdefault(group, set()).add(watch)
        return watch

    def unwatch(self, watch: Watch) -> None:
        self._watches.get(watch.group, set()).discard(watch)
