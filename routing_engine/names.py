"""Every resource name the engine emits, made in one place.

Names are the join keys between xDS resources (a route names a cluster, a listener names
an SDS secret), the keys the xDS server diffs on, and what operators grep for in Envoy's
admin output. Keeping them here means one change of scheme cannot leave a dangling
reference, and each name says which manifest object it came from.

All names are derived from object identity (kind, namespace, name) and never from
content, so editing a spec keeps its names and only changes the resources' versions.
"""

from __future__ import annotations

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
