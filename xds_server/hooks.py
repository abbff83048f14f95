"""Callback hooks: how metrics, debug state and status writing observe the protocol.

The protocol code calls `Hooks` methods and knows nothing about Prometheus, HTTP or
ModelRoute status; each observer subclasses `Hooks` and overrides what it needs.
`HookSet` fans out and isolates failures: a broken observer is logged, never allowed to
break an xDS stream.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from xds_server.cache import Snapshot

log = logging.getLogger("modelroute.xds")


@dataclass(frozen=True, slots=True)
class StreamInfo:
    """Who is on the other end of a stream. `kind` is e.g. `ads`, `ads-delta`, `lds`."""

    stream_id: int
    kind: str
    node_id: str
    node_group: str
    identity: str | None = None  # the client certificate's SPIFFE ID over mTLS (identity.py)

    @property
    def delta(self) -> bool:
        return self.kind.endswith("-delta")


class Hooks:
    """No-op base: override the events you care about. Called on the event loop thread.

    `on_ack`/`on_nack` get the response's resources as name → resource version (in name
    order): what the client accepted or rejected, at exactly which versions."""

    def on_stream_open(self, stream: StreamInfo) -> None:
        return None

    def on_stream_close(self, stream: StreamInfo) -> None:
        return None

    def on_push(self, stream: StreamInfo, type_url: str, version: str, names: Sequence[str],
                removed: Sequence[str], nbytes: int) -> None:
        return None

    def on_ack(self, stream: StreamInfo, type_url: str, version: str, resources: Mapping[str, str],
               latency_s: float) -> None:
        return None

    def on_nack(self, stream: StreamInfo, type_url: str, version: str, resources: Mapping[str, str],
                error_message: str) -> None:
        return None

    def on_resume(self, stream: StreamInfo, type_url: str, version: str, resources: Mapping[str, str]) -> None:
        """A client opened this stream holding resources from an earlier one (a
        control-plane restart, a reconnect). Called when its first request says so, with
        no resources and the version it claims (SotW `version_info`; delta: ""), since
        until it ACKs something it holds that, whatever it is; and once more if it turns
        out to hold current resources, which are then not sent again: `resources` (name
        → version, in name order) as good as an ACK of them, `version` the response
        version it holds ("" when not exactly one response's: delta, holding some but
        not all of its selection at current versions)."""
        return None

    def on_snapshot(self, node_group: str, snapshot: Snapshot) -> None:
        return None


_EVENTS = tuple(name for name in vars(Hooks) if name.startswith("on_"))


class HookSet(Hooks):
    """Calls every hook in order; an exception in one is logged and the others still run.

    A HookSet among the hooks is flattened into this one, and each event calls only the
    hooks that override it: with 10,000 streams a push is 10,000 `on_push` and as many
    `on_ack` calls, so no call is spent on a no-op."""

    def __init__(self, hooks: Sequence[Hooks] = ()) -> None:
        flat: list[Hooks] = []
        for hook in hooks:
            flat.extend(hook._hooks if isinstance(hook, HookSet) else (hook,))
        self._hooks: tuple[Hooks, ...] = tuple(flat)
        self._calls: dict[str, tuple[tuple[str, Callable[..., None]], ...]] = {
            event: tuple((type(hook).__name__, call) for hook in flat
                         if getattr(call := getattr(hook, event), "__func__", None) is not getattr(Hooks, event))
            for event in _EVENTS}

    def _each(self, method: str, *args: Any) -> None:
        for name, call in self._calls[method]:
            try:
                call(*args)
            except Exception:  # an observer must never take a stream down
                log.exception("xds hook failed", extra={"hook": name, "event": method})

    def on_stream_open(self, stream: StreamInfo) -> None:
        self._each("on_stream_open", stream)

    def on_stream_close(self, stream: StreamInfo) -> None:
        self._each("on_stream_close", stream)

    def on_push(self, stream: StreamInfo, type_url: str, version: str, names: Sequence[str],
                removed: Sequence[str], nbytes: int) -> None:
        self._each("on_push", stream, type_url, version, names, removed, nbytes)

    def on_ack(self, stream: StreamInfo, type_url: str, version: str, resources: Mapping[str, str],
               latency_s: float) -> None:
        self._each("on_ack", stream, type_url, version, resources, latency_s)

    def on_nack(self, stream: StreamInfo, type_url: str, version: str, resources: Mapping[str, str],
                error_message: str) -> None:
        self._each("on_nack", stream, type_url, version, resources, error_message)

    def on_resume(self, stream: StreamInfo, type_url: str, version: str, resources: Mapping[str, str]) -> None:
        self._each("on_resume", stream, type_url, version, resources)

    def on_snapshot(self, node_group: str, snapshot: Snapshot) -> None:
        self._each("on_snapshot", node_group, snapshot)


class LogHooks(Hooks):
    """Structured logs for the events an operator needs: NACKs (with Envoy's message) and
    stream churn. Pushes and ACKs are metrics, not log lines."""

    def on_stream_open(self, stream: StreamInfo) -> None:
        log.info("xds stream open", extra=_fields(stream))

    def on_stream_close(self, stream: StreamInfo) -> None:
        log.info("xds stream closed", extra=_fields(stream))

    def on_nack(self, stream: StreamInfo, type_url: str, version: str, resources: Mapping[str, str],
                error_message: str) -> None:
        log.warning("xds NACK: %s", error_message, extra={**_fields(stream), "type_url": type_url,
                                                         "version": version, "resources": list(resources)})


def _fields(stream: StreamInfo) -> dict[str, Any]:
    return {"stream": stream.stream_id, "node": stream.node_id, "node_group": stream.node_group,
            "kind": stream.kind}


AckCallback = Callable[[str, str, Sequence[str], str], None]
NackCallback = Callable[[str, str, Sequence[str], str, str], None]


class StatusHooks(Hooks):
    """Adapter for the wiring code's status writer, which thinks in node groups, not streams.

    `on_ack(node_group, type_url, names, version)` → owners of `names` become
    Programmed=True; `on_nack(node_group, type_url, names, error_message, version)` →
    Programmed=False with Envoy's message. `names` are the resources in the response the
    client accepted or rejected (a NACK does not say which one of them was bad).
    """

    def __init__(self, on_ack: AckCallback | None = None, on_nack: NackCallback | None = None) -> None:
        self._on_ack = on_ack
        self._on_nack = on_nack

    def on_ack(self, stream: StreamInfo, type_url: str, version: str, resources: Mapping[str, str],
               latency_s: float) -> None:
        if self._on_ack is not None:
            self._on_ack(stream.node_group, type_url, list(resources), version)

    def on_resume(self, stream: StreamInfo, type_url: str, version: str, resources: Mapping[str, str]) -> None:
        if self._on_ack is not None and resources:
            self._on_ack(stream.node_group, type_url, list(resources), version)

    def on_nack(self, stream: StreamInfo, type_url: str, version: str, resources: Mapping[str, str],
                error_message: str) -> None:
        if self._on_nack is not None:
            self._on_nack(stream.node_group, type_url, list(resources), error_message, version)
