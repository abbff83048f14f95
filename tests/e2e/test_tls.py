"""Issue #5, "Done when": HTTPS with a test CA (Secret `tls.crt`/`tls.key`, served to
Envoy by SDS, the client verifies against the CA), and certificate rotation by editing the
Secret's file: new connections get the new certificate while a client holding a
keep-alive connection keeps sending requests across the rotation without a failure."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import pytest_asyncio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.e2e.harness import Client, infer, running, secret, server, write_manifests
from tests.support import free_port

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


@dataclass
class CertificateAuthority:
    key: ec.EllipticCurvePrivateKey = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))
    cert: x509.Certificate = field(init=False)

    def __post_init__(self) -> None:
        now = datetime.datetime.now(datetime.timezone.utc)
        self.cert = (x509.CertificateBuilder().subject_name(_name("modelroute test CA")).issuer_name(_name("modelroute test CA"))
                     .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                     .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                     .sign(self.key, hashes.SHA256()))

    @property
    def pem(self) -> str:
        return self.cert.public_bytes(serialization.Encoding.PEM).decode()

    def issue(self, common_name: str) -> tuple[x509.Certificate, str, str]:
        """A server certificate for 127.0.0.1/localhost: (cert, cert PEM, key PEM)."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (x509.CertificateBuilder().subject_name(_name(common_name)).issuer_name(self.cert.subject)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
                .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                            x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .sign(self.key, hashes.SHA256()))
        key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()).decode()
        return cert, cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem


@dataclass
class Setup:
    port: int
    ca: CertificateAuthority
    context: ssl.SSLContext
    cert_file: Path
    first: x509.Certificate


def cert_secret(cert_pem: str, key_pem: str) -> dict:
    doc = secret("server-cert", **{"tls.crt": cert_pem, "tls.key": key_pem})
    return {**doc, "type": "kubernetes.io/tls"}


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def setup(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Setup]:
    directory = tmp_path_factory.mktemp("tls")
    port = free_port()
    ca = CertificateAuthority()
    first, cert_pem, key_pem = ca.issue("modelroute-test-1")
    write_manifests(directory / "all.yaml", [
        infer("secure"),
        server("secure", port=port, path="/v1/models/secure", tls={"enabled": True, "secretName": "server-cert"}),
    ])
    cert_file = directory / "cert.yaml"
    write_manifests(cert_file, [cert_secret(cert_pem, key_pem)])
    context = ssl.create_default_context(cadata=ca.pem)
    async with running(directory):
        yield Setup(port, ca, context, cert_file, first)


async def served_certificate(setup: Setup) -> x509.Certificate:
    """The certificate a new connection is given (the handshake verifies it against the CA)."""
    _reader, writer = await asyncio.wait_for(
        asyncio.open_connection("127.0.0.1", setup.port, ssl=setup.context, server_hostname="localhost"), 5)
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        return x509.load_der_x509_certificate(der)
    finally:
        writer.close()


class KeepAliveClient:
    """One HTTP/1.1 connection kept open; every request goes over it (no reconnects)."""

    def __init__(self, setup: Setup) -> None:
        self.setup = setup
        self.sent = 0
        self.failures: list[str] = []

    async def __aenter__(self) -> KeepAliveClient:
        self.reader, self.writer = await asyncio.open_connection(
            "127.0.0.1", self.setup.port, ssl=self.setup.context, server_hostname="localhost")
        der = self.writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        self.certificate = x509.load_der_x509_certificate(der)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.writer.close()

    async def request(self) -> None:
        self.sent += 1
        self.writer.write(b"POST /v1/models/secure/infer HTTP/1.1\r\nHost: localhost\r\n"
                          b"content-type: application/json\r\ncontent-length: 2\r\n\r\n{}")
        try:
            status = await asyncio.wait_for(self.reader.readline(), 5)
            headers: dict[str, str] = {}
            while (line := await asyncio.wait_for(self.reader.readline(), 5)) not in (b"\r\n", b""):
                name, _, value = line.decode().partition(":")
                headers[name.strip().lower()] = value.strip()
            await self.reader.readexactly(int(headers.get("content-length", "0")))
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError) as err:
            self.failures.append(f"request {self.sent}: {err!r}")
            raise
        if not status.startswith(b"HTTP/1.1 200") or headers.get("connection") == "close":
            self.failures.append(f"request {self.sent}: {status!r} connection={headers.get('connection')}")


async def test_https_with_a_certificate_from_the_test_ca(setup: Setup) -> None:
    async with Client(setup.port, scheme="https", ssl_context=setup.context) as client:
        reply = await client.post("/v1/models/secure/infer")
        assert (reply.status, reply.served_by) == (200, "secure")
        assert (await client.get("/health")).status == 200
    assert (await served_certificate(setup)).serial_number == setup.first.serial_number
    # a client that does not trust the test CA refuses the certificate
    with pytest.raises(ssl.SSLCertVerificationError):
        await asyncio.wait_for(asyncio.open_connection("127.0.0.1", setup.port, ssl=ssl.create_default_context(),
                                                       server_hostname="localhost"), 5)


async def test_certificate_rotation_by_editing_the_secret_keeps_running_clients(setup: Setup) -> None:
    second, cert_pem, key_pem = setup.ca.issue("modelroute-test-2")
    async with KeepAliveClient(setup) as running_client:
        assert running_client.certificate.serial_number == setup.first.serial_number
        stop = asyncio.Event()

        async def keep_sending() -> None:
            while not stop.is_set():
                await running_client.request()
                await asyncio.sleep(0.02)

        sender = asyncio.create_task(keep_sending())
        try:
            await asyncio.sleep(0.5)
            write_manifests(setup.cert_file, [cert_secret(cert_pem, key_pem)])
            deadline = asyncio.get_running_loop().time() + 10
            while (await served_certificate(setup)).serial_number != second.serial_number:
                assert asyncio.get_running_loop().time() < deadline, "the new certificate was not served within 10 s"
                assert not sender.done(), running_client.failures
                await asyncio.sleep(0.05)
            await asyncio.sleep(1.0)  # and the old connection keeps working after the rotation
        finally:
            stop.set()
            await asyncio.wait_for(sender, 10)
        assert running_client.failures == []
        assert running_client.sent > 30
        # still the connection opened before the rotation
        der = running_client.writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        assert x509.load_der_x509_certificate(der).serial_number == setup.first.serial_number
    async with Client(setup.port, scheme="https", ssl_context=setup.context) as client:
        assert (await client.post("/v1/models/secure/infer")).status == 200
