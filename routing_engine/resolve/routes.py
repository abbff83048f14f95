"""ModelRoutes → routes on the listeners of their front door (SPEC 3.2–3.4, 3.7).

- References: every `destination.modelServerRef` and `fallback.modelServerRef` must name
  a ModelServer that exists (`ModelNotFound`; `ValidationFailed` when its source holds
  it but refused it as invalid), that allows this namespace when it is in
  another one (`NetworkPolicyViolation`, SPEC 3.7) and that is compiled (a Failed server
  is `ModelNotFound`: it does not resolve to anything served). One bad reference keeps
  the whole ModelRoute out of the config — half a split would send the other half's
  share somewhere the user never wrote — and its traffic keeps going to the ModelServer
  that owns the path.
- Front door: `spec.path`, else the fallback's `routing.path`, else the first
  destination's.
- Owner of the front door: the compiled ModelServer(s) whose `routing.path` is the
  longest segment prefix of it (equal counts); several only when servers on different
  ports share that path. The route is installed on the owners' ports, or, with no
  owner, on the ports of every server it references.
- With a fallback: every destination other than the fallback fails over to it, and a
  catch-all route on the front door (segment prefix) follows the groups.
- Auth: a route carries the auth policy of every ModelServer it can send to
  (destinations and failover target) and of every ModelServer that owns the path it
  matches (the front door's owner, or the owner of an entry's own `match.path`),
  deduplicated and sorted by name; all must pass. So a split never lets a request reach
  a model its own server would have refused, and a ModelRoute cannot strip the auth off
  a path it takes over.
- Extensions: a route carries the `spec.extensions` of the same servers as for auth
  (one entry per plugin and server); how several servers' values combine is each
  plugin's rule.
- Path ownership across namespaces: taking over a path owned by a ModelServer in another
  namespace (front door or `match.path`) needs that server's permission, exactly like a
  reference (annotation `networking.matrixinfer.ai/allow-from`); otherwise
  `NetworkPolicyViolation` and the ModelRoute is not installed.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from routing_engine import ir, names
from routing_engine.api.resources import ModelRoute, ModelServer, ObjectKey
from routing_engine.resolve.conditions import (
    MODEL_NOT_FOUND,
    NETWORK_POLICY_VIOLATION,
    VALIDATION_FAILED,
    Problem,
    problem,
    unresolved,
)
from routing_engine.resolve.groups import Group, build_groups, canary_group, destination
from routing_engine.resolve.matching import front_door_match, prefix_path, segments
from routing_engine.api.references import allows_from
from routing_engine.resolve.objects import ObjectIndex
from routing_engine.resolve.servers import DEFAULT_RETRIES, DEFAULT_TIMEOUT_MS, ServerOutcome
from routing_engine.world import CanaryGroup

# Entries of a route whose front door is unknown (its first server does not exist: it
# fails anyway) are grouped as if it were the root.
_UNKNOWN_FRONT_DOOR = "/"


@dataclass(frozen=True, slots=True)
class RouteOutcome:
    """What resolution concluded about one ModelRoute; `routes` is empty unless it
    compiles (no `problems`)."""

    key: ObjectKey
    route: ModelRoute
    problems: tuple[Problem, ...]  # Accepted=False when non-empty
    ref_problems: tuple[Problem, ...]  # ResolvedRefs=False when non-empty
    front_door: str | None
    ports: tuple[int, ...]  # service ports as written, where the routes are installed
    groups: tuple[Group, ...]
    routes: tuple[ir.Route, ...]  # one per group in order, then the fallback catch-all
    servers: tuple[ObjectKey, ...]  # referenced servers and owners: what scope needs

    @property
    def compiled(self) -> bool:
        return not self.problems


# `Served.probed` entries for "servers below this path" lookups (exact paths otherwise).
UNDER = "under:"


class Served:
    """Compiled servers indexed once per compile: by `routing.path`, to find a front
    door's owner by walking up its segments, and by backend name, for auth. Scanning
    every server per ModelRoute instead would be quadratic in a world of 10,000 each.
    The answers for a path are kept for the life of the index (the servers do not
    change under it): a route asks about its front door several times."""

    def __init__(self, servers: Mapping[ObjectKey, ServerOutcome]) -> None:
        self.servers = servers
        # When set, every path `owners` looks at is added: what a memoized route outcome
        # depends on (a server appearing at any of them can change the owner).
        self.probed: set[str] | None = None
        self._by_path: dict[str, list[ServerOutcome]] = {}
        self._auth: dict[str, ir.AuthPolicy] = {}
        self._extensions: dict[str, tuple[ir.Extension, ...]] = {}
        self.tls_ports: set[int] = set()  # listener ports that serve TLS (one mode per port)
        for outcome in servers.values():
            if outcome.backend is not None:
                self._by_path.setdefault(outcome.path, []).append(outcome)
                if outcome.auth is not None:
                    self._auth[outcome.backend.name] = outcome.auth
                if outcome.extensions:
                    self._extensions[outcome.backend.name] = outcome.extensions
                if outcome.tls is not None:
                    self.tls_ports.add(outcome.port)
        self._paths = sorted(self._by_path)
        # Whether any server has auth or extensions: routes carry those of the servers they reach.
        self.has_policies = bool(self._auth or self._extensions)
        # path → (owners, the paths looked at to find them) / servers below / their backends
        self._owners: dict[str, tuple[list[ServerOutcome], tuple[str, ...]]] = {}
        self._under: dict[str, list[ServerOutcome]] = {}
        self._owner_backends: dict[str, frozenset[str]] = {}

    def auth(self, backends: set[str] | frozenset[str]) -> tuple[ir.AuthPolicy, ...]:
        """The auth policies of these backends' servers, deduplicated, sorted by name."""
        if not self._auth:
            return ()
        policies = {p.name: p for b in backends if (p := self._auth.get(b)) is not None}
        return tuple(policies[name] for name in sorted(policies))

    def extensions(self, backends: set[str] | frozenset[str]) -> tuple[ir.Extension, ...]:
        """The `spec.extensions` of these backends' servers, sorted by (plugin, server)."""
        if not self._extensions:
            return ()
        found = [e for b in backends for e in self._extensions.get(b, ())]
        return tuple(sorted(found, key=lambda e: (e.plugin, e.server)))

    def owner_backends(self, path: str) -> frozenset[str]:
        """Backends of the servers a claim on `path` covers: its owner and every server
        whose path lies below it (requests to those arrive through the claim too)."""
        owners, under = self.owners(path), self.under(path)  # (cached; they note what was probed)
        found = self._owner_backends.get(path)
        if found is None:
            found = self._owner_backends[path] = frozenset(
                o.backend.name for o in (*owners, *under) if o.backend is not None)
        return found

    def under(self, path: str) -> list[ServerOutcome]:
        """Compiled servers whose `routing.path` lies strictly below `path`, by segments."""
        if self.probed is not None:
            self.probed.add(UNDER + path)
        found = self._under.get(path)
        if found is None:
            prefix = path.rstrip("/") + "/"
            found = self._under[path] = []
            for i in range(bisect_left(self._paths, prefix), len(self._paths)):
                if not self._paths[i].startswith(prefix):
                    break
                found.extend(self._by_path[self._paths[i]])
        return found

    def owners(self, front_door: str) -> list[ServerOutcome]:
        known = self._owners.get(front_door)
        if known is None:
            known = self._owners[front_door] = self._find_owners(front_door)
        if self.probed is not None:
            self.probed.update(known[1])
        return known[0]

    def _find_owners(self, front_door: str) -> tuple[list[ServerOutcome], tuple[str, ...]]:
        parts = segments(front_door)
        looked: list[str] = []
        for n in range(len(parts), -1, -1):
            path = "/" + "/".join(parts[:n])
            looked.append(path)
            found = self._by_path.get(path)
            if found:
                return found, tuple(looked)
        return [], tuple(looked)


def resolve_route(
    route: ModelRoute,
    index: ObjectIndex,
    served: Served,
    live: tuple[int, int] | None,
) -> RouteOutcome:
    servers = served.servers
    spec = route.spec
    key = route.key
    namespace = route.metadata.namespace
    dests = [entry.destination.model_server_ref.resolve(ModelServer.KIND, namespace) for entry in spec.routes]
    fallback = spec.fallback.model_server_ref.resolve(ModelServer.KIND, namespace) if spec.fallback else None
    refs = [*dests, fallback] if fallback is not None else dests
    ref_problems: tuple[Problem, ...] = ()
    for i, ref in enumerate(refs):
        broken = _ref_problem(ref, namespace, index, servers)
        if broken is not None:
            field = "spec.fallback.modelServerRef" if i == len(dests) else f"spec.routes[{i}].destination.modelServerRef"
            ref_problems += (problem(broken[0], key, field, broken[1]),)
    front_door = _front_door(route, fallback if fallback is not None else dests[0], index.servers)
    groups, invalid = build_groups(route, dests, front_door or _UNKNOWN_FRONT_DOOR, servers, live)
    problems = ref_problems + invalid
    referenced = tuple(sorted(set(refs)))
    if problems or front_door is None:
        return RouteOutcome(key, route, problems, ref_problems, front_door, (), (), (), referenced)
    found = served.owners(front_door)
    takeover = _path_problems(route, front_door, groups, served, index)
    if takeover:
        return RouteOutcome(key, route, takeover, takeover, front_door, (), (), (), referenced)
    ports = sorted({o.port for o in found} if found else {servers[ref].port for ref in referenced})
    routes = _routes(key, front_door, groups, fallback, served)
    unsafe = _tls_problems(route, referenced, ports, served)
    if served.has_policies:
        unsafe += _api_key_problems(route, routes)
    if unsafe:
        return RouteOutcome(key, route, unsafe, (), front_door, (), (), (), referenced)
    scope = {*referenced, *(o.key for o in found), *(o.key for o in served.under(front_door))}
    for prefix in {_literal_prefix(g.match.path) for g in groups}:
        scope.update(o.key for o in (*served.owners(prefix), *served.under(prefix)))
    return RouteOutcome(key, route, (), (), front_door, tuple(ports), groups, routes, tuple(sorted(scope)))


def _tls_problems(route: ModelRoute, referenced: Sequence[ObjectKey], ports: Sequence[int],
                  served: Served) -> tuple[Problem, ...]:
    """A server that requires TLS must not be reached through a plain-HTTP port: its
    requests (and their credentials) would cross in clear text."""
    if not served.tls_ports:
        return ()  # no compiled server has TLS
    plain = [p for p in ports if p not in served.tls_ports]
    secure = [k for k in referenced if served.servers[k].tls is not None]
    if not plain or not secure:
        return ()
    rule = (f"ModelServer {secure[0].namespace}/{secure[0].name} requires TLS, but this route would be "
            f"served on plain HTTP port {plain[0]}")
    return (problem(NETWORK_POLICY_VIOLATION, route.key, "spec.routes", rule),)


def _api_key_problems(route: ModelRoute, routes: Sequence[ir.Route]) -> tuple[Problem, ...]:
    """One request presents one key: a route that could reach two API-key servers (a
    split, a failover, a takeover) cannot check both, so it is refused rather than
    letting one server's key unlock the other."""
    for r in routes:
        keyed = [p.name for p in r.auth if isinstance(p, ir.ApiKeyAuth)]
        if len(keyed) > 1:
            rule = (f"one route would need the API keys of {' and '.join(keyed)}; a request carries one key: "
                    "send to them from separate routes")
            return (problem(VALIDATION_FAILED, route.key, "spec.routes", rule),)
    return ()


def _ref_problem(
    ref: ObjectKey, namespace: str, index: ObjectIndex, servers: Mapping[ObjectKey, ServerOutcome]
) -> tuple[str, str] | None:
    """(reason, rule) when a reference from `namespace` to the ModelServer `ref` is broken."""
    server = index.servers.get(ref)
    if server is None:
        return unresolved(ref, index.refused)
    if not allows_from(server, namespace):
        return NETWORK_POLICY_VIOLATION, (
            f"ModelServer {ref.namespace}/{ref.name} does not allow references from namespace {namespace} "
            "(annotation networking.matrixinfer.ai/allow-from)"
        )
    if not servers[ref].compiled:
        return MODEL_NOT_FOUND, f"ModelServer {ref.namespace}/{ref.name} is Failed and not served"
    return None


def _literal_prefix(path: ir.PathMatch) -> str:
    """The part of a matched path that names whose path it is: a glob up to the segment
    holding its first `*`."""
    if path.kind != "glob":
        return path.value
    return path.value[: path.value.index("*")].rsplit("/", 1)[0] or "/"


def _path_problems(route: ModelRoute, front_door: str, groups: Sequence[Group], served: Served,
                   index: ObjectIndex) -> tuple[Problem, ...]:
    """Paths this route matches that belong to a server of another namespace which has not
    allowed this one (SPEC 3.7 applied to path ownership)."""
    claims = [("spec.path" if route.spec.path else "spec.fallback.modelServerRef", front_door)]
    claims += [(f"spec.routes[{g.entries[0]}].match.path", _literal_prefix(g.match.path)) for g in groups
               if route.spec.routes[g.entries[0]].match.path is not None]
    found: list[Problem] = []
    for field, path in claims:
        for owner in (*served.owners(path), *served.under(path)):
            if not allows_from(index.servers[owner.key], route.metadata.namespace):
                found.append(problem(
                    NETWORK_POLICY_VIOLATION, route.key, field,
                    f"{path} belongs to ModelServer {owner.key.namespace}/{owner.key.name}, which does not allow "
                    f"routes from namespace {route.metadata.namespace} (annotation networking.matrixinfer.ai/allow-from)"))
    return tuple(found)


def front_door_of(route: ModelRoute, servers: Mapping[ObjectKey, ModelServer]) -> str | None:
    """`spec.path`, else the `routing.path` of the fallback's server, else of the first
    destination's; None when that server does not exist (the route fails anyway)."""
    spec = route.spec
    first = (spec.fallback.model_server_ref.resolve(ModelServer.KIND, route.metadata.namespace) if spec.fallback
             else destination(route, 0))
    return _front_door(route, first, servers)


def _front_door(route: ModelRoute, first: ObjectKey, servers: Mapping[ObjectKey, ModelServer]) -> str | None:
    """`front_door_of`, with `first` (the fallback, else the first destination) known."""
    if route.spec.path is not None:
        return prefix_path(route.spec.path)
    server = servers.get(first)
    return prefix_path(server.spec.routing.path) if server is not None else None


def canary_of(route: ModelRoute, servers: Mapping[ObjectKey, ModelServer]) -> CanaryGroup | None:
    """The route's canary, grouped exactly as `resolve_route` groups its entries."""
    return canary_group(route, front_door_of(route, servers) or _UNKNOWN_FRONT_DOOR)


def _routes(
    key: ObjectKey,
    front_door: str,
    groups: Sequence[Group],
    fallback: ObjectKey | None,
    served: Served,
) -> tuple[ir.Route, ...]:
    spare = names.backend(fallback) if fallback is not None else None
    policies = served.has_policies  # else every route's auth and extensions are empty
    routes: list[ir.Route] = []
    for n, group in enumerate(groups):
        backends = group.backends if spare is None else tuple(
            ir.WeightedBackend(b.backend, b.weight, spare) if b.backend != spare else b for b in group.backends)
        auth: tuple[ir.AuthPolicy, ...] = ()
        extensions: tuple[ir.Extension, ...] = ()
        if policies:
            reachable = {b.backend for b in backends} | {b.failover_to for b in backends if b.failover_to}
            reachable |= served.owner_backends(_literal_prefix(group.match.path))
            auth, extensions = served.auth(reachable), served.extensions(reachable)
        routes.append(ir.Route(name=names.group_route(key, n), owner=key, match=group.match, backends=backends,
                               timeout_ms=group.timeout_ms, retries=group.retries, auth=auth,
                               hash_header=group.hash_header, extensions=extensions))
    if fallback is not None and spare is not None:
        target = served.servers[fallback]
        auth, extensions = (), ()
        if policies:
            reachable = {spare} | served.owner_backends(front_door)
            auth, extensions = served.auth(reachable), served.extensions(reachable)
        routes.append(
            ir.Route(
                name=names.fallback_route(key),
                owner=key,
                match=ir.RouteMatch(front_door_match(front_door)),
                backends=(ir.WeightedBackend(spare, 1),),
                timeout_ms=target.timeout_ms if target.timeout_ms is not None else DEFAULT_TIMEOUT_MS,
                retries=target.retries if target.retries is not None else DEFAULT_RETRIES,
                auth=auth,
                extensions=extensions,
            )
        )
    return tuple(routes)
