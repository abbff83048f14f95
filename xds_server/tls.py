"""mTLS for the xDS port: the server presents its certificate and requires Envoy's
client certificate signed by the given CA (so only our Envoys get configuration, which
may hold secrets)."""

from __future__ import annotations

from pathlib import Path

import grpc


def server_credentials(cert: Path, key: Path, client_ca: Path, *,
                       require_client_auth: bool = True) -> grpc.ServerCredentials:
    return grpc.ssl_server_credentials([(key.read_bytes(), cert.read_bytes())],
                                       root_certificates=client_ca.read_bytes(),
                                       require_client_auth=require_client_auth)
