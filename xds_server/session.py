"""What the SotW and delta sessions of one xDS stream share: who is on the other end, the
per-type state, the snapshot being served, the response in flight per type, and the
order in which an ADS stream may send types (SPEC 3.8).

Each protocol variant (`sotw.SotwSession`, `delta.DeltaSession`) says what it would send
for one type (`_plan`, no side effects) and sends it (`_emit`); this base decides when.

ADS ordering: make-before-break without waiting on an ACK that needs a held response.
- Envoy ACKs a CDS update only once its new clusters have warmed, and warming needs the
  clusters' ClusterLoadAssignments (and any SDS secret they use). So EDS and SDS are
  never held back: a request for them is answered at once, even while a CDS update is
  unacknowledged. (Envoy only asks for EDS names of clusters it has.)
- Listeners and routes point at clusters: LDS and RDS wait until the client holds this
  snapshot's clusters (no CDS response in flight, none to send).
- RDS does not wait for LDS: a warming listener asks for its RouteConfiguration and must
  get it before Envoy finishes the listener. A route table is safe to send before its
  listener is accepted because the engine names each RouteConfiguration after the exact
  listener it was built for, so Envoy only ever asks for it from that listener.
- LDS goes after RDS and SRDS on a stream, and waits while either is in flight: the
  tables a replaced listener keeps for its draining connections change with the
  snapshot that replaces it (they fail closed where the change touched a route), and
  Envoy must apply them before the new listener takes over, or a kept-alive connection
  could be answered the old way in between. Envoy applies an ADS stream's responses in
  order, and RDS never waits for LDS, so this cannot deadlock; route updates arriving
  faster than Envoy's round trip would postpone a listener update until they pause.
- Routing scopes (SRDS) are like route tables: they wait for the clusters, never for
  the listener (a warming listener needs its scopes), and the engine keys and names
  each scope after the exact listener it was built for.
- Clusters that left the snapshot are kept on the client (SotW: sent again at the
  version it holds; delta: their removal withheld, with their endpoints') until its
  listeners, scopes and route tables hold this snapshot's versions, so no route ever
  points at a removed cluster. A NACKed listener, scope or route table counts as not
  caught up: Envoy keeps the old one, which may still point at the old clusters.
  Likewise scopes that left the snapshot are kept until the listeners caught up: the
  listener Envoy still runs (the new one warming, or rejected) selects the old scopes.
- What an un-ACKed update needs is served from the snapshot that update came from: a
  cluster still warming from an in-flight CDS response gets its ClusterLoadAssignment
  (and a listener from an in-flight LDS response its scopes, RouteConfigurations and
  Secrets; scopes in flight their RouteConfigurations) even if a newer snapshot already
  dropped it; otherwise Envoy would hold that CDS ACK until its 15 s
  initial_fetch_timeout, and every route update behind it.
Per-type services (not ADS) are independent streams: each type is sent on its own.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Mapping, Sequence, Set
from dataclasses import dataclass, field
from typing import ClassVar, Generic, Protocol, TypeVar

from xds_server.hooks import Hooks, StreamInfo
from xds_server.snapshot import Snapshot, Whole
from xds_server.types import CLUSTER, ENDPOINT, LISTENER, ROUTE, SCOPED_ROUTE, SECRET, XdsResource, push_rank


@dataclass(slots=True)
class Inflight:
    nonce: str
    version: str
    resources: Mapping[str, str]  # name → resource version (read-only: may be a `Whole`'s)
    sent_at: float
    removed: tuple[str, ...] = ()
    full: bool = True  # False: a partial (RDS/EDS) response, merged into what the client holds
    snapshot: Snapshot | None = None  # the snapshot it was computed from (ACK/NACK verdicts)
    # Resources sent again although they left `snapshot` (make-before-break), by name.
    kept: Mapping[str, XdsResource] = field(default_factory=dict)
    # Once ACKed, the client holds `snapshot`'s selection exactly (see the protocols'
    # `synced`), if its subscription is still the one of `epoch`.
    syncs: bool = False
    epoch: int = 0
    # When the response was all of a subscription's selection (`resources` is then its
    # `versions`): what the client holds once it ACKs, shared rather than copied.
    whole: Whole | None = None


# Types whose responses wait until the client holds the snapshot's version of these.
WAITS_FOR: dict[str, tuple[str, ...]] = {LISTENER: (CLUSTER, SCOPED_ROUTE, ROUTE), SCOPED_ROUTE: (CLUSTER,),
                                         ROUTE: (CLUSTER,)}
# The order an ADS stream considers types in: make-before-break (`push_rank`), except
# that listeners go after the routing scopes and route tables (see the module docstring).
_STREAM_ORDER: tuple[str, ...] = (CLUSTER, ENDPOINT, SCOPED_ROUTE, ROUTE, LISTENER, SECRET)
# Types whose resources are asked for by warming resources of these (in-flight) types.
NEEDED_BY: dict[str, tuple[str, ...]] = {ENDPOINT: (CLUSTER,), SCOPED_ROUTE: (LISTENER,),
                                         ROUTE: (LISTENER, SCOPED_ROUTE), SECRET: (CLUSTER, LISTENER)}
# Removals of a type are withheld while any of its referrers lags behind the snapshot.
_CLUSTER_REFERRERS: tuple[str, ...] = (LISTENER, SCOPED_ROUTE, ROUTE)
REFERRERS: dict[str, tuple[str, ...]] = {CLUSTER: _CLUSTER_REFERRERS, ENDPOINT: _CLUSTER_REFERRERS,
                                         SCOPED_ROUTE: (LISTENER,)}


NO_NAMES: frozenset[str] = frozenset()


def stream_rank(type_url: str) -> tuple[int, str]:
    """Sort key of `_STREAM_ORDER`; unknown types after, as `push_rank` puts them."""
    if type_url in _STREAM_ORDER:
        return (_STREAM_ORDER.index(type_url), "")
    return push_rank(type_url)
_SUBSCRIPTIONS: weakref.WeakValueDictionary[frozenset[str], frozenset[str]] = weakref.WeakValueDictionary()


def interned(names: Set[str]) -> frozenset[str]:
    """One object per distinct set of subscribed names, shared by every stream that has
    it: thousands of Envoys subscribe to the same 10,000 endpoint names, which would
    otherwise be held once per stream, and a snapshot's per-subscription cache
    (`Snapshot.subset`) then finds a subscription by identity."""
    if not names:
        return NO_NAMES
    frozen = frozenset(names)
    return _SUBSCRIPTIONS.setdefault(frozen, frozen)


_CHANGES: dict[tuple[frozenset[str], frozenset[str], frozenset[str]], frozenset[str]] = {}
_CHANGES_KEPT = 8  # (each holds two sets of up to tens of thousands of names alive)


def interned_change(names: frozenset[str], added: Set[str], dropped: Set[str]) -> frozenset[str]:
    """`interned((names | added) - dropped)`, for `names` interned: every Envoy of a group
    makes the same change (a new model: each subscribes to its endpoints by name), and
    building and hashing the 10,000-name set once per stream cost ~1 ms each."""
    key = (names, frozenset(added), frozenset(dropped))
    found = _CHANGES.get(key)
    if found is None:
        if len(_CHANGES) >= _CHANGES_KEPT:
            _CHANGES.clear()  # (only the change streams are making now is worth keeping)
        found = _CHANGES[key] = interned((names | added) - dropped)
    return found


def by_name(inflight: Inflight) -> Mapping[str, str]:
    """A response's resources (name → version) in name order, as ACK/NACK hooks get them."""
    resources = inflight.resources
    return resources if inflight.whole is not None else {name: resources[name] for name in sorted(resources)}


def names_of(inflight: Inflight) -> Sequence[str]:
    """A response's resource names in name order, as push hooks get them."""
    return inflight.whole.names if inflight.whole is not None else sorted(inflight.resources)


Verdict = Callable[[Snapshot, bool], None]
"""Tells the cache a client accepted (True) or rejected (False) content from a snapshot."""


def _no_verdict(snapshot: Snapshot, accepted: bool) -> None:
    return None


class TypeState(Protocol):
    inflight: Inflight | None

    @property
    def names(self) -> Set[str]: ...  # read-only here: SotW keeps a frozenset, Delta a set


State = TypeVar("State", bound=TypeState)
Plan = TypeVar("Plan")


class Session(Generic[State, Plan]):
    """Responses are serialized (Delta)DiscoveryResponses, ready for the wire. (Slots:
    a control plane holds one session per connected Envoy.)"""

    __slots__ = ("stream", "_verdict", "ads", "types", "_order", "snapshot", "_hooks", "_clock", "_nonce")
    # Send a client that holds nothing of a type the snapshot's shared `Whole` (a memo:
    # the same bytes as planning it resource by resource; off only to test that).
    sends_wholes: ClassVar[bool] = True

    def __init__(self, stream: StreamInfo, *, ads: bool, hooks: Hooks,
                 clock: Callable[[], float], verdict: Verdict = _no_verdict) -> None:
        self.stream = stream
        self._verdict = verdict
        self.ads = ads
        self.types: dict[str, State] = {}
        self._order: tuple[str, ...] = ()  # `types` in push order
        self.snapshot: Snapshot | None = None
        self._hooks = hooks
        self._clock = clock
        self._nonce = 0

    def _next_nonce(self) -> str:
        """Nonces count up per stream (they only need to tell this stream's responses apart)."""
        self._nonce += 1
        return str(self._nonce)

    def name_count(self, type_url: str) -> int:
        """Resource names the client subscribes to for `type_url` (what a stream holds)."""
        state = self.types.get(type_url)
        return len(state.names) if state is not None else 0

    def on_snapshot(self, snapshot: Snapshot | None) -> list[bytes]:
        self.snapshot = snapshot
        return self._evaluate()

    def _evaluate(self) -> list[bytes]:
        snapshot = self.snapshot
        if snapshot is None:
            return []
        responses: list[bytes] = []
        # Whether referrers lag behind is only asked when a removal is due (it plans
        # them: thousands of streams re-evaluate on every snapshot).
        lagging: dict[str, bool] = {}
        busy: set[str] = set()  # types with a response in flight (or just sent) on this stream
        if len(self._order) != len(self.types):  # types are only ever added
            self._order = tuple(sorted(self.types, key=stream_rank))
        for type_url in self._order:
            state = self.types[type_url]
            if state.inflight is not None:
                busy.add(type_url)
                continue
            if self.ads and busy and busy.intersection(WAITS_FOR.get(type_url, ())):
                continue
            hold = self._hold_removals(type_url, state, snapshot, lagging)
            plan = self._plan(type_url, state, snapshot, hold_removals=hold)
            if plan is not None:
                responses.append(self._emit(type_url, state, snapshot, plan))
                busy.add(type_url)
        return responses

    def _hold_removals(self, type_url: str, state: State, snapshot: Snapshot, lagging: dict[str, bool]) -> bool:
        """Removals of `type_url` wait while a referrer lags behind (`lagging`: per referrer,
        asked once per evaluation)."""
        referrers = REFERRERS.get(type_url)
        if not self.ads or not referrers or not self._removes(type_url, state, snapshot):
            return False
        for referrer in referrers:
            if referrer not in lagging:
                lagging[referrer] = referrer in self.types and self._behind(referrer, snapshot)
            if lagging[referrer]:
                return True
        return False

    def available(self, type_url: str, snapshot: Snapshot) -> Mapping[str, XdsResource]:
        """Resources of `type_url` this stream may be sent: the snapshot's, plus those of
        the snapshots behind in-flight responses that resources of this type serve (see
        the module docstring); the newest wins."""
        current = snapshot.of_type(type_url)
        older: list[Mapping[str, XdsResource]] = []
        for referrer in NEEDED_BY.get(type_url, ()):
            state = self.types.get(referrer)
            inflight = state.inflight if state is not None else None
            if inflight is not None and inflight.snapshot is not None and inflight.snapshot is not snapshot:
                older.append(inflight.snapshot.of_type(type_url))
        if not older or all(not o.keys() - current.keys() for o in older):
            return current
        merged: dict[str, XdsResource] = {}
        for resources in (*older, current):
            merged.update(resources)
        return merged

    def _behind(self, type_url: str, snapshot: Snapshot) -> bool:
        """The client does not (yet) hold this snapshot's resources of `type_url`: a
        response is in flight, or one would be sent, or was rejected."""
        state = self.types[type_url]
        return state.inflight is not None or self._plan(type_url, state, snapshot, hold_removals=False,
                                                        resend_rejected=True) is not None

    def _plan(self, type_url: str, state: State, snapshot: Snapshot, *, hold_removals: bool,
              resend_rejected: bool = False) -> Plan | None:
        """What would be sent for `type_url` now (None: nothing). Sends nothing and
        changes nothing that decides what is sent later, except by facts it learns about
        the client (that it is in step with the snapshot; what a reconnect holds, also
        told to `Hooks.on_resume`), so it may be asked as a question (`_behind`).
        `resend_rejected`: plan a rejected version too (to tell whether the client lags)."""
        raise NotImplementedError

    def _removes(self, type_url: str, state: State, snapshot: Snapshot) -> bool:
        """Would the client be told to drop a resource of `type_url` it holds (or asked
        for) that left `snapshot`? Only then does holding removals back matter."""
        raise NotImplementedError

    def _emit(self, type_url: str, state: State, snapshot: Snapshot, plan: Plan) -> bytes:
        """Send `plan`: the response, with the per-type state updated (nonce, in flight)."""
        raise NotImplementedError
