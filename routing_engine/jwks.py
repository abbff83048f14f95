"""What Envoy accepts as a JWT provider. Resolve checks it, so that a server whose keys
Envoy would refuse fails closed before it claims any path; translate checks it again
before emitting a provider, because Envoy refuses a bad one with the whole listener."""

from __future__ import annotations

from routing_engine import ir
from routing_engine.envoy_rules import jwks_problem, parse_jwks_uri


def provider_problem(provider: ir.JwtProvider) -> str | None:
    """Why Envoy would refuse this provider (and with it the whole listener), if it would."""
    if provider.jwks_inline is not None:
        problem = jwks_problem(provider.jwks_inline)
        return None if problem is None else f"inline JWKS {problem}"
    parsed = parse_jwks_uri(provider.jwks_uri or "")
    return f"jwks_uri {parsed}" if isinstance(parsed, str) else None
