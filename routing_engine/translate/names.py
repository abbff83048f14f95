"""Envoy resource names derived from IR names, in one place.

Names are stable across compiles (they are xDS resource keys: renaming one makes Envoy
drop and re-add it). Backend names become cluster and ClusterLoadAssignment names as
they are; listener names name the Listener, and with a hash of the Listener's content,
its RouteConfiguration (or its scoped tables and routing scopes).
"""

from __future__ import annotations

import hashlib

from routing_engine import ir

# Defined by every bootstrap (envoy/ templates, and `engine.static_bootstrap`): Envoy's
# own admin listener, so `/metrics` can be answered from `/stats/prometheus`.
ADMIN_CLUSTER = "modelroute_admin"

# Dynamic-metadata namespace where `model_match` puts the OpenAI body's `model`.
MODEL_METADATA_NAMESPACE = "modelroute"
MODEL_METADATA_KEY = "model"


def cluster(backend: str) -> str:
    return backend


def failover_cluster(primary: str, fallback: str) -> str:
    """The aggregate cluster that sends to `primary`, or to `fallback` when `primary` has
    no healthy endpoint."""
    return f"failover/{primary}/{fallback}"


def destination(backend: ir.WeightedBackend) -> str:
    """The cluster a route sends this share of its traffic to."""
    if backend.failover_to and backend.failover_to != backend.backend:
        return failover_cluster(backend.backend, backend.failover_to)
    return cluster(backend.backend)


def listener_tag(shape: bytes) -> str:
    """A hash of a listener's content (`shape`: the serialized Listener without the names
    derived from it): what names its route table(s) and routing scopes, so that they are
    only ever asked for (or selected) by the listener they were built for (see
    translate/listener.py: fail closed by construction)."""
    return hashlib.sha256(shape).hexdigest()[:12]


def route_config(listener: ir.Listener, tag: str) -> str:
    """A listener's RouteConfiguration (its only one, or the first of its scoped tables)."""
    return f"{listener.name}/{tag}"


def route_table(listener: ir.Listener, tag: str, index: int) -> str:
    """Table `index` of a scoped listener (translate/scopes.py)."""
    return f"{listener.name}/{tag}/table/{index}"


def route_scope(listener: ir.Listener, tag: str, key: tuple[str, ...]) -> str:
    """The routing scope of `key` (path segments, padded with empty ones) on a scoped
    listener; segments never hold `/`, so the name is unique per key."""
    return f"{listener.name}/{tag}/scope/{'/'.join(key)}"


def jwks_cluster(provider: ir.JwtProvider) -> str:
    return f"jwks/{provider.name}"


def jwt_requirement(route: ir.Route) -> str:
    """Per-route requirement key in the jwt_authn requirement_map: the providers
    themselves, so routes with the same providers share one entry."""
    return "+".join(sorted(p.name for p in route.auth if isinstance(p, ir.JwtProvider)))
