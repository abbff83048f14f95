"""One scoped listener's tables and scopes (translate/scopes.py) as the translator keeps
them between runs: built whole, or patched where a few routes changed in place.

A layout holds, per table, its routes (already serialized and framed) in listener order,
grouped by key; where each route of the listener sits; and the resulting tables and
scopes with their owners as a batch the translator adds in bulk. `patched` answers a
one-route edit by rebuilding the table of that route (and the scope of its key, whose
owners may change) and reusing every other resource object as it is: the cost follows
the table, not the listener. It gives up (None) whenever the split itself could move:
another tag or depth, other plugin routes, or a changed route with another key.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import NamedTuple, Protocol

from routing_engine import ir
from routing_engine.api.resources import ObjectKey
from routing_engine import names
from routing_engine.translate import scopes
from routing_engine.translate.wire import route_config_bytes
from routing_engine.translate.xds import ROUTE, SCOPED_ROUTE
from routing_engine.world import EnvoyResource

Owners = tuple[ObjectKey, ...]
MakeResource = Callable[[str, str, bytes], EnvoyResource]


class Item(NamedTuple):
    """One route in a table: `serial` identifies its content, `position` its place in the
    listener (-1: a plugin's route). A tuple: a full compile makes 40,000 of them."""

    serial: Hashable
    body: bytes
    owner: ObjectKey | None
    key: scopes.Key
    position: int


@dataclass(frozen=True, slots=True)
class Built:
    """A table or scope resource, what it was built from, and its owners."""

    signature: Hashable
    resource: EnvoyResource
    owners: Owners


@dataclass(frozen=True, slots=True)
class ScopedLayout:
    depth: int
    tag: str
    extras: tuple[bytes, ...]
    items: tuple[tuple[Item, ...], ...]  # per table index
    where: tuple[tuple[int, int], ...]  # per listener route: (table, index in its items)
    tables: Mapping[str, Built]  # by name
    scopes: Mapping[str, Built]  # by name
    # Dicts, added to the translator's output in bulk as they are; never changed after.
    resources: Mapping[str, dict[str, EnvoyResource]]  # type → name → resource
    owners: dict[tuple[str, str], Owners]
    # A patched layout: the names that differ from the layout it was patched from.
    changed: Mapping[str, tuple[str, ...]] | None = None


class Entry(Protocol):
    """What the layout needs of a translated route (the translator's route entry)."""

    @property
    def serial(self) -> Hashable: ...

    @property
    def framed(self) -> bytes: ...

    @property
    def route(self) -> ir.Route: ...


def _key(route: ir.Route, depth: int, cache: dict[tuple[str, int], scopes.Key]) -> scopes.Key:
    value = route.match.path.value
    found = cache.get((value, depth))
    if found is None:
        found = cache[(value, depth)] = scopes.key_of(value, depth)
    return found


def build(listener: ir.Listener, tag: str, depth: int, extras: Sequence[tuple[str, bytes]],
          entries: Sequence[Entry], owners: Owners, make: MakeResource, previous: ScopedLayout | None,
          key_cache: dict[tuple[str, int], scopes.Key]) -> ScopedLayout:
    """The whole layout; resources equal to `previous`'s keep their objects. `extras`:
    the plugins' routes as (path, framed body), before the listener's own."""
    by_key: dict[scopes.Key, list[Item]] = {}
    for path, body in extras:
        k = scopes.key_of(path, depth)
        by_key.setdefault(k, []).append(Item(body, body, None, k, -1))
    plugin_keys = list(by_key)
    for position, e in enumerate(entries):
        k = _key(e.route, depth, key_cache)
        by_key.setdefault(k, []).append(Item(e.serial, e.framed, e.route.owner, k, position))
    # Keys only plugins' routes have (`/health`, `/ready`, `/metrics`) get a table each,
    # after the hashed ones: `/ready` carries a check per server of the port (1.25 MB at
    # 2,500 servers), which must not ride along with every edit of routes that hash into
    # its table.
    count = scopes.table_count(len(by_key))
    alone = [k for k in plugin_keys if all(item.position < 0 for item in by_key[k])][:scopes.PLUGIN_TABLES]
    own = {k: count + n for n, k in enumerate(alone)}
    per_table: list[list[Item]] = [[] for _ in range(count + len(own))]
    for k, found in by_key.items():
        t = own.get(k)
        per_table[scopes.table_index(k, count) if t is None else t].extend(found)
    where: list[tuple[int, int]] = [(0, 0)] * len(entries)
    for t, found in enumerate(per_table):
        for index, item in enumerate(found):
            if item.position >= 0:
                where[item.position] = (t, index)
    items = tuple(tuple(found) for found in per_table)
    before_tables = previous.tables if previous is not None else {}
    before_scopes = previous.scopes if previous is not None else {}
    tables: dict[str, Built] = {}
    scoped: dict[str, Built] = {}
    for t, table_items in enumerate(items):
        if table_items:
            name = names.route_table(listener, tag, t)
            tables[name] = _table(name, table_items, owners, make, before_tables.get(name))
            for k in dict.fromkeys(item.key for item in table_items):
                scope_name = names.route_scope(listener, tag, k)
                scoped[scope_name] = _scope(scope_name, name, tag, k, by_key[k], owners, make, before_scopes.get(scope_name))
    return _layout(depth, tag, tuple(b for _, b in extras), items, tuple(where), tables, scoped)


def patched(previous: ScopedLayout, listener: ir.Listener, tag: str, depth: int, extras: Sequence[tuple[str, bytes]],
            entries: Sequence[Entry], changed: Sequence[int], owners: Owners, make: MakeResource,
            key_cache: dict[tuple[str, int], scopes.Key]) -> ScopedLayout | None:
    """`previous` with the routes at `changed` positions replaced; None when the split
    itself may move (then `build`)."""
    if (previous.depth != depth or previous.tag != tag or len(previous.where) != len(entries)
            or previous.extras != tuple(b for _, b in extras)):
        return None
    items = list(previous.items)
    touched: dict[int, list[Item]] = {}
    for position in changed:
        t, index = previous.where[position]
        old = items[t][index] if t not in touched else touched[t][index]
        e = entries[position]
        k = _key(e.route, depth, key_cache)
        if k != old.key:
            return None
        found = touched.get(t)
        if found is None:
            found = touched[t] = list(items[t])
        found[index] = Item(e.serial, e.framed, e.route.owner, k, position)
    tables: dict[str, Built] = {}
    scoped: dict[str, Built] = {}
    for t, found in touched.items():
        items[t] = tuple(found)
        name = names.route_table(listener, tag, t)
        tables[name] = _table(name, items[t], owners, make, previous.tables.get(name))
        for k in {found[previous.where[p][1]].key for p in changed if previous.where[p][0] == t}:
            scope_name = names.route_scope(listener, tag, k)
            of_key = [item for item in items[t] if item.key == k]
            scoped[scope_name] = _scope(scope_name, name, tag, k, of_key, owners, make, previous.scopes.get(scope_name))
    return _patched_layout(previous, tuple(items), tables, scoped)


def _table(name: str, found: Sequence[Item], owners: Owners, make: MakeResource, before: Built | None) -> Built:
    signature = tuple(item.serial for item in found)
    table_owners = tuple(sorted({item.owner for item in found if item.owner is not None})) or owners
    if before is not None and before.signature == signature and before.owners == table_owners:
        return before
    body = route_config_bytes(name, [item.body for item in found], remove=scopes.SCOPE_HEADER)
    return Built(signature, make(ROUTE, name, body), table_owners)


def _scope(name: str, table: str, tag: str, key: scopes.Key, of_key: Sequence[Item], owners: Owners,
           make: MakeResource, before: Built | None) -> Built:
    """The scope of `key`, whose routes are `of_key`."""
    scope_owners = tuple(sorted({i.owner for i in of_key if i.owner is not None})) or owners
    if before is not None and before.signature == table and before.owners == scope_owners:
        return before
    return Built(table, make(SCOPED_ROUTE, name, scopes.scope(name, table, tag, key)), scope_owners)


def _layout(depth: int, tag: str, extras: tuple[bytes, ...], items: tuple[tuple[Item, ...], ...],
            where: tuple[tuple[int, int], ...], tables: dict[str, Built], scoped: dict[str, Built]) -> ScopedLayout:
    """The layout with its resources and owners as mappings for a bulk add."""
    routes = {n: b.resource for n, b in tables.items()}
    scope_resources = {n: b.resource for n, b in scoped.items()}
    owners = {(ROUTE, n): b.owners for n, b in tables.items()}
    owners.update(((SCOPED_ROUTE, n), b.owners) for n, b in scoped.items())
    return ScopedLayout(depth, tag, extras, items, where, MappingProxyType(tables), MappingProxyType(scoped),
                        MappingProxyType({ROUTE: routes, SCOPED_ROUTE: scope_resources}), owners)


def _patched_layout(previous: ScopedLayout, items: tuple[tuple[Item, ...], ...], tables: dict[str, Built],
                    scoped: dict[str, Built]) -> ScopedLayout:
    """`previous` with the rebuilt `tables` and `scopes` (by name) in place: its mappings
    copied (in C) and patched where a table or scope is a new object; the layout says
    which names those are."""
    all_tables, all_scopes = dict(previous.tables), dict(previous.scopes)
    routes = dict(previous.resources[ROUTE])
    scope_resources = dict(previous.resources[SCOPED_ROUTE])
    owners = dict(previous.owners)
    table_names = tuple(n for n, b in tables.items() if previous.tables.get(n) is not b)
    scope_names = tuple(n for n, b in scoped.items() if previous.scopes.get(n) is not b)
    for n in table_names:
        b = all_tables[n] = tables[n]
        routes[n], owners[(ROUTE, n)] = b.resource, b.owners
    for n in scope_names:
        b = all_scopes[n] = scoped[n]
        scope_resources[n], owners[(SCOPED_ROUTE, n)] = b.resource, b.owners
    return ScopedLayout(previous.depth, previous.tag, previous.extras, items, previous.where,
                        MappingProxyType(all_tables), MappingProxyType(all_scopes),
                        MappingProxyType({ROUTE: routes, SCOPED_ROUTE: scope_resources}), owners,
                        {ROUTE: table_names, SCOPED_ROUTE: scope_names})
