"""What the SotW and delta sessions of one xDS stream share: who is on the other end, the
per-type state, the snapshot being served, and the response in flight per type.

Each protocol variant (`sotw.SotwSession`, `delta.DeltaSession`) decides what to send
from `snapshot` and `types` in its own `_evaluate`; both re-evaluate on a new snapshot.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from xds_server.hooks import Hooks, StreamInfo
from xds_server.snapshot import Snapshot


@dataclass(slots=True)
class Inflight:
    nonce: str
    version: str
    resources: dict[str, str]  # name → resource version
    sent_at: float
    removed: tuple[str, ...] = ()
    full: bool = True  # False: a partial (RDS/EDS) response, merged into what the client holds
    snapshot: Snapshot | None = None  # the snapshot it was computed from (ACK/NACK verdicts)


Verdict = Callable[[Snapshot, bool], None]
"""Tells the cache a client accepted (True) or rejected (False) content from a snapshot."""


def _no_verdict(snapshot: Snapshot, accepted: bool) -> None:
    return None


State = TypeVar("State")
Response = TypeVar("Response")


class Session(Generic[State, Response]):
    def __init__(self, stream: StreamInfo, *, ads: bool, hooks: Hooks,
                 clock: Callable[[], float], nonces: Callable[[], str], verdict: Verdict = _no_verdict) -> None:
        self.stream = stream
        self._verdict = verdict
        self.ads = ads
        self.types: dict[str, State] = {}
        self.snapshot: Snapshot | None = None
        self._hooks = hooks
        self._clock = clock
        self._nonces = nonces

    def on_snapshot(self, snapshot: Snapshot | None) -> list[Response]:
        self.snapshot = snapshot
        return self._evaluate()

    def _evaluate(self) -> list[Response]:
        raise NotImplementedError
