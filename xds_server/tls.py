"""mTLS for the control plane's gRPC ports (xDS, and the rate-limit service beside it):
the server presents its certificate and requires a client certificate signed by the
given CA, so only our Envoys get configuration (which holds secrets); the certificate's
SPIFFE ID is then the client's identity (`xds_server.identity`).

`ServerTls` holds the current material and hands gRPC *dynamic* credentials: a new
certificate or CA (rotation) applies to the next handshake, without a restart and
without touching established streams.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import grpc


@dataclass(frozen=True, slots=True)
class TlsMaterial:
    cert_pem: bytes
    key_pem: bytes
    client_ca_pem: bytes  # the CA(s) client certificates must chain to

    def __repr__(self) -> str:
        return "TlsMaterial(key=[redacted])"


class ServerTls:
    """The server side of the mTLS: `credentials()` for each gRPC server; `update()`
    when the material rotates (from any thread)."""

    def __init__(self, material: TlsMaterial) -> None:
        self._lock = threading.Lock()
        self._material = material
        self._generation = 0

    @property
    def material(self) -> TlsMaterial:
        return self._material

    def update(self, material: TlsMaterial) -> None:
        with self._lock:
            if material != self._material:
                self._material = material
                self._generation += 1

    def credentials(self) -> grpc.ServerCredentials:
        seen = [self._generation]

        def fetch() -> grpc.ServerCertificateConfiguration | None:
            """Called by gRPC before each handshake: the new material once it changed."""
            with self._lock:
                if self._generation == seen[0]:
                    return None
                seen[0] = self._generation
                return _configuration(self._material)

        # gRPC keeps the current configuration when the fetcher returns None (its documented
        # "no change"); types-grpcio's stub does not allow None.
        return grpc.dynamic_ssl_server_credentials(_configuration(self._material), fetch,  # type: ignore[arg-type]
                                                   require_client_authentication=True)


def _configuration(material: TlsMaterial) -> grpc.ServerCertificateConfiguration:
    return grpc.ssl_server_certificate_configuration([(material.key_pem, material.cert_pem)],
                                                     root_certificates=material.client_ca_pem)


def server_credentials(cert: Path, key: Path, client_ca: Path) -> grpc.ServerCredentials:
    """Fixed mTLS credentials from files."""
    return ServerTls(TlsMaterial(cert.read_bytes(), key.read_bytes(), client_ca.read_bytes())).credentials()
