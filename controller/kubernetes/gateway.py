"""ModelServer → the Service in front of the Envoy gateway pods, and the
`status.serviceEndpoint` users call.

A Service selects pods only in its own namespace, and the gateway pods run in the
control plane's namespace, so (like Envoy Gateway) the Service is created there, named
after the ModelServer's namespace and name (with a hash suffix when that is longer than a
DNS label allows). Owner references cannot cross namespaces, so the Service carries the
ModelServer's namespace/name as labels and `sweep` deletes those whose ModelServer is
gone.

The Service has the ModelServer's `type`, `port` and annotations; it targets the port
Envoy listens on for that port (`Target.port`: ports below 1024 are shifted by the
gateway's unprivileged-port offset). The endpoint is
`http(s)://HOST:PORT/PATH` where HOST is the LoadBalancer's ingress when assigned, else the
Service's cluster DNS name.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from controller.kubernetes.errors import NotFound
from controller.kubernetes.interface import KubeApi, Obj
from controller.kubernetes.reconciler import Outcome, apply
from controller.kubernetes.resources import SERVICE
from routing_engine.api.resources import ModelServer
from routing_engine.world import Target

GATEWAY_SELECTOR = {"app.kubernetes.io/name": "modelroute-gateway"}
OWNER_NAMESPACE = "networking.matrixinfer.ai/modelserver-namespace"
OWNER_NAME = "networking.matrixinfer.ai/modelserver-name"
MANAGED_BY = {"app.kubernetes.io/managed-by": "modelroute"}


def service_name(server: ModelServer) -> str:
    base = f"ms-{server.metadata.namespace}-{server.metadata.name}"
    if len(base) <= 63:
        return base
    digest = hashlib.sha256(base.encode()).hexdigest()[:8]
    return f"{base[:54].rstrip('-.')}-{digest}"


def gateway_service(server: ModelServer, *, namespace: str, target: Target) -> Obj:
    svc = server.spec.service
    labels = {**MANAGED_BY, OWNER_NAMESPACE: server.metadata.namespace, OWNER_NAME: server.metadata.name}
    # Label values are at most 63 characters; names already are.
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": service_name(server), "namespace": namespace, "labels": labels,
                         "annotations": dict(svc.annotations)},
            "spec": {"type": svc.type, "selector": dict(GATEWAY_SELECTOR),
                     "ports": [{"name": "http", "port": svc.port, "targetPort": target.port(svc.port),
                                "protocol": "TCP"}]}}


def service_endpoint(server: ModelServer, service: Obj | None) -> str | None:
    """The URL a client uses, or None while the Service does not exist yet."""
    if service is None:
        return None
    scheme = "https" if server.spec.tls is not None and server.spec.tls.enabled else "http"
    host = f"{service['metadata']['name']}.{service['metadata']['namespace']}.svc.cluster.local"
    if server.spec.service.type == "LoadBalancer":
        ingress = ((service.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
        if ingress and (ingress[0].get("hostname") or ingress[0].get("ip")):
            host = ingress[0].get("hostname") or ingress[0]["ip"]
    return f"{scheme}://{host}:{server.spec.service.port}{server.spec.routing.path}"


async def reconcile(api: KubeApi, server: ModelServer, *, namespace: str, target: Target
                    ) -> tuple[str | None, Outcome]:
    """Apply the Service; return (serviceEndpoint, outcome)."""
    svc, outcome = await apply(api, SERVICE, gateway_service(server, namespace=namespace, target=target))
    return service_endpoint(server, svc), outcome


async def sweep(api: KubeApi, *, namespace: str, servers: Iterable[ModelServer]) -> list[str]:
    """Delete gateway Services whose ModelServer no longer exists; their names."""
    wanted = {(s.metadata.namespace, s.metadata.name) for s in servers}
    listed = await api.list(SERVICE, namespace=namespace, label_selector=OWNER_NAME)
    deleted = []
    for svc in listed.items:
        labels = svc["metadata"].get("labels") or {}
        if (labels.get(OWNER_NAMESPACE), labels.get(OWNER_NAME)) not in wanted:
            try:
                await api.delete(SERVICE, namespace, svc["metadata"]["name"])
                deleted.append(svc["metadata"]["name"])
            except NotFound:
                pass
    return deleted
