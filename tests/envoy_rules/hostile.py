"""Hypothesis strategies for manifests full of what Envoy might refuse: regexes (possessive
and atomic groups, look-arounds, wide escapes, programs over Envoy's size limit), paths
and globs (with segments Envoy's normalization rewrites, and the built-in paths), query
parameter names and values, header values, JWKS URIs, PEM certificates and keys, JWKS
documents, durations, retries and limits. Shared by tests/envoy_rules (a few hundred examples in CI) and
bench/fuzz_validate.py (many more).

`manifest_set(index)` draws one self-contained set of objects in namespace `ns<index>`
on its own port, so any number of sets can be compiled together without touching each
other: one `envoy --mode validate` checks a whole batch.
"""

from __future__ import annotations

import base64
import datetime
import functools
import ipaddress
import json
import warnings
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID
from hypothesis import strategies as st

NETWORKING = "networking.matrixinfer.ai/v1alpha1"
WORKLOAD = "workload.matrixinfer.ai/v1alpha1"

# --- regexes ------------------------------------------------------------------------------

_ATOMS = ["a", "b", "é", "日", ".", "\\d", "\\w", "\\s", "\\pL", "\\pN", "\\p{Greek}", "[a-z]", "[^/]", "[[:alpha:]]",
          "\\C", "(?i:k)", "(?s:.)", "\\.", "[é-ü]", "\\x{263a}", "\\x{e9}", "[\\pL\\pN]", "\\b", "^", "$", "\\Q.*\\E",
          "(?=a)", "(?!a)", "(?<=a)", "\\1", "(?P<n>a)", "(?>a)", "(?P=n)", "[", ")", "\\", "\\z", "\\Z", "\\G"]
_QUANTIFIERS = ["", "", "", "*", "+", "?", "*?", "++", "*+", "{2}", "{1,3}", "{0,}", "{1000}", "{1001}", "{3,1}",
                "{1,30}", "{99}"]


_SAFE_ATOMS = ["a", "é", "日", ".", "\\d", "\\w", "\\pL", "[a-z]", "[^/]", "[[:alpha:]]", "(?i:k)", "\\.", "\\x{e9}"]


def regexes() -> st.SearchStrategy[str]:
    """Two in three plausible (and mostly accepted) patterns, one in three hostile ones."""
    plausible = st.lists(st.tuples(st.sampled_from(_SAFE_ATOMS), st.sampled_from(["", "", "*", "+", "?", "{1,3}"])),
                         min_size=1, max_size=6).map(lambda parts: "".join(a + q for a, q in parts))
    return st.one_of(plausible, plausible, hostile_regexes())


@st.composite
def hostile_regexes(draw: st.DrawFn, depth: int = 0) -> str:
    parts = []
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.integers(0, 9))
        if kind == 0 and depth < 2:
            atom = "(" + draw(hostile_regexes(depth + 1)) + ")"
        elif kind == 1 and depth < 2:
            atom = "(?:" + draw(hostile_regexes(depth + 1)) + "|" + draw(hostile_regexes(depth + 1)) + ")"
        elif kind == 2:
            atom = draw(st.text(min_size=1, max_size=40))
        else:
            atom = draw(st.sampled_from(_ATOMS))
        parts.append(atom + draw(st.sampled_from(_QUANTIFIERS)))
    return "".join(parts)


# Segments Envoy's path normalization rewrites (dot segments, escaped unreserved
# characters, characters it escapes) or keeps ("%2F", "%2f"), and the built-in paths.
_PATH_SEGMENTS = [".", "..", "%2e", "%2E%2E", "%41", "%7e", "%2F", "%2f", "%C3%A9", "a\\b", 'q"t', "{x}", "%00", "%zz"]
_BUILTIN_PATHS = ["/health", "/ready", "/metrics", "/metrics/", "/health/*", "/ready/*"]


def path_globs() -> st.SearchStrategy[str]:
    segment = st.one_of(st.text(st.characters(codec="ascii", exclude_characters="/?# \t\r\n"), min_size=1, max_size=60),
                        st.sampled_from(_PATH_SEGMENTS))
    drawn = st.builds(lambda segs, star: "/" + "/".join(segs) + star,
                      st.lists(segment, min_size=1, max_size=4), st.sampled_from(["", "/*", "*", "-*"]))
    return st.one_of(drawn, drawn, drawn, st.sampled_from(_BUILTIN_PATHS))


# What a query may carry as written (envoy_rules/query.py): printable ASCII but space,
# '"', "#", "<", ">" and the "&" separator.
_QUERY_TEXT = st.text(st.characters(codec="ascii", min_codepoint=0x21, max_codepoint=0x7E, exclude_characters='"#<>&'),
                      max_size=20)


def query_names() -> st.SearchStrategy[str]:
    """Plausible names, and names Envoy's undecoded query could never carry as written."""
    return st.sampled_from(["q", "v", "debug", "user%20tier", "a+b", "q", "v", "debug", "user tier", "a=b", "café"])


def _query_value() -> st.SearchStrategy[Any]:
    """Values in every match form, written as clients send them, and plain values no
    request could carry as written (a space, "&", "#", non-ASCII)."""
    return st.one_of(_QUERY_TEXT, st.fixed_dictionaries({"regex": regexes()}),
                     st.fixed_dictionaries({"prefix": _QUERY_TEXT.filter(bool)}),
                     st.fixed_dictionaries({"exact": _QUERY_TEXT}), st.just({"present": True}),
                     st.sampled_from(["v2 beta", "a&b", "#x", "café", {"prefix": "a b"}]))


# --- URIs --------------------------------------------------------------------------------

_URIS = ["https://keys.example/jwks.json", "http://127.0.0.1:8443/jwks", "https://[::1]:9443/jwks",
         "https://keys.example:0/x", "https://keys.example:99999/x", "https://keys.example:-1/x", "https:///jwks",
         "ftp://keys.example/x", "https://user:pw@keys.example/x", "https://keys example/x", "https://ключи.example/x",
         "https://keys.example/a b", "https://keys.example/\x00", "https://" + "a" * 70 + ".example/x",
         "https://" + ".".join(["a" * 60] * 5) + "/x", "https://keys.example:65535", "http://[::1/x", "https://-bad-.example/",
         "https://keys.example/" + "p" * 3000, "", "https://", "//keys.example/x",
         "https://keys.example:/x", "https://keys.example#x", "https://[::1]:/x", "https://[::1]x/x",
         "https://[v1.x]/x", "https://[fe80::1%25eth0]/x", "https://[fe80::1]/x", "https://keys.example?x=1"]


def jwks_uris() -> st.SearchStrategy[str]:
    built = st.builds(lambda scheme, host, port, path: f"{scheme}://{host}{port}{path}",
                      st.sampled_from(["http", "https", "HTTPS", "ws"]),
                      st.one_of(st.sampled_from(["keys.example", "127.0.0.1", "[::1]", "k.example.", "[fe80::1%25x]",
                                                 "[v1.x]", "[::1]x"]),
                                st.text(max_size=20)),
                      st.sampled_from(["", ":443", ":0", ":70000", ":abc", ":8080", ":"]),
                      st.one_of(st.sampled_from(["/jwks", "#f", "?q=1", "/jwks#f"]), st.text(max_size=20)))
    return _mostly(st.sampled_from(["https://keys.example/jwks.json", "http://127.0.0.1:8443/jwks"]),
                   st.one_of(st.sampled_from(_URIS), built))


# --- TLS material ---------------------------------------------------------------------------


@functools.cache
def _key_pool() -> dict[str, Any]:
    """Private keys of the kinds BoringSSL takes and refuses, made once per process."""
    return {"rsa1024": rsa.generate_private_key(65537, 1024), "rsa2048": rsa.generate_private_key(65537, 2048),
            "p256": ec.generate_private_key(ec.SECP256R1()), "p384": ec.generate_private_key(ec.SECP384R1()),
            "secp256k1": ec.generate_private_key(ec.SECP256K1()), "ed25519": ed25519.Ed25519PrivateKey.generate()}


Subject = tuple[tuple[x509.ObjectIdentifier, str], ...]
NAMED: Subject = ((NameOID.COMMON_NAME, "models.example"),)


@functools.cache
def _certificate(kind: str, subject: Subject = NAMED, sans: tuple[x509.GeneralName, ...] = ()) -> tuple[bytes, bytes]:
    """A self-signed certificate of a `kind` key, with that key (PEM): the subject's
    attributes as given (an empty CN too), and a SAN extension when `sans` is not empty."""
    key = _key_pool()[kind]
    with warnings.catch_warnings():  # cryptography warns about the empty CN asked for
        warnings.simplefilter("ignore", UserWarning)
        name = x509.Name([x509.NameAttribute(oid, value, _validate=False) for oid, value in subject])
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
               .serial_number(7).not_valid_before(now - datetime.timedelta(days=1))
               .not_valid_after(now + datetime.timedelta(days=30)))
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    cert = builder.sign(key, None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256())
    pem_key = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM), pem_key


# (subject, SANs) a listener certificate may carry: Envoy needs a first CN that is not
# empty, else a DNS, IP or URI SAN (routing_engine/envoy_rules/tls.py).
_NAMES: tuple[tuple[Subject, tuple[x509.GeneralName, ...]], ...] = (
    ((), ()), (((NameOID.ORGANIZATION_NAME, "org"),), ()), (((NameOID.COMMON_NAME, ""),), ()),
    ((), (x509.DNSName("models.example"),)), ((), (x509.IPAddress(ipaddress.ip_address("10.0.0.1")),)),
    ((), (x509.RFC822Name("ops@models.example"),)), (((NameOID.COMMON_NAME, ""),), (x509.DNSName("models.example"),)),
)


@st.composite
def tls_material(draw: st.DrawFn) -> tuple[bytes, bytes]:
    kinds = sorted(_key_pool())
    cert, key = _certificate(draw(st.sampled_from(kinds)))
    mutation = draw(_mostly(st.sampled_from(["none", "two-certs", "pkcs1", "garbage"]),
                            st.sampled_from(["other-key", "truncate", "flip", "swap", "empty-key", "encrypted", "names"])))
    if mutation == "names":
        cert, key = _certificate(draw(st.sampled_from(kinds)), *draw(st.sampled_from(_NAMES)))
    elif mutation == "other-key":
        key = _certificate(draw(st.sampled_from(kinds)))[1]
    elif mutation == "truncate":
        cert = cert[: draw(st.integers(10, len(cert) - 1))]
    elif mutation == "garbage":
        cert = cert + draw(st.binary(max_size=40))
    elif mutation == "flip":
        at = draw(st.integers(40, len(cert) - 40))
        cert = cert[:at] + (b"A" if cert[at:at + 1] != b"A" else b"B") + cert[at + 1:]
    elif mutation == "swap":
        cert, key = key, cert
    elif mutation == "empty-key":
        key = b""
    elif mutation == "encrypted":
        raw = _key_pool()["p256"]
        key = raw.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.BestAvailableEncryption(b"secret"))
    elif mutation == "two-certs":
        cert = cert + _certificate(draw(st.sampled_from(kinds)))[0]
    elif mutation == "pkcs1":
        raw = _key_pool()["rsa2048"]
        cert = _certificate("rsa2048")[0]
        key = raw.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption())
    return cert, key


# --- JWKS ----------------------------------------------------------------------------------


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _int(value: int) -> str:
    return _b64(value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big"))


@functools.cache
def _good_keys() -> dict[str, dict[str, Any]]:
    pool = _key_pool()
    rsa_numbers = pool["rsa2048"].public_key().public_numbers()
    p256 = pool["p256"].public_key().public_numbers()
    ed = pool["ed25519"].public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return {"RSA": {"kty": "RSA", "alg": "RS256", "kid": "r", "n": _int(rsa_numbers.n), "e": _int(rsa_numbers.e)},
            "EC": {"kty": "EC", "crv": "P-256", "kid": "e", "x": _b64(p256.x.to_bytes(32, "big")),
                   "y": _b64(p256.y.to_bytes(32, "big"))},
            "oct": {"kty": "oct", "k": "c2VjcmV0LWtleQ"},
            "OKP": {"kty": "OKP", "crv": "Ed25519", "x": _b64(ed)}}


_FIELD_VALUES: list[Any] = ["", "!!", "AQAB", "AQ", "AA", "=", "c2VjcmV0==", "+/+/", 5, None, [], {}, "P-256", "P-521",
                            "secp256k1", "Ed25519", "X25519", "RS256", "ES384", "HS256", "EdDSA", "PS512", "junk",
                            _int(3), _int(2 ** 40 + 1), _int(2 ** 255 + 1), _int(2 ** 1023 + 1), _int(2 ** 16400 + 1)]


@st.composite
def jwk(draw: st.DrawFn) -> Any:
    key = dict(draw(st.sampled_from(sorted(_good_keys().items())))[1])
    for _ in range(draw(_mostly(st.just(0), st.integers(1, 2)))):
        field = draw(st.sampled_from(["kty", "alg", "crv", "n", "e", "x", "y", "k", "use", "kid"]))
        if draw(st.booleans()):
            key.pop(field, None)
        else:
            key[field] = draw(st.sampled_from(_FIELD_VALUES))
    return draw(st.one_of(st.just(key), st.just(key), st.just(key), st.sampled_from(["abc", 5, None, []])))


@st.composite
def jwks_documents(draw: st.DrawFn) -> str:
    keys = draw(st.lists(jwk(), max_size=3))
    shape = draw(_mostly(st.just("ok"), st.sampled_from(["keys-object", "not-json", "array", "nan", "duplicate"])))
    if shape == "keys-object":
        return json.dumps({"keys": {}})
    if shape == "not-json":
        return draw(st.text(max_size=30))
    if shape == "array":
        return json.dumps(keys)
    if shape == "nan":
        return '{"keys": [], "x": NaN}'
    text = json.dumps({"keys": keys})
    return text.replace('{"keys"', '{"keys": [], "keys"', 1) if shape == "duplicate" else text


# --- manifests ---------------------------------------------------------------------------------


def _match_value() -> st.SearchStrategy[Any]:
    return st.one_of(st.text(max_size=20), st.fixed_dictionaries({"regex": regexes()}),
                     st.fixed_dictionaries({"regex": regexes()}),
                     st.fixed_dictionaries({"prefix": st.text(max_size=10)}),
                     st.fixed_dictionaries({"exact": st.text(max_size=10)}), st.just({"present": True}))


def _mostly(valid: st.SearchStrategy[Any], hostile: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Three times in four a valid value: a set with several hostile fields is refused for
    the first of them, and the others would never reach Envoy."""
    return st.one_of(valid, valid, valid, hostile)


def _server_paths(name: str) -> st.SearchStrategy[str]:
    """One in eight a path Envoy's normalization rewrites, a built-in one, or an escaped
    slash (kept by Envoy, so accepted)."""
    hostile = [f"/v1/models/{name}/..", f"/v1/%6dodels/{name}", f"/v1/models/{name}%2F", "/health"]
    return st.sampled_from([f"/v1/models/{name}"] * 28 + hostile)


def _durations() -> st.SearchStrategy[str]:
    return _mostly(st.sampled_from(["30s", "1ms", "1.5s", "90m", "2h", "59m59.999s", "87600h"]),
                   st.sampled_from(["0s", "99999999999h", "1e3s", "5", "-1s", "100000000s", "2562047h"]))


def _adapter_names() -> st.SearchStrategy[str]:
    """Adapter (and model) names: plausible ones and any text (quotes, slashes, control
    characters, other scripts): they become Envoy string matchers, metadata and route names."""
    return st.one_of(st.sampled_from(["sql-lora", "chat/v2", "a.b", 'q"uote', "日本語", "x" * 300]),
                     st.text(min_size=1, max_size=40))


@st.composite
def manifest_set(draw: st.DrawFn, index: int) -> list[dict[str, Any]]:
    """One ModelServer (maybe with auth and TLS) and a ModelRoute with hostile matches, in
    namespace `ns<index>` on port 20000 + index, with the Secrets they name."""
    ns, port, name = f"ns{index}", 20000 + index, f"m{index}"
    adapters = list(dict.fromkeys(draw(st.lists(_adapter_names(), max_size=3))))  # LoRA adapters (issue 18)
    infer_spec: dict[str, Any] = {"modelRef": {"name": "llama"}, "replicas": 1}
    if adapters:
        infer_spec["adapters"] = [{"name": a} for a in adapters]
    docs: list[dict[str, Any]] = [
        {"apiVersion": WORKLOAD, "kind": "ModelInfer", "metadata": {"name": name, "namespace": ns}, "spec": infer_spec}]
    spec: dict[str, Any] = {"modelInferRef": {"name": name}, "service": {"port": port},
                            "routing": {"path": draw(_server_paths(name)), "timeout": draw(_durations()),
                                        "retries": draw(st.integers(0, 2 ** 31 - 1))}}
    balancing = draw(st.sampled_from([None, "leastRequest", "loadAware", "prefixAffinity"]))
    if balancing is not None:
        spec["loadBalancing"] = balancing
    if draw(st.booleans()):
        spec["rateLimit"] = {"enabled": True, "requestsPerSecond": draw(st.integers(1, 2 ** 31 - 1)),
                             "burstSize": draw(st.integers(1, 2 ** 31 - 1))}
    auth = draw(st.sampled_from(["none", "jwt-uri", "jwt-secret", "apikey"]))
    if auth == "jwt-uri":
        spec["authentication"] = {"enabled": True, "type": "jwt",
                                  "config": {"issuer": "https://issuer.example", "jwksUri": draw(jwks_uris())}}
    elif auth == "jwt-secret":
        spec["authentication"] = {"enabled": True, "type": "jwt",
                                  "config": {"issuer": "https://issuer.example", "jwksSecretName": "jwks"}}
        docs.append({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "jwks", "namespace": ns},
                     "stringData": {"jwks": draw(jwks_documents())}})
    elif auth == "apikey":
        spec["authentication"] = {"enabled": True, "type": "apiKey", "config": {"secretName": "keys"}}
        docs.append({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "keys", "namespace": ns},
                     "stringData": {"a": draw(st.text(min_size=1, max_size=30))}})
    if draw(st.booleans()):
        cert, key = draw(tls_material())
        spec["tls"] = {"enabled": True, "secretName": "tls"}
        docs.append({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
                     "metadata": {"name": "tls", "namespace": ns},
                     "data": {"tls.crt": base64.b64encode(cert).decode(), "tls.key": base64.b64encode(key).decode()}})
    docs.append({"apiVersion": NETWORKING, "kind": "ModelServer", "metadata": {"name": name, "namespace": ns},
                 "spec": spec})
    entries = []
    for _ in range(draw(st.integers(1, 3))):
        match: dict[str, Any] = {}
        if draw(st.booleans()):
            match["headers"] = {draw(st.sampled_from(["x-a", "x-b", "x-user-tier"])): draw(_match_value())}
        if draw(st.booleans()):
            match["queryParams"] = {draw(query_names()): draw(_query_value())}
        if draw(st.booleans()):
            match["path"] = draw(_mostly(st.sampled_from([f"/v1/models/{name}/*", f"/v1/models/{name}/a*b",
                                                           f"/v1/models/{name}/chat"]), path_globs()))
        if draw(st.integers(0, 3)) == 0:
            match["model"] = draw(st.sampled_from(adapters)) if adapters and draw(st.booleans()) \
                else draw(_adapter_names())
        entries.append({"match": match, "destination": {"modelServerRef": {"name": name}},
                        "weight": draw(st.integers(0, 100)), "timeout": draw(st.sampled_from(["30s", "2m", "500ms"]))})
    docs.append({"apiVersion": NETWORKING, "kind": "ModelRoute", "metadata": {"name": name, "namespace": ns},
                 "spec": {"path": f"/v1/models/{name}", "routes": entries}})
    return docs
