"""What goes into the engine and what comes out of it.

The engine is a pure function `compile(world, target) -> Compiled`: no I/O, no clocks.
Providers (files, Kubernetes) build a `World`; the controller adds endpoints and live
canary weights; the xDS server serves `Compiled.resources`; the status writer publishes
`Compiled.statuses`; status views show `Compiled.routes` (each ModelRoute's split as
served); the shared rate-limit service enforces `Compiled.gateway.shared_limits`. What
the canary runner rolls out (`CanaryGroup`) comes from `routing_engine.canaries`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal

from routing_engine.api.resources import CanaryAnalysis, ObjectKey, Resource

if TYPE_CHECKING:
    from routing_engine import ir

_EMPTY: Mapping[Any, Any] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class BackendEndpoint:
    """A ready (or not) replica of a ModelInfer. `port` None means the ModelServer's
    targetPort (Kubernetes pods all listen on it); embedded replicas have their own ports.
    `adapters`: the LoRA adapters the replica reports loaded (None: not known yet, which
    counts as none: adapter requests never go where they might not be served). `weight`:
    its load-aware weight, when its ModelInfer is served by a loadAware ModelServer."""

    address: str
    port: int | None = None
    healthy: bool = True
    adapters: tuple[str, ...] | None = None
    weight: int | None = None


@dataclass(frozen=True, slots=True)
class World:
    objects: tuple[Resource, ...]
    # ModelInfer key → its replicas. A ModelInfer absent here has no endpoints yet.
    endpoints: Mapping[ObjectKey, tuple[BackendEndpoint, ...]] = field(default_factory=lambda: _EMPTY)
    # ModelRoute key → live (stable, canary) weights set by the canary controller; they
    # replace the spec's trafficSplit without rewriting the user's spec (SPEC 3.4).
    live_weights: Mapping[ObjectKey, tuple[int, int]] = field(default_factory=lambda: _EMPTY)
    # Objects the source holds but left out as invalid (their errors say why): a reference
    # to one is reported as invalid, not as missing. A key that is also in `objects` (a
    # last good version the source still serves) is not refused.
    refused: frozenset[ObjectKey] = frozenset()


@dataclass(frozen=True, slots=True)
class Target:
    """Which Envoys the output is for (SPEC 3.6). Every sidecar of one scope gets the same
    output, so the xDS server keys snapshots by this value."""

    role: Literal["gateway", "sidecar"] = "gateway"
    # None: 0.0.0.0 for a gateway, 127.0.0.1 for a sidecar.
    listen_address: str | None = None
    # Added to manifest ports below 1024 so an unprivileged Envoy can bind them.
    privileged_port_offset: int = 0
    # Sidecar scope: only servers in these namespaces / these servers (None: all).
    namespaces: frozenset[str] | None = None
    servers: frozenset[ObjectKey] | None = None
    # In a cluster every Service of a port reaches every server on that port's listener,
    # so servers sharing a port must ask for the same exposure (`service.type`, and for
    # LoadBalancer its annotations); a younger server asking for another is refused.
    # Off where Services do not exist (embedded mode, offline compile).
    one_exposure_per_port: bool = False
    # Listener ports the Envoy uses for itself (admin, the readiness listener): a server
    # asking for one is refused instead of making Envoy reject the whole listener update.
    reserved_ports: frozenset[int] = frozenset()

    @property
    def address(self) -> str:
        if self.listen_address is not None:
            return self.listen_address
        return "127.0.0.1" if self.role == "sidecar" else "0.0.0.0"

    def port(self, manifest_port: int) -> int:
        return manifest_port + self.privileged_port_offset if manifest_port < 1024 else manifest_port


@dataclass(frozen=True, slots=True)
class ConditionView:
    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str
    message: str = ""


@dataclass(frozen=True, slots=True)
class ObjectStatus:
    """What the engine concludes about one object; the status writer adds timestamps and
    observedGeneration, and the xDS server adds `Programmed` from ACK/NACK."""

    phase: str
    conditions: tuple[ConditionView, ...]
    service_endpoint: str | None = None  # ModelServer only
    active_routes: int | None = None  # ModelRoute only


@dataclass(frozen=True, slots=True)
class EnvoyResource:
    """One serialized xDS resource. `version` is a hash of `body`, so identical content
    always has the identical version, across restarts too."""

    type_url: str
    name: str
    body: bytes
    version: str


def envoy_resource(type_url: str, name: str, body: bytes) -> EnvoyResource:
    """`body` as a resource, its version the hash of its content."""
    return EnvoyResource(type_url=type_url, name=name, body=body, version=hashlib.sha256(body).hexdigest()[:16])


@dataclass(frozen=True, slots=True)
class ServedSplit:
    server: ObjectKey  # the ModelServer
    weight: int  # as served (live canary weights included), before translate normalizes


@dataclass(frozen=True, slots=True)
class ServedGroup:
    """One group of a ModelRoute (SPEC 3.3) as Envoy was given it. A LoRA adapter's copies
    of a group (issue 18) are part of the group, not groups of their own."""

    match: ir.RouteMatch  # in normal form; the fallback's is its front door (segment prefix)
    splits: tuple[ServedSplit, ...]
    fallback: bool = False  # the catch-all sending what no group matched to `spec.fallback`


@dataclass(frozen=True, slots=True)
class ServedRoute:
    """What one ModelRoute serves on the target: its groups in match order, then its
    fallback catch-all. Only ModelRoutes installed for the target have one."""

    front_door: str
    groups: tuple[ServedGroup, ...]


@dataclass(frozen=True, slots=True)
class CanaryGroup:
    """A ModelRoute's canary (SPEC 3.4), from the engine's grouping of its entries (the real
    front door): its one group of exactly two destinations, stable (written first) then
    canary. What the canary runner rolls out."""

    stable: ObjectKey
    canary: ObjectKey
    # Where a rollout starts: trafficSplit, else (100 - stepWeight, stepWeight) with an
    # analysis, else 90/10.
    start: tuple[int, int]
    analysis: CanaryAnalysis | None  # None: an A/B experiment nothing moves by itself


@dataclass(frozen=True, slots=True)
class Compiled:
    # type_url → name → resource
    resources: Mapping[str, Mapping[str, EnvoyResource]]
    statuses: Mapping[ObjectKey, ObjectStatus]
    # (type_url, name) → the objects whose spec produced it, for NACK → Programmed=False
    owners: Mapping[tuple[str, str], tuple[ObjectKey, ...]] = field(default_factory=lambda: _EMPTY)
    # What the resources were translated from (with the shared rate-limit table).
    gateway: ir.Gateway | None = None
    # ModelRoute → what it serves, in key order: the splits status views show.
    routes: Mapping[ObjectKey, ServedRoute] = field(default_factory=lambda: _EMPTY)
