"""Who is on the other end of an xDS stream, and which node group it may have (SPEC 3.8).

Configuration carries secrets (API keys in route tables, TLS keys over SDS), so outside
loopback the server requires a client certificate signed by its CA (`xds_server.tls`)
and trusts the certificate, not the node metadata: the identity is the certificate's URI
SAN, a SPIFFE-style ID of the trust domain `matrixinfer.ai`:

- `spiffe://matrixinfer.ai/gateway`: a gateway; it gets the group its node metadata asks
  for (role gateway, or a sidecar scope);
- `spiffe://matrixinfer.ai/ns/<namespace>/sidecar`: a sidecar of one namespace; whatever
  its metadata says, it gets the sidecar group scoped to that namespace (and to servers
  of that namespace only, if it names servers), so it never receives another namespace's
  routes or Secrets;
- anything else is refused (PERMISSION_DENIED).

Without TLS (loopback, embedded mode) there is no identity: node metadata decides, and
every local process is trusted.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from envoy.config.core.v3 import base_pb2
from google.protobuf import json_format

TRUST_DOMAIN = "matrixinfer.ai"
GATEWAY_IDENTITY = f"spiffe://{TRUST_DOMAIN}/gateway"
_SIDECAR = re.compile(rf"^spiffe://{re.escape(TRUST_DOMAIN)}/ns/([a-z0-9]([-a-z0-9]*[a-z0-9])?)/sidecar$")


def sidecar_identity(namespace: str) -> str:
    return f"spiffe://{TRUST_DOMAIN}/ns/{namespace}/sidecar"


class Unauthorized(Exception):
    """The peer may not have configuration (or not the node group it asks for)."""


@dataclass(frozen=True, slots=True)
class Peer:
    address: str
    identity: str | None = None  # the client certificate's SPIFFE ID; None without mTLS


def peer_of(context: Any) -> Peer:
    """The peer of a grpc.aio servicer context: its address and, over mTLS, the SPIFFE ID
    of its verified client certificate."""
    address = context.peer() if context is not None else ""
    auth = context.auth_context() if context is not None else {}
    sans = [v.decode(errors="replace") for v in auth.get("x509_subject_alternative_name", [])]
    spiffe = sorted(s for s in sans if s.startswith("spiffe://"))
    if auth.get("transport_security_type") == [b"ssl"] and auth.get("x509_pem_cert"):
        return Peer(address, spiffe[0] if spiffe else "")  # "" : a certificate without our kind of ID
    return Peer(address, None)


def _metadata(node: base_pb2.Node) -> dict[str, Any]:
    return json_format.MessageToDict(node.metadata) if node.HasField("metadata") else {}


def node_group(node: base_pb2.Node) -> str:
    """Group by the `role` and `scope` node metadata the bootstrap templates set (SPEC 3.6):
    `gateway`, or `sidecar` plus its scope in canonical JSON, so every sidecar of one
    scope shares one snapshot whatever its `node.cluster` says."""
    fields = _metadata(node)
    return group_name(str(fields.get("role") or "gateway"), fields.get("scope"))


def group_name(role: str, scope: Any) -> str:
    return role if scope in (None, {}, []) else f"{role}:{json.dumps(scope, sort_keys=True, separators=(',', ':'))}"


def authorized_group(node: base_pb2.Node, peer: Peer) -> str:
    """The node group `peer` gets for `node`; raises Unauthorized."""
    if peer.identity is None:
        return node_group(node)
    if peer.identity == GATEWAY_IDENTITY:
        return node_group(node)
    match = _SIDECAR.match(peer.identity)
    if match is None:
        raise Unauthorized(f"client identity {peer.identity or '(none in the certificate)'} may not receive "
                           "configuration")
    namespace = match.group(1)
    scope = _metadata(node).get("scope")
    servers = scope.get("servers") if isinstance(scope, dict) else None
    forced: dict[str, Any] = {"namespaces": [namespace]}
    if isinstance(servers, (list, str)):
        items = servers.split(",") if isinstance(servers, str) else servers
        # Servers named "ns/name" must be in its namespace; bare names are in it anyway.
        kept = [str(s).strip() for s in items
                if str(s).strip() and ("/" not in str(s) or str(s).strip().startswith(f"{namespace}/"))]
        forced["servers"] = kept
    return group_name("sidecar", forced)
