"""The JWKS URI of a JWT provider, as the engine turns it into an Envoy cluster.

Envoy itself only needs `http_uri.uri` non-empty; it is our JWKS cluster that needs a
host and a port (a LOGICAL_DNS socket address, SNI for https), so a URI must give both
in a form Envoy takes: http or https, a DNS name or IP literal, a port in 1..65535, and
no whitespace or control characters anywhere. Anything else is refused here, never
raised from a compile. Envoy's own URL parser (its jwt_authn provider: "has an invalid
URI", which rejects the whole listener) also refuses a `:` with no port after it, a
bracketed host that is not a plain IPv6 address (a zone id, an IPvFuture, anything after
the `]` but a port) and a fragment straight after the host; a JWKS URI has no use for a
fragment, so every fragment is refused.
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

_DNS_NAME = re.compile(r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$")
_FORBIDDEN = re.compile(r"[\x00-\x20\x7f]")
MAX_URI_LENGTH = 2048


@dataclass(frozen=True, slots=True)
class JwksUri:
    scheme: str
    host: str
    port: int

    @property
    def secure(self) -> bool:
        return self.scheme == "https"


def parse_jwks_uri(uri: str) -> JwksUri | str:
    """The parsed URI, or a one-line reason it cannot be used."""
    if not isinstance(uri, str) or not uri:
        return "is empty"
    if len(uri) > MAX_URI_LENGTH:
        return f"is longer than {MAX_URI_LENGTH} characters"
    if _FORBIDDEN.search(uri) or not uri.isascii():
        return "has spaces, control or non-ASCII characters (percent-encode them)"
    try:
        parts = urlsplit(uri)
        port = parts.port
    except ValueError as err:
        return f"is not a URL Envoy can fetch: {err}"
    if parts.scheme not in ("http", "https"):
        return "must be an http or https URL"
    host = parts.hostname or ""
    if parts.username is not None or parts.password is not None:
        return "must not carry user information (user:password@)"
    if not host:
        return "has no host"
    if "#" in uri:
        return "must not have a fragment (#...)"
    if parts.netloc.endswith(":"):
        return "has a ':' with no port after it"
    if parts.netloc.startswith("["):
        literal, _, rest = parts.netloc[1:].partition("]")
        if not _is_ipv6(literal) or (rest and not rest.startswith(":")):
            return f"host {parts.netloc.partition(']')[0]}] is not an IPv6 address in brackets (no zone id)"
    elif not _is_host(host):
        return f"host {json.dumps(host)} is not a DNS name or IP address"
    if port == 0:
        return "port 0 is not a port"
    return JwksUri(parts.scheme, host, port or (443 if parts.scheme == "https" else 80))


def _is_host(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return bool(_DNS_NAME.match(host))


def _is_ipv6(literal: str) -> bool:
    if "%" in literal:  # a zone id: Envoy's parser refuses it
        return False
    try:
        ipaddress.IPv6Address(literal)
        return True
    except ValueError:
        return False
