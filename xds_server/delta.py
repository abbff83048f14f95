"""Incremental (delta) protocol for one stream: per-resource versions, explicit removals.

Differences from SotW that matter (Envoy xDS protocol document, "Incremental xDS"):
- Each resource carries its own version; a response holds only what changed, and
  `removed_resources` deletes (or reports as nonexistent) names the client asked for.
- Subscription changes are honoured even when the request's nonce is stale; the nonce
  only pairs ACK/NACK with a response.
- Legacy wildcard (Listener/Cluster): a first request subscribing to nothing means "*".
  The first wildcard request is answered even when there are no resources (an empty
  response): Envoy's initialization waits for it (not on a reconnect that says what the
  client holds: it is initialized already).
  Unlike SotW, subscribing to a name later does not end it; only unsubscribing "*" does.
- On reconnect `initial_resource_versions` says what the client holds: nothing it holds
  at the current version is sent again.
- Unsubscribing a name while also subscribed to "*" must be answered with the resource
  (if the wildcard covers it) or its removal, so the client knows whether to keep it.
- A NACKed resource version is not sent again; a new version of it is.
- On ADS, which type may go out when is decided by `session.Session`; removals of
  clusters (and their endpoints) wait there until listeners and routes caught up.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from envoy.service.discovery.v3 import discovery_pb2

from xds_server.held import Held
from xds_server.session import NO_NAMES, Inflight, Session, by_name, interned_change, names_of
from xds_server.snapshot import Snapshot
from xds_server.types import WILDCARD, WILDCARD_TYPES, XdsResource


@dataclass(slots=True)
class DeltaTypeState:
    wildcard: bool = False
    names: frozenset[str] = NO_NAMES  # (`interned`)
    # name → version the client holds (ACKed, or declared on reconnect).
    held: Held = field(default_factory=Held)
    nacked: dict[str, str] = field(default_factory=dict)
    # Explicit names the client must be told about even if held/absent (see module doc).
    force_send: set[str] = field(default_factory=set)
    # Subscribed names already reported as nonexistent, so the report isn't repeated.
    reported_missing: set[str] = field(default_factory=set)
    inflight: Inflight | None = None
    last_error: str = ""
    acked_system_version: str = ""
    answered: bool = False  # a response of this type went out on this stream
    # A snapshot the client is in step with, under the current subscription: it holds
    # every resource that snapshot selects at that snapshot's version and nothing the
    # snapshot lacks, and every subscribed name the snapshot lacks was reported missing
    # (names in `force_send` excepted: subscribed since, they are answered anyway).
    # A later snapshot is then planned from what changed since (`Snapshot.changes_since`),
    # not by comparing every resource again: a stream's cost per push follows the change,
    # not the world. None: compare everything.
    synced: Snapshot | None = None
    epoch: int = 0  # counts wildcard changes (a response's ACK syncs only within one)
    # The stream opened holding resources (`initial_resource_versions`) not yet compared
    # with a snapshot (`Hooks.on_resume`).
    resumed: bool = False


@dataclass(frozen=True, slots=True)
class DeltaPlan:
    send: Mapping[str, XdsResource]
    removed: tuple[str, ...]
    syncs: bool  # once ACKed the client is in step with the snapshot (`DeltaTypeState.synced`)
    whole: bool = False  # `send` is the snapshot's whole selection (`Snapshot.whole`)


class DeltaSession(Session[DeltaTypeState, DeltaPlan]):
    __slots__ = ()

    def on_request(self, request: discovery_pb2.DeltaDiscoveryRequest) -> list[bytes]:
        """The responses `request` calls for. `request` becomes the session's: a
        reconnect's claim keeps it, stripped to `initial_resource_versions` (`Held.claimed`)."""
        type_url = request.type_url
        first = type_url not in self.types
        state = self.types.setdefault(type_url, DeltaTypeState())
        inflight = state.inflight
        if inflight is not None and request.response_nonce == inflight.nonce:
            state.inflight = None
            names = by_name(inflight)
            if request.HasField("error_detail"):
                state.nacked.update(inflight.resources)
                state.last_error = request.error_detail.message
                state.synced = None
                self._hooks.on_nack(self.stream, type_url, inflight.version, names, request.error_detail.message)
                if inflight.snapshot is not None:
                    self._verdict(inflight.snapshot, False)
            else:
                if inflight.whole is not None and not state.held:
                    state.held.rebase(inflight.whole.selection)  # (shared, not copied)
                else:
                    state.held.update(inflight.resources)
                state.last_error = ""
                state.acked_system_version = inflight.version
                self._hooks.on_ack(self.stream, type_url, inflight.version, names, self._clock() - inflight.sent_at)
                if inflight.snapshot is not None:
                    self._verdict(inflight.snapshot, True)
            for name in inflight.removed:
                state.held.pop(name, None)
            if not request.HasField("error_detail"):
                if inflight.syncs and inflight.epoch == state.epoch and inflight.snapshot is not None:
                    self._in_step(type_url, state, inflight.snapshot)
                else:
                    state.synced = None
        if first and request.initial_resource_versions:  # a reconnect: Envoy is initialized
            state.held = Held.claimed(request)  # (read only if it is not found current)
            state.answered = state.resumed = True
            # (it holds that, whatever it is, until it ACKs or is found current)
            self._hooks.on_resume(self.stream, type_url, "", {})
        self._subscribe(type_url, state, request, first)
        return self._evaluate()

    def _subscribe(self, type_url: str, state: DeltaTypeState,
                   request: discovery_pb2.DeltaDiscoveryRequest, first: bool) -> None:
        subscribe = set(request.resource_names_subscribe)
        unsubscribe = set(request.resource_names_unsubscribe)
        if first or WILDCARD in subscribe or WILDCARD in unsubscribe:
            # (names alone keep `synced`: each is answered through `force_send`, or was
            # dropped from `held` with the subscription: Envoy subscribes each new
            # cluster's endpoints by name, and that must not cost a comparison of all)
            state.synced = None
            state.epoch += 1
        if type_url in WILDCARD_TYPES:
            if WILDCARD in subscribe or (first and not subscribe):
                state.wildcard = True
            if WILDCARD in unsubscribe:
                state.wildcard = False
        added, dropped = subscribe - {WILDCARD}, unsubscribe - {WILDCARD}
        if added or dropped:
            state.names = interned_change(state.names, added, dropped)
        if added:  # (set operations: a delta Envoy subscribes to 10,000 endpoints in one request)
            state.reported_missing -= added
            if not first:
                # The client may have forgotten it; the protocol says send it anyway.
                state.force_send |= added
        for name in dropped:
            state.reported_missing.discard(name)
            if state.wildcard:
                state.force_send.add(name)  # answer with the resource or its removal
            else:
                state.held.pop(name, None)
        if WILDCARD in unsubscribe:
            # Resources held only through the wildcard are dropped by the client itself.
            state.held = Held({n: v for n, v in state.held.items() if n in state.names})

    def _plan(self, type_url: str, state: DeltaTypeState, snapshot: Snapshot, *, hold_removals: bool,
              resend_rejected: bool = False) -> DeltaPlan | None:
        of_type = self.available(type_url, snapshot)
        current = of_type is snapshot.of_type(type_url)
        synced = state.synced if current else None
        exact: bool | None = None  # it holds exactly its selection (None: not compared)
        if state.resumed and current:
            exact = self._resume(type_url, state, snapshot)
        if self.sends_wholes and current and synced is None and not state.nacked and not state.force_send:
            # A fresh Envoy, or one reconnecting that holds this snapshot's selection
            # already: one answer shared by every such stream, no name-by-name comparison.
            if not state.held:
                return self._plan_selection(type_url, state, snapshot, hold_removals, whole=True)
            if exact is None:
                exact = self._holds_selection(type_url, state, snapshot)
            if exact:
                return self._plan_selection(type_url, state, snapshot, hold_removals, whole=False)
        if synced is not None:  # in step with `synced`: only what changed since, or was (un)subscribed
            changes = snapshot.changes_since(type_url, synced)
            wildcard, names = state.wildcard, state.names
            answers = {n for n in state.force_send if n in of_type and (wildcard or n in names)}
            candidates = sorted(answers.union(n for n in changes.changed if wildcard or n in names))
        else:
            wanted = set(of_type) if state.wildcard else set()
            wanted |= state.names & of_type.keys()
            candidates = sorted(wanted)
        send = {}
        skipped = False
        held = state.held.lookup()
        for name in candidates:
            resource = of_type[name]
            forced = name in state.force_send
            if state.nacked.get(name) == resource.version and not forced and not resend_rejected:
                skipped = True
                continue
            if forced or held(name) != resource.version:
                send[name] = resource
        if synced is not None:
            removed = state.force_send - answers
            if not hold_removals:
                removed |= {n for n in changes.gone if n in state.held}
        else:
            removed = {n for n in state.force_send if n not in wanted}  # answers to (un)subscriptions
            if not hold_removals:
                removed |= {n for n in state.held if n not in of_type}
                removed |= _missing(state, of_type)
        syncs = current and not skipped and not hold_removals
        if not send and not removed and (state.answered or not state.wildcard):
            if syncs:  # (a memo, not protocol state: it holds all this snapshot has for it)
                self._in_step(type_url, state, snapshot)
            return None  # (a first wildcard request is answered even when there is nothing:
            # Envoy's initialization waits for that answer, else for its initial_fetch_timeout)
        return DeltaPlan(send, tuple(sorted(removed)), syncs)

    def _resume(self, type_url: str, state: DeltaTypeState, snapshot: Snapshot) -> bool:
        """`on_resume` for a reconnect, once: what it holds of its selection at current
        versions (all of it: the snapshot's version; else "", and the rest is sent and
        its ACK tells). Whether it holds exactly its selection."""
        state.resumed = False
        selection = snapshot.selected_versions(type_url, None if state.wildcard else state.names)
        if self._holds_selection(type_url, state, snapshot):
            self._hooks.on_resume(self.stream, type_url, snapshot.version(type_url), selection)
            self._verdict(snapshot, True)
            return True
        current = {n: v for n in sorted(state.held) if selection.get(n) == (v := state.held[n])}
        if current:
            self._hooks.on_resume(self.stream, type_url, "", current)
        return False

    @staticmethod
    def _holds_selection(type_url: str, state: DeltaTypeState, snapshot: Snapshot) -> bool:
        """It holds exactly what `snapshot` selects for it (a reconnect's claim, unread,
        compared whole: `Snapshot.claim`)."""
        names = None if state.wildcard else state.names
        selection = snapshot.selected_versions(type_url, names)
        # (a claim of another length cannot match: it asks for no message to compare with)
        claim = snapshot.claim(type_url, names) if state.held.unread and len(state.held) == len(selection) else None
        return state.held.holds_exactly(selection, claim)

    def _plan_selection(self, type_url: str, state: DeltaTypeState, snapshot: Snapshot,
                        hold_removals: bool, *, whole: bool) -> DeltaPlan | None:
        """`_plan` for a client that holds nothing of this type (`whole`: it is sent all of
        its selection, `Snapshot.whole`) or exactly its selection (it is sent nothing);
        either way only names the snapshot lacks are reported."""
        send = snapshot.subset(type_url, None if state.wildcard else state.names)[0] if whole else {}
        removed: tuple[str, ...] = ()
        if not hold_removals:
            of_type = snapshot.of_type(type_url)
            removed = tuple(sorted(_missing(state, of_type)))
        if not send and not removed and (state.answered or not state.wildcard):
            if not hold_removals:
                self._in_step(type_url, state, snapshot)
            return None
        return DeltaPlan(send, removed, syncs=not hold_removals, whole=whole)

    @staticmethod
    def _in_step(type_url: str, state: DeltaTypeState, snapshot: Snapshot) -> None:
        """The client holds what `snapshot` selects for it, at its versions (and nothing it
        lacks); if exactly that, what it holds becomes that selection, shared."""
        state.synced = snapshot
        if state.force_send:
            return  # (what it holds may lack a name subscribed since)
        selection = snapshot.of_type(type_url) if state.wildcard else snapshot.subset(type_url, state.names)[0]
        if len(state.held) == len(selection):  # (it holds all of it: the same names)
            state.held.rebase(selection)

    def _removes(self, type_url: str, state: DeltaTypeState, snapshot: Snapshot) -> bool:
        if state.synced is not None:  # it holds nothing `synced` lacks, and was told of missing names
            of_type = snapshot.of_type(type_url)
            return (any(n in state.held for n in snapshot.changes_since(type_url, state.synced).gone)
                    or any(n in state.names and n not in of_type and n not in state.reported_missing
                           for n in state.force_send))  # (a name subscribed since, missing)
        of_type = snapshot.of_type(type_url)
        # (a reconnect's claim is compared whole before it is read)
        holds_only_current = state.held.unread and self._holds_selection(type_url, state, snapshot)
        return (not (holds_only_current or state.held.within(of_type))
                or bool(_missing(state, of_type)))

    def _emit(self, type_url: str, state: DeltaTypeState, snapshot: Snapshot,
              plan: DeltaPlan) -> bytes:
        nonce = self._next_nonce()
        version = snapshot.version(type_url)
        envelope = discovery_pb2.DeltaDiscoveryResponse(system_version_info=version, type_url=type_url,
                                                        nonce=nonce, removed_resources=plan.removed)
        if plan.whole:
            whole = snapshot.whole(type_url, None if state.wildcard else state.names, delta=True)
            response: bytes = envelope.SerializeToString() + whole.body
            inflight = Inflight(nonce, version, whole.versions, self._clock(), plan.removed, snapshot=snapshot,
                                syncs=plan.syncs, epoch=state.epoch, whole=whole)
        else:
            response = envelope.SerializeToString() + b"".join(
                [snapshot.encoded(r, delta=True) for r in plan.send.values()])
            inflight = Inflight(nonce, version, {n: r.version for n, r in plan.send.items()}, self._clock(),
                                plan.removed, snapshot=snapshot, syncs=plan.syncs, epoch=state.epoch)
        state.force_send.clear()
        state.answered = True
        state.reported_missing |= set(plan.removed) & state.names
        state.inflight = inflight
        self._hooks.on_push(self.stream, type_url, version, names_of(inflight), plan.removed, len(response))
        return response


def _missing(state: DeltaTypeState, of_type: Mapping[str, XdsResource]) -> set[str]:
    """Subscribed names `of_type` lacks that the client was not told of yet. (A loop over
    the names: set operations with a mapping's keys walk all of them, and a wildcard
    subscription names nothing among 40,000 resources.)"""
    return {n for n in state.names if n not in of_type and n not in state.reported_missing}
