"""Scoped route tables: one port's routes split by path prefix into small tables, so an
edit re-sends a small RouteConfiguration instead of the port's whole table.

Envoy's scoped RDS picks one table per request from a key computed from request headers
(`ScopedRoutes.scope_key_builder`; a key with no scope answers 404) and Envoy 1.40 has
nothing else that splits one listener's routes (VHDS splits by Host, not path). The key
here, measured on Envoy 1.40 (docs/decisions.md, "Translating"):

- an early header mutation of the connection manager writes `<tag><path>` + `/` × depth
  into `x-modelroute-scope`, where `<path>` is `%PATH(NQ)%`: the path as Envoy matches
  it (normalized, slashes merged, decoded) without its query, and `<tag>` names the
  listener (a hash of its content: see `names.route_scope_tag`). It overwrites whatever
  the client sent under that name, and the tables remove it before forwarding;
- the key is that header split at `/`: fragment 0 is the tag, fragments 1..depth are
  the first `depth` path segments (the trailing slashes pad shorter paths with empty
  segments, so every request has a key).

So a route can be scoped when every request it can match has one key: an exact path
(its own segments, padded), a segment prefix or glob with at least `depth` literal
segments. `depth` is the largest number every route of the listener allows (up to
`MAX_DEPTH`); a route on `/` (a catch-all) allows none, and the listener keeps one table.
Each route then sits in the table of its key only; a request's key selects exactly the
routes that could match it, in their original order, so the tables route exactly as the
single table did. Headers, query parameters and the body's `model` cannot be part of a
key (the key is computed before the body is read, and they are per route, not per
port): routes that differ only in those share their path's key and table.

Keys are spread over at most `MAX_TABLES` tables per listener (by a stable hash of the
key), each scope naming its table; keys that only plugins' routes have (`/health`,
`/ready`, `/metrics`; at most `PLUGIN_TABLES`) get a table each besides, so that
`/ready`, which holds a check per server of the port, is re-sent only when it changes. Every scope's key and every name carries the tag, so
only the listener they were built for can ever select them (fail closed by construction,
as for the single table), a listener change renames them all, a route edit renames none.
A listener keeps one table below `MIN_ROUTES` routes: small tables gain nothing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from functools import lru_cache

from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import scoped_route_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.http.early_header_mutation.header_mutation.v3 import header_mutation_pb2
from routing_engine import ir
from routing_engine.translate.xds import ads, length_delimited, serialize

SCOPE_HEADER = "x-modelroute-scope"
EARLY_MUTATION = "modelroute.scope"
MAX_DEPTH = 4
MAX_TABLES = 128
PLUGIN_TABLES = 8
MIN_ROUTES = 256

Key = tuple[str, ...]


def literal_depth(path: ir.PathMatch) -> int | None:
    """How many leading path segments every request matching `path` shares with it
    (None: all of them, an exact path)."""
    if path.kind == "exact":
        return None
    parts = [p for p in path.value.split("/") if p]
    if path.kind == "glob":
        return next((n for n, part in enumerate(parts) if "*" in part), len(parts))
    return len(parts)


def proto_depth(match: rc.RouteMatch) -> int | None:
    """`literal_depth` of a built route's match (plugins' routes come as protos)."""
    kind = match.WhichOneof("path_specifier")
    if kind == "path":
        return None
    if kind in ("prefix", "path_separated_prefix"):
        value = match.prefix or match.path_separated_prefix
        literal = value if kind == "path_separated_prefix" else value.rsplit("/", 1)[0]
        return len([p for p in literal.split("/") if p])
    return 0  # a regex (or no path): any path


def key_of(path_value: str, depth: int) -> Key:
    """The key fragments 1..depth of requests whose (normalized, query-less) path starts
    with `path_value`'s first `depth` segments: the same split Envoy does on the header."""
    return tuple((path_value + "/" * depth).split("/")[1:depth + 1])


def choose_depth(depths: Sequence[int | None], routes: int) -> int:
    """The key depth for a listener whose routes allow `depths`; 0: one table."""
    if routes < MIN_ROUTES:
        return 0
    return min([MAX_DEPTH, *(d for d in depths if d is not None)])


def table_index(key: Key, tables: int) -> int:
    """A stable table for a key (the same across runs and processes)."""
    digest = hashlib.blake2b("/".join(key).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % tables


def table_count(keys: int) -> int:
    """Tables for a listener with `keys` distinct keys: one per key up to `MAX_TABLES`,
    rounded up to a power of two so that growing a world rarely reshuffles them."""
    count = 1
    while count < min(keys, MAX_TABLES):
        count *= 2
    return count


def patch_hcm(hcm: hcm_pb2.HttpConnectionManager, *, name: str, depth: int, tag: str) -> None:
    """Route selection by scope: the early mutation that writes the key header, and the
    key builder. Replaces `rds` (the tables come by RDS, the scopes by SRDS, both ADS)."""
    mutation = header_mutation_pb2.HeaderMutation()
    append = mutation.mutations.add().append
    append.header.key = SCOPE_HEADER
    append.header.value = tag + "%PATH(NQ)%" + "/" * depth
    append.append_action = append.OVERWRITE_IF_EXISTS_OR_ADD
    early = [e for e in hcm.early_header_mutation_extensions if e.name != EARLY_MUTATION]
    del hcm.early_header_mutation_extensions[:]
    hcm.early_header_mutation_extensions.extend(early)
    hcm.early_header_mutation_extensions.add(name=EARLY_MUTATION).typed_config.Pack(mutation, deterministic=True)
    scoped = hcm.scoped_routes
    scoped.name = name
    del scoped.scope_key_builder.fragments[:]
    for index in range(depth + 1):
        extractor = scoped.scope_key_builder.fragments.add().header_value_extractor
        extractor.name, extractor.element_separator, extractor.index = SCOPE_HEADER, "/", index
    scoped.rds_config_source.CopyFrom(ads())
    scoped.scoped_rds.scoped_rds_config_source.CopyFrom(ads())


def scope_message(name: str, table: str, tag: str, key: Key) -> scoped_route_pb2.ScopedRouteConfiguration:
    """The ScopedRouteConfiguration selecting `table` for `key` on one listener."""
    message = scoped_route_pb2.ScopedRouteConfiguration(name=name, route_configuration_name=table)
    for fragment in (tag, *key):
        message.key.fragments.add(string_key=fragment)
    return message


# ScopedRouteConfiguration{name = 1, route_configuration_name = 2, key = 3}, Key{fragments = 1},
# Fragment{string_key = 1}: all strings and messages, so the wire form is a few framings.
_NAME, _TABLE, _KEY, _FRAGMENTS, _STRING_KEY = 1, 2, 3, 1, 1


def scope(name: str, table: str, tag: str, key: Key) -> bytes:
    """`serialize(scope_message(...))` framed directly: a world of 10,000 routes has tens
    of thousands of scopes (tests check the two are byte-identical)."""
    fragments = b"".join(map(_fragment, (tag, *key)))
    return _string(_NAME, name) + _string(_TABLE, table) + length_delimited(_KEY, fragments)


@lru_cache(maxsize=4096)
def _fragment(value: str) -> bytes:
    """One key fragment, framed: listeners share their tag and most path segments."""
    # string_key is in a oneof: present (and framed) even when empty
    return length_delimited(_FRAGMENTS, length_delimited(_STRING_KEY, value.encode()))


def _string(field: int, value: str) -> bytes:
    return length_delimited(field, value.encode()) if value else b""  # proto3 leaves an empty string out
