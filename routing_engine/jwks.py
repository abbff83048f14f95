"""What Envoy accepts as a JWT provider. Resolve checks it, so that a server whose keys
Envoy would refuse fails closed before it claims any path; translate checks it again
before emitting a provider, because Envoy refuses a bad one with the whole listener."""

from __future__ import annotations

import json
from urllib.parse import urlsplit

from routing_engine import ir


def provider_problem(provider: ir.JwtProvider) -> str | None:
    """Why Envoy would refuse this provider (and with it the whole listener), if it would:
    inline JWKS must be a JSON object with a non-empty `keys` list."""
    if provider.jwks_inline is None:
        return None if provider.jwks_uri and urlsplit(provider.jwks_uri).hostname else "jwks_uri has no host"
    try:
        keys = json.loads(provider.jwks_inline).get("keys")
    except (ValueError, AttributeError):
        return "inline JWKS is not a JSON object"
    if not isinstance(keys, list) or not keys:
        return "inline JWKS has no keys"
    if not any(_usable_key(key) for key in keys):
        return "inline JWKS has no usable public key (each needs kty and its parameters, e.g. RSA n and e)"
    return None


# Parameters Envoy needs per key type before it will load a JWKS (it refuses a key set
# without at least one usable key, and with it the whole listener).
_KEY_PARAMETERS = {"RSA": ("n", "e"), "EC": ("crv", "x", "y"), "oct": ("k",), "OKP": ("crv", "x")}


def _usable_key(key: object) -> bool:
    if not isinstance(key, dict):
        return False
    needed = _KEY_PARAMETERS.get(str(key.get("kty")))
    return needed is not None and all(isinstance(key.get(p), str) and key.get(p) for p in needed)
