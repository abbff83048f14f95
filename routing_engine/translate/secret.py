"""TLS certificates → SDS `Secret` resources.

Listeners reference certificates by name over SDS instead of inlining them, so rotating a
Secret changes one SDS resource: the listener stays identical and no connection drains.
"""

from __future__ import annotations

from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from routing_engine import ir


def tls_secret(certificate: ir.TlsCertificate) -> secret_pb2.Secret:
    secret = secret_pb2.Secret(name=certificate.name)
    secret.tls_certificate.certificate_chain.inline_bytes = certificate.cert_chain
    secret.tls_certificate.private_key.inline_bytes = certificate.private_key
    return secret
