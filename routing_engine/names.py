"""Every resource name the engine emits, made in one place: the IR's names (from object
identity) and the Envoy resource names derived from them.

Names are the join keys between xDS resources (a route names a cluster, a listener names
an SDS secret), the keys the xDS server diffs on, and what operators grep for in Envoy's
admin output. Keeping them here means one change of scheme cannot leave a dangling
reference, and each name says which manifest object it came from.

All names are derived from object identity (kind, namespace, name) and never from
content, so editing a spec keeps its names and only changes the resources' versions.
Backend names become cluster and ClusterLoadAssignment names as they are; listener names
name the Listener, and with a hash of the Listener's content, its RouteConfiguration (or
its scoped tables and routing scopes).
"""

from __future__ import annotations

import hashlib

from routing_engine import ir
from routing_engine.api.resources import ObjectKey


def backend(server: ObjectKey) -> str:
    """Cluster (and endpoint assignment) of one ModelServer."""
    return f"modelserver/{server.namespace}/{server.name}"


def stat_name(cluster: str) -> str:
    """The name Envoy reports a backend cluster's statistics under (`alt_stat_name`).

    Envoy joins stat scopes with "." and adds sub-scopes of its own to every cluster
    (`<cluster>.external.upstream_rq_2xx`, `.internal.`, `.canary.`), so a ModelServer
    named `llama.canary` could not be told from the `canary` sub-scope of `llama`: its
    statistics would be lost (and its rollout would never move). Kubernetes names never
    contain "_", so replacing "." with "_" keeps every stat name unique and dot-free."""
    return cluster.replace(".", "_")


def listener(port: int) -> str:
    """The listener of one port, after `Target.port()` has applied any offset."""
    return f"listener/{port}"


def server_route(server: ObjectKey) -> str:
    """A ModelServer's own route (its `routing.path`)."""
    return f"modelserver/{server.namespace}/{server.name}"


def group_route(model_route: ObjectKey, group: int) -> str:
    """Group number `group` (0-based, in first-appearance order) of a ModelRoute."""
    return f"modelroute/{model_route.namespace}/{model_route.name}/{group}"


def fallback_route(model_route: ObjectKey) -> str:
    """The catch-all on a ModelRoute's front door that sends unmatched requests to its
    fallback."""
    return f"modelroute/{model_route.namespace}/{model_route.name}/fallback"


def tls_certificate(namespace: str, secret: str) -> str:
    """SDS name of a TLS Secret; named after the Secret so servers sharing it share it."""
    return f"secret/{namespace}/{secret}"


def auth_policy(server: ObjectKey) -> str:
    """JWT provider or API-key policy name of one ModelServer: every route that can reach
    the server carries the policy under this one name, so it is defined once per
    listener."""
    return f"modelserver/{server.namespace}/{server.name}"


# --- Envoy resource names, from IR names ----------------------------------------------

# Defined by every bootstrap (envoy/ templates, and `engine.static_bootstrap`): Envoy's
# own admin listener, so `/metrics` can be answered from `/stats/prometheus`.
ADMIN_CLUSTER = "modelroute_admin"

# Dynamic-metadata namespace where `model_match` puts the OpenAI body's `model`.
MODEL_METADATA_NAMESPACE = "modelroute"
MODEL_METADATA_KEY = "model"


def cluster(backend: str) -> str:
    return backend


def failover_cluster(primary: str, fallback: str) -> str:
    """The cluster that sends to `primary`, or to `fallback` when `primary` has no
    healthy endpoint (priority levels: `translate/cluster.py`)."""
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
