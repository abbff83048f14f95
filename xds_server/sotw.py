"""State-of-the-world protocol for one stream (ADS or a single-type service).

A synchronous state machine: feed it requests and snapshots, it returns the responses to
send. No I/O here, so every protocol rule is testable without gRPC.

Rules implemented (Envoy xDS protocol document):
- Every response carries a fresh nonce; a request whose `response_nonce` is not the
  latest one sent for its type is stale and ignored entirely.
- ACK vs NACK is told apart by `error_detail`. After an ACK we know exactly which
  resources the client holds; after a NACK the client keeps its previous ones, and the
  rejected version is never sent again (only a different version is).
- Versions are content hashes of the `(name, version)` pairs in the response, so a client
  reconnecting with `version_info` equal to what we would send gets nothing.
- Listener/Cluster: wildcard until the client names anything (legacy rule); "*" keeps or
  restores it; responses are the full set, so dropping a resource removes it.
  Other types (RDS, EDS, SDS): only named resources, and a response holds only those that
  are new or changed for this client ("Grouping Resources into Responses": these types
  are not state-of-the-world, Envoy hands each watch just its resources), so a one-route
  edit re-sends one RouteConfiguration, not all of them. They are removed by their
  parents dropping references. The response version is still the content hash of the
  whole subscribed set, which is what the client holds after applying it.
- At most one unacknowledged response per type. On ADS, which type may go out when is
  decided by `session.Session` (EDS and SDS at once, LDS and RDS once the clients holds
  the snapshot's clusters, removed clusters kept until listeners and routes caught up).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence, Set as AbstractSet
from dataclasses import dataclass, field

from envoy.service.discovery.v3 import discovery_pb2

from xds_server.held import Held
from xds_server.session import NO_NAMES, Inflight, Session, by_name, interned, names_of
from xds_server.snapshot import Snapshot, content_version
from xds_server.types import WILDCARD, WILDCARD_TYPES, XdsResource


@dataclass(slots=True)
class SotwTypeState:
    """What we know about one type on one stream; also what /debug/nodes shows."""

    requested: bool = False
    wildcard: bool = False
    named_ever: bool = False
    names: frozenset[str] = NO_NAMES  # (`interned`)
    last_nonce: str | None = None
    inflight: Inflight | None = None
    # The version the client holds; and, once it ACKed one of our responses, which
    # resources at which versions (None after a reconnect: only the version is known).
    client_version: str = ""
    client_resources: Held | None = None
    # Full-state types: where the resources of the last ACKed response came from (its
    # snapshot, plus resources kept from earlier ones), so that ones that left the
    # snapshot can be sent again while they must be kept (make-before-break).
    client_snapshot: Snapshot | None = None
    client_kept: Mapping[str, XdsResource] = field(default_factory=dict)
    nacked_version: str | None = None
    last_error: str = ""
    # A snapshot whose selection (under the current subscription) the client holds at that
    # snapshot's versions, `client_resources` being exactly it for full-state types:
    # later snapshots are then checked by what changed since (`Snapshot.changes_since`),
    # not resource by resource, so a stream's cost per push follows the change, not the
    # world (thousands of streams × thousands of resources). None: compare everything.
    synced: Snapshot | None = None
    epoch: int = 0  # counts subscription changes (a response's ACK syncs only within one)
    # The stream opened with a version it holds, not yet found to be this snapshot's
    # (`Hooks.on_resume`) nor answered with a response.
    resumed: bool = False


@dataclass(frozen=True, slots=True)
class SotwPlan:
    version: str
    send: Mapping[str, XdsResource]
    full: bool
    kept: Mapping[str, XdsResource]  # resources no longer in the snapshot, sent again
    syncs: bool  # once ACKed the client holds the snapshot's selection exactly
    whole: bool  # `send` is the snapshot's whole selection (`Snapshot.whole`)


class SotwSession(Session[SotwTypeState, SotwPlan]):
    __slots__ = ()

    def on_request(self, request: discovery_pb2.DiscoveryRequest) -> list[bytes]:
        type_url = request.type_url
        state = self.types.setdefault(type_url, SotwTypeState())
        nonce = request.response_nonce
        if nonce and state.last_nonce is not None and nonce != state.last_nonce:
            return []  # stale: superseded by a newer response the client hasn't seen yet
        # (A nonce before we sent anything of this type can only come from an earlier
        # stream — nonces don't survive reconnects — so that request counts as initial.)
        inflight = state.inflight
        if inflight is not None and nonce == inflight.nonce:
            state.inflight = None
            if request.HasField("error_detail"):
                state.nacked_version = inflight.version
                state.last_error = request.error_detail.message
                self._hooks.on_nack(self.stream, type_url, inflight.version, by_name(inflight),
                                    request.error_detail.message)
                if inflight.snapshot is not None:
                    self._verdict(inflight.snapshot, False)
            else:
                state.client_version = inflight.version
                if inflight.whole is not None:
                    state.client_resources = Held.of(inflight.whole.selection)
                elif inflight.full or state.client_resources is None:
                    state.client_resources = Held(inflight.resources)
                else:
                    state.client_resources.update(inflight.resources)
                if inflight.full:
                    state.client_snapshot, state.client_kept = inflight.snapshot, inflight.kept
                if inflight.syncs and inflight.epoch == state.epoch and inflight.snapshot is not None:
                    _in_step(type_url, state, inflight.snapshot)
                else:
                    state.synced = None
                state.last_error = ""
                self._hooks.on_ack(self.stream, type_url, inflight.version, by_name(inflight),
                                   self._clock() - inflight.sent_at)
                if inflight.snapshot is not None:
                    self._verdict(inflight.snapshot, True)
        elif not state.requested:
            # First request for this type on this stream: a reconnecting client tells us
            # the version it already holds.
            state.client_version = request.version_info
            state.resumed = bool(request.version_info)
            if state.resumed:  # (it holds that, whatever it is, until it ACKs or is found current)
                self._hooks.on_resume(self.stream, type_url, request.version_info, {})
        self._subscribe(type_url, state, request.resource_names)
        return self._evaluate()

    def _subscribe(self, type_url: str, state: SotwTypeState, resource_names: Sequence[str]) -> None:
        names = set(resource_names)
        state.named_ever = state.named_ever or bool(names)
        wildcard = type_url in WILDCARD_TYPES and (WILDCARD in names or not state.named_ever)
        names.discard(WILDCARD)
        changed = wildcard != state.wildcard or names != state.names or not state.requested
        if not changed:
            return  # (most requests are ACKs naming the same resources again)
        state.wildcard = wildcard
        if names != state.names:
            state.names = interned(names)
        state.requested = True
        state.synced = None
        state.epoch += 1
        held = state.client_resources
        if held is not None and not state.wildcard and not held.keys() <= state.names:
            # Unsubscribed resources are forgotten by the client: if asked for again they
            # must be sent again even though unchanged.
            state.client_resources = Held({n: v for n, v in held.items() if n in state.names})

    def _plan(self, type_url: str, state: SotwTypeState, snapshot: Snapshot, *, hold_removals: bool,
              resend_rejected: bool = False) -> SotwPlan | None:
        if not state.requested or not (state.wildcard or state.names):
            return None  # never asked, or unsubscribed from everything of this type
        # What a subscription selects, and its version, is computed once per snapshot for
        # every stream with the same subscription; only full sets with kept resources, or
        # with resources an in-flight update needs, are hashed per stream.
        available = self.available(type_url, snapshot)
        current = available is snapshot.of_type(type_url)
        if current:
            selected, version = snapshot.subset(type_url, None if state.wildcard else state.names)
        else:
            selected = select(available, state.names, state.wildcard)
            version = content_version((n, r.version) for n, r in selected.items())
        full = type_url in WILDCARD_TYPES
        kept = _kept(type_url, state, selected) if full and hold_removals else {}
        if kept:
            both = {**selected, **kept}
            selected = {n: both[n] for n in sorted(both)}
            version = content_version((n, r.version) for n, r in selected.items())
        if version == state.nacked_version and not resend_rejected:
            return None
        held = state.client_resources
        syncs = current and not kept
        whole = False
        if full or held is None:
            if version == state.client_version:
                if held is None and syncs:
                    # (a reconnect: its version says it holds exactly this selection, so a
                    # later push sends what changed, not all of it again, and full sets hold
                    # their removals back as they would after an ACK: make-before-break)
                    state.client_resources = Held.of(selected)
                    if full:
                        state.client_snapshot, state.client_kept = snapshot, {}
                if state.resumed and syncs:
                    state.resumed = False
                    self._hooks.on_resume(self.stream, type_url, version, snapshot.selected_versions(
                        type_url, None if state.wildcard else state.names))
                    self._verdict(snapshot, True)
                return self._settled(type_url, state, snapshot, syncs)
            send, whole = selected, syncs and self.sends_wholes  # (the snapshot's own selection, as it is)
        else:
            candidates = selected
            if current and state.synced is not None:  # only what changed since can differ from what it holds
                changed = snapshot.changes_since(type_url, state.synced).changed
                candidates = {n: selected[n] for n in sorted(changed) if n in selected}
            version_of = held.lookup()
            send = {n: r for n, r in candidates.items() if version_of(n) != r.version}
        if not send and not full:
            return self._settled(type_url, state, snapshot, syncs)
        return SotwPlan(version, send, full or held is None, kept, syncs, whole)

    @staticmethod
    def _settled(type_url: str, state: SotwTypeState, snapshot: Snapshot, syncs: bool) -> None:
        """Nothing to send: the client holds this snapshot's selection (when `syncs`), so
        the next push is compared with this snapshot. (A memo, not protocol state.)"""
        if syncs:
            _in_step(type_url, state, snapshot)
        return None

    def _removes(self, type_url: str, state: SotwTypeState, snapshot: Snapshot) -> bool:
        if type_url not in WILDCARD_TYPES or state.client_resources is None or state.client_snapshot is None:
            return False  # nothing known to be held, or a type SotW never removes
        if state.synced is not None:  # it holds exactly the selection of `synced`
            gone = snapshot.changes_since(type_url, state.synced).gone
            return any(state.wildcard or n in state.names for n in gone)
        selected, _ = snapshot.subset(type_url, None if state.wildcard else state.names)
        return not state.client_resources.keys() <= selected.keys()

    def _emit(self, type_url: str, state: SotwTypeState, snapshot: Snapshot,
              plan: SotwPlan) -> bytes:
        nonce = self._next_nonce()
        envelope = discovery_pb2.DiscoveryResponse(version_info=plan.version, type_url=type_url, nonce=nonce)
        if plan.whole:
            whole = snapshot.whole(type_url, None if state.wildcard else state.names, delta=False)
            response: bytes = envelope.SerializeToString() + whole.body
            inflight = Inflight(nonce, plan.version, whole.versions, self._clock(), full=True, snapshot=snapshot,
                                syncs=plan.syncs, epoch=state.epoch, whole=whole)
        else:
            response = envelope.SerializeToString() + b"".join(
                [snapshot.encoded(r, delta=False) for r in plan.send.values()])
            inflight = Inflight(nonce, plan.version, {n: r.version for n, r in plan.send.items()}, self._clock(),
                                full=plan.full, snapshot=snapshot, kept=plan.kept, syncs=plan.syncs,
                                epoch=state.epoch)
        state.last_nonce = nonce
        state.inflight = inflight
        state.resumed = False  # (what it held is answered by this response's ACK)
        self._hooks.on_push(self.stream, type_url, plan.version, names_of(inflight), (), len(response))
        return response


def _in_step(type_url: str, state: SotwTypeState, snapshot: Snapshot) -> None:
    """The client holds what `snapshot` selects for it, at its versions; if exactly that,
    what it holds becomes that selection, shared with every stream in step with it."""
    state.synced = snapshot
    held = state.client_resources
    if held is not None:
        selection, _ = snapshot.subset(type_url, None if state.wildcard else state.names)
        if len(held) == len(selection):  # (it holds all of it: the same names)
            held.rebase(selection)


def _kept(type_url: str, state: SotwTypeState, selected: Mapping[str, XdsResource]) -> dict[str, XdsResource]:
    """Resources the client holds that left the snapshot, at the version it holds (found
    where its last ACKed response came from; unknown after a reconnect: none)."""
    if state.client_resources is None or state.client_snapshot is None:
        return {}
    kept: dict[str, XdsResource] = {}
    source = state.client_snapshot.of_type(type_url)
    for name, version in state.client_resources.items():
        if name in selected:
            continue
        resource = state.client_kept.get(name) or source.get(name)
        if resource is not None and resource.version == version:
            kept[name] = resource
    return kept


def select(of_type: Mapping[str, XdsResource], names: AbstractSet[str], wildcard: bool) -> dict[str, XdsResource]:
    """The resources a subscription receives, in a stable (name) order."""
    if wildcard:
        return {n: of_type[n] for n in sorted(of_type)}
    return {n: of_type[n] for n in sorted(names) if n in of_type}
