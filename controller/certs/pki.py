"""The control plane's small PKI: self-signed CAs and the serving and client certificates
they sign, as PEM, plus the checks that decide when one is renewed. The admission webhook
uses it (`kubernetes.webhook_certs`), and so does the mTLS between Envoys and the control
plane (`kubernetes.xds_certs`: xDS, rate limits, stats), where a client certificate's
SPIFFE ID (URI SAN) is the client's identity (`xds_server.identity`).

Why a CA and not one self-signed serving certificate: the API server trusts what is in
each webhook configuration's `caBundle`. With a CA there, the serving certificate can be
renewed (every `SERVING_LIFETIME`) without touching the webhook configurations; only a CA
rotation (every `CA_LIFETIME`) changes the bundle, and then the old and the new CA are
both trusted until the old one expires (see `webhook_certs` for the order of steps).

Keys are ECDSA P-256 (fast to make, accepted by every Kubernetes version). A certificate
is due for renewal when less than a third of its lifetime is left (cert-manager's
default). All times come from the caller's clock, so tests pin them.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_LIFETIME = datetime.timedelta(days=3650)
SERVING_LIFETIME = datetime.timedelta(days=90)
_BACKDATE = datetime.timedelta(minutes=5)  # tolerate clocks a little behind ours
_PEM_END = b"-----END CERTIFICATE-----"


class PkiError(ValueError):
    """PEM material that cannot be used (unparseable, or a key that does not match)."""


@dataclass(frozen=True, slots=True)
class KeyPair:
    cert_pem: bytes
    key_pem: bytes

    def __repr__(self) -> str:
        return f"KeyPair(subject={_subject(self.cert_pem)!r}, key=[redacted])"


def _subject(cert_pem: bytes) -> str:
    try:
        return load(cert_pem).subject.rfc4514_string()
    except PkiError:
        return "<unreadable>"


def load(cert_pem: bytes) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(cert_pem)
    except ValueError as err:
        raise PkiError(f"not a PEM certificate: {err}") from None


def _key(key_pem: bytes) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as err:
        raise PkiError(f"not a PEM private key: {err}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PkiError("the private key is not an EC key")
    return key


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def new_ca(common_name: str, *, now: datetime.datetime, lifetime: datetime.timedelta = CA_LIFETIME) -> KeyPair:
    key = ec.generate_private_key(ec.SECP256R1())
    # A serial in the subject keeps successive CAs of one name apart in logs and bundles.
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                      x509.NameAttribute(NameOID.SERIAL_NUMBER, f"{now:%Y%m%d%H%M%S}")])
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _BACKDATE).not_valid_after(now + lifetime)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(ski, critical=False)
            .sign(key, hashes.SHA256()))
    return KeyPair(cert.public_bytes(serialization.Encoding.PEM), _pem_key(key))


def new_serving(ca: KeyPair, dns_names: Sequence[str], *, now: datetime.datetime,
                lifetime: datetime.timedelta = SERVING_LIFETIME, ips: Sequence[str] = ()) -> KeyPair:
    """A server certificate for `dns_names` (the first is the common name) and `ips`,
    signed by `ca`, never valid beyond the CA."""
    sans = [*(x509.DNSName(n) for n in dns_names), *(x509.IPAddress(ipaddress.ip_address(i)) for i in ips)]
    return _leaf(ca, dns_names[0], ExtendedKeyUsageOID.SERVER_AUTH, sans, now=now, lifetime=lifetime)


def new_client(ca: KeyPair, spiffe_id: str, *, now: datetime.datetime,
               lifetime: datetime.timedelta = SERVING_LIFETIME) -> KeyPair:
    """A client certificate for the identity `spiffe_id` (URI SAN, also the common name),
    signed by `ca`, never valid beyond the CA."""
    return _leaf(ca, spiffe_id[-64:], ExtendedKeyUsageOID.CLIENT_AUTH, [x509.UniformResourceIdentifier(spiffe_id)],
                 now=now, lifetime=lifetime)


def _leaf(ca: KeyPair, common_name: str, usage: x509.ObjectIdentifier, sans: Sequence[x509.GeneralName], *,
          now: datetime.datetime, lifetime: datetime.timedelta) -> KeyPair:
    ca_cert, ca_key = load(ca.cert_pem), _key(ca.key_pem)
    key = ec.generate_private_key(ec.SECP256R1())
    not_after = min(now + lifetime, ca_cert.not_valid_after_utc)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _BACKDATE).not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    return KeyPair(cert.public_bytes(serialization.Encoding.PEM), _pem_key(key))


def uris(cert_pem: bytes) -> frozenset[str]:
    """The URI SANs of a certificate (a client's SPIFFE ID)."""
    try:
        san = load(cert_pem).extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return frozenset()
    return frozenset(san.value.get_values_for_type(x509.UniformResourceIdentifier))


def due(cert_pem: bytes, *, now: datetime.datetime, renew_fraction: float = 1 / 3) -> bool:
    """True when less than `renew_fraction` of the certificate's lifetime is left."""
    cert = load(cert_pem)
    total = cert.not_valid_after_utc - cert.not_valid_before_utc
    return cert.not_valid_after_utc - now < total * renew_fraction


def expired(cert_pem: bytes, *, now: datetime.datetime) -> bool:
    return load(cert_pem).not_valid_after_utc <= now


def signed_by(cert_pem: bytes, ca_cert_pem: bytes) -> bool:
    try:
        load(cert_pem).verify_directly_issued_by(load(ca_cert_pem))
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def names(cert_pem: bytes) -> frozenset[str]:
    try:
        san = load(cert_pem).extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return frozenset()
    return frozenset(san.value.get_values_for_type(x509.DNSName))


def matches(pair: KeyPair) -> bool:
    """The key is the certificate's."""
    public = load(pair.cert_pem).public_key()
    return public == _key(pair.key_pem).public_key()


def split_bundle(bundle: bytes) -> list[bytes]:
    """The PEM certificates of a bundle, in order."""
    found = []
    for chunk in bundle.split(_PEM_END):
        start = chunk.find(b"-----BEGIN CERTIFICATE-----")
        if start >= 0:
            found.append(chunk[start:] + _PEM_END + b"\n")
    return found


def join_bundle(certs: Iterable[bytes]) -> bytes:
    return b"".join(c if c.endswith(b"\n") else c + b"\n" for c in certs)
