"""What Envoy 1.40 accepts, checked before Envoy ever sees it (SPEC 3.8), and what its
matchers can ever match.

`validate`, the admission webhook, resolve and translate all ask these functions, so
whatever passes them Envoy loads: regexes as Envoy's RE2 compiles them (with its program
size limit), URIs as our JWKS clusters need them, PEM certificates and keys as BoringSSL
loads them, JWKS documents as jwt_authn's key loader reads them. And a route that could
never match is refused with the form to write: paths as Envoy normalizes requests'
paths, query parameters as it compares them (undecoded). Each rule here was measured
against the real binary (`envoy --mode validate`, or requests sent to it); tests/envoy_rules
check the pairs with hypothesis-generated hostile inputs.

Every function returns a one-line reason (no trailing period, safe to log: never the
secret itself) or None when Envoy accepts the input. Nothing here raises on bad input.
Pure: no I/O; imports nothing of the project.
"""

from routing_engine.envoy_rules.jwks import jwks_problem
from routing_engine.envoy_rules.path import normalized_path, path_problem
from routing_engine.envoy_rules.query import query_problem
from routing_engine.envoy_rules.regex import MAX_PROGRAM_SIZE, regex_problem
from routing_engine.envoy_rules.tls import certificate_problem
from routing_engine.envoy_rules.uri import JwksUri, parse_jwks_uri

__all__ = ["MAX_PROGRAM_SIZE", "JwksUri", "certificate_problem", "jwks_problem", "normalized_path", "parse_jwks_uri",
           "path_problem", "query_problem", "regex_problem"]
