"""Which snapshot an Envoy gets: node group → engine `Target` (SPEC 3.6).

Each Envoy states its role in its bootstrap node metadata (`role: gateway|sidecar`) and a
sidecar may narrow its scope (`scope: {"namespaces": [...], "servers": ["ns/name"]}`).
`xds_server.identity.node_group` turns that into a canonical group name, so every
Envoy of one role and scope shares one compile and one snapshot; this module turns the
group name back into the `Target` the engine compiles for.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from routing_engine.api.resources import ObjectKey
from routing_engine.world import Target

GATEWAY = "gateway"


@dataclass(frozen=True, slots=True)
class Placement:
    """How this process places listeners: the same for every group it serves."""

    listen_address: str | None = None  # gateways; sidecars always bind 127.0.0.1
    privileged_port_offset: int = 0
    # In a cluster: one exposure (Service type) per port, see `Target.one_exposure_per_port`.
    # For sidecars too, so a sidecar never serves a server the gateway reports as Failed.
    one_exposure_per_port: bool = False
    # Gateways: the port of the readiness listener the control plane pushes (see
    # `modelroute.readiness`; None: none), and every port the gateway Envoy uses itself.
    readiness_port: int | None = None
    reserved_ports: frozenset[int] = frozenset()


def _names(scope: Mapping[str, Any], key: str) -> frozenset[str] | None:
    value = scope.get(key)
    if value is None:
        return None
    items = value.split(",") if isinstance(value, str) else value
    return frozenset(str(item).strip() for item in items if str(item).strip())


def target_for_group(group: str, placement: Placement) -> Target:
    """`gateway` → a gateway Target; `sidecar` or `sidecar:{scope JSON}` → a sidecar one.
    A scope that cannot be read gives a sidecar with an empty scope (nothing is served)
    rather than everything: a typo must not widen what a sidecar sees."""
    role, _, scope_text = group.partition(":")
    # Claims (and so statuses) must come out the same for every group: the same rules for all.
    base = Target(privileged_port_offset=placement.privileged_port_offset,
                  one_exposure_per_port=placement.one_exposure_per_port, reserved_ports=placement.reserved_ports)
    if role != "sidecar":
        return replace(base, role="gateway", listen_address=placement.listen_address)
    try:
        scope = json.loads(scope_text) if scope_text else {}
    except ValueError:
        scope = None
    if not isinstance(scope, dict):
        return replace(base, role="sidecar", namespaces=frozenset(), servers=frozenset())
    servers = _names(scope, "servers")
    server_keys = None if servers is None else frozenset(
        ObjectKey("ModelServer", *(s.split("/", 1) if "/" in s else ("default", s))) for s in servers)
    return replace(base, role="sidecar", namespaces=_names(scope, "namespaces"), servers=server_keys)
