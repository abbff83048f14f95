"""A server TLS context whose certificate (and the CA clients must present a certificate
of) can be replaced while serving: new handshakes get the new material, open connections
keep theirs. The admission webhook serves with one (server certificate only); the stats
listener with one that requires the gateways' client certificates (mTLS, `xds_certs`).
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import ssl
import tempfile
from collections.abc import Callable
from pathlib import Path

from controller.certs import pki
from controller.certs.pki import KeyPair
from xds_server.tls import TlsMaterial

log = logging.getLogger(__name__)


class ServingTls:
    def __init__(self, *, name: str = "webhook") -> None:
        self.name = name
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.minimum_version = ssl.TLSVersion.TLSv1_2
        self.current: KeyPair | None = None
        self.client_ca: bytes | None = None

    @property
    def ready(self) -> bool:
        """A certificate is loaded (before that, every handshake fails)."""
        return self.current is not None

    def load(self, pair: KeyPair, *, client_ca: bytes | None = None) -> bool:
        """Serve `pair` from the next handshake on, and with `client_ca` require a client
        certificate signed by it; False when nothing changed."""
        if pair == self.current and client_ca == self.client_ca:
            return False
        # The ssl module loads key material from files only: a private directory, removed at once.
        with tempfile.TemporaryDirectory(prefix=f"modelroute-{self.name}-") as directory:
            cert, key = Path(directory, "tls.crt"), Path(directory, "tls.key")
            cert.write_bytes(pair.cert_pem)
            key.touch(mode=0o600)
            key.write_bytes(pair.key_pem)
            self.context.load_cert_chain(cert, key)
        if client_ca is not None:
            self.context.verify_mode = ssl.CERT_REQUIRED
            self.context.load_verify_locations(cadata=client_ca.decode())
        self.current, self.client_ca = pair, client_ca
        log.info("%s serving certificate loaded", self.name, extra={"certificate": repr(pair)})
        return True


def untrusted_material() -> TlsMaterial:
    """A certificate of a CA nobody trusts: a gRPC server started with it refuses every
    handshake until the real material arrives (`xds_server.tls.ServerTls.update`)."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca = pki.new_ca("modelroute-not-yet", now=now)
    serving = pki.new_serving(ca, ["modelroute-not-yet"], now=now)
    return TlsMaterial(serving.cert_pem, serving.key_pem, ca.cert_pem)


async def watch_tls_files(directory: Path, use: Callable[[TlsMaterial], None], *, every: float = 10.0) -> None:
    """`tls.crt`, `tls.key`, `ca.crt` from `directory` now and whenever they change (a
    mounted Secret is swapped atomically by the kubelet; a half-written set is skipped)."""
    last: TlsMaterial | None = None
    while True:
        try:
            material = TlsMaterial(*(Path(directory, n).read_bytes() for n in ("tls.crt", "tls.key", "ca.crt")))
            if material != last and pki.matches(KeyPair(material.cert_pem, material.key_pem)):
                use(material)
                last = material
        except (OSError, pki.PkiError) as err:
            log.warning("TLS files not loaded", extra={"path": str(directory), "error": str(err)})
        await asyncio.sleep(every)
