"""The vocabulary shared by the cache and the protocol layer.

`XdsResource` is a structural type so that this package never imports the engine:
anything with these four attributes (the engine's `EnvoyResource`, a test double) can be
served.
"""

from __future__ import annotations

from typing import Protocol

from kit.type_urls import CLUSTER, ENDPOINT, LISTENER, PUSH_ORDER, ROUTE, SCOPED_ROUTE, SECRET, type_url

__all__ = ["CLUSTER", "ENDPOINT", "LISTENER", "PUSH_ORDER", "ROUTE", "SCOPED_ROUTE", "SECRET", "WILDCARD",
           "WILDCARD_TYPES", "XdsResource", "push_rank", "type_url"]

# Only these types have a wildcard subscription and state-of-the-world removal semantics;
# for the others a SotW response never removes anything (removal is by dropping references).
# Envoy subscribes to scoped routes (SRDS) by wildcard and replaces its whole scope set
# with each SotW response.
WILDCARD_TYPES: frozenset[str] = frozenset({LISTENER, CLUSTER, SCOPED_ROUTE})

WILDCARD = "*"

SHORT_NAMES: dict[str, str] = {LISTENER: "LDS", ROUTE: "RDS", SCOPED_ROUTE: "SRDS", CLUSTER: "CDS", ENDPOINT: "EDS",
                               SECRET: "SDS"}


def short_name(type_url: str) -> str:
    """`LDS` for the listener type URL; the proto name for any type we don't abbreviate."""
    return SHORT_NAMES.get(type_url, type_url.rsplit(".", 1)[-1])


def push_rank(type_url: str) -> tuple[int, str]:
    """Sort key putting known types in make-before-break order, unknown ones after, stably."""
    try:
        return (PUSH_ORDER.index(type_url), "")
    except ValueError:
        return (len(PUSH_ORDER), type_url)


class XdsResource(Protocol):
    """One named Envoy resource, already serialized.

    `version` must be a hash of the content: equal bytes, equal version, so a restarted
    server hands Envoy the very same versions and nothing churns.
    """

    @property
    def type_url(self) -> str: ...

    @property
    def name(self) -> str: ...

    @property
    def body(self) -> bytes: ...

    @property
    def version(self) -> str: ...
