"""Routes that know what the model servers behind them do (issue 18): LoRA adapters and
prefix affinity, applied to a listener's routes once servers and ModelRoutes are resolved.

- **LoRA adapters.** A backend whose ModelInfer declares adapters can serve a request
  whose body `model` names one only from the endpoints that load it (the cluster picks
  among them by the route's `metadata_match`, see `translate/cluster.py`). So every route
  that can send to such a backend gets, in front of it, one derived route per adapter
  of its backends: the same match plus `model` = the adapter, the same auth, timeout,
  retries and rate-limit bucket (the same cluster), and only the backends that declare
  the adapter, with their weights (all zero: equal shares; a fallback keeps failing over
  only if it declares the adapter too). A route whose own `match.model` names an adapter
  is narrowed the same way in place. Derived routes are named `<route>/adapter/<name>`.
  A request for an adapter that no endpoint loads right now gets 503 (Envoy finds no
  host in the subset), never a replica without it.
- **Prefix affinity.** A route that can send to a prefixAffinity backend hashes the
  prompt's prefix (`prefix_hash`; the hash itself comes from `translate/prefix_affinity.py`),
  unless it is a sticky canary's: its sticky header's hash must pick the variant alone, so
  there users, not prefixes, stay on one replica.

Pure and memoized by route identity (with the facts of its backends), so a listener
rebuilt for an unrelated change hands translate the same route objects again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

from routing_engine import ir

ADAPTER_ROUTE_SEPARATOR = "/adapter/"

# What expansion reads of one backend: (declared adapters, load balancing).
_Facts = tuple[tuple[str, ...], str]


def _facts(route: ir.Route, backends: Mapping[str, ir.Backend]) -> tuple[_Facts, ...]:
    found: list[_Facts] = []
    for wb in route.backends:
        for name in (wb.backend, wb.failover_to):
            backend = backends.get(name) if name is not None else None
            found.append((backend.adapters, backend.load_balancing) if backend is not None else ((), ""))
    return tuple(found)


def _narrowed(route: ir.Route, adapter: str, backends: Mapping[str, ir.Backend]) -> tuple[ir.WeightedBackend, ...]:
    """The route's backends that declare `adapter`; a failover target that does not is dropped."""
    kept = []
    for wb in route.backends:
        own = backends.get(wb.backend)
        if own is None or adapter not in own.adapters:
            continue
        spare = backends.get(wb.failover_to) if wb.failover_to is not None else None
        failover = wb.failover_to if spare is not None and adapter in spare.adapters else None
        kept.append(ir.WeightedBackend(wb.backend, wb.weight, failover))
    return tuple(kept)


def expand(route: ir.Route, backends: Mapping[str, ir.Backend]) -> tuple[ir.Route, ...]:
    """The routes that replace `route` on its listener (itself included, last)."""
    reached = [backends[wb.backend] for wb in route.backends if wb.backend in backends]
    spares = [backends[wb.failover_to] for wb in route.backends if wb.failover_to is not None and wb.failover_to in backends]
    sticky = route.hash_header is not None and len(route.backends) > 1  # its hash must pick the variant alone
    if not sticky and not route.prefix_hash and any(b.load_balancing == "prefixAffinity" for b in (*reached, *spares)):
        route = replace(route, prefix_hash=True)
    adapters = sorted({a for b in reached for a in b.adapters})
    if not adapters:
        return (route,)
    model = route.match.model
    if model is not None:
        if model not in adapters:
            return (route,)
        return (replace(route, backends=_narrowed(route, model, backends), adapter=model),)
    derived = tuple(
        replace(route, name=f"{route.name}{ADAPTER_ROUTE_SEPARATOR}{adapter}",
                match=replace(route.match, model=adapter), backends=_narrowed(route, adapter, backends),
                adapter=adapter, derived_from=route.name)
        for adapter in adapters)
    return (*derived, route)


def special_backends(backends: Sequence[ir.Backend]) -> frozenset[str]:
    """The backends whose routes `expand` changes."""
    return frozenset(b.name for b in backends if b.adapters or b.load_balancing == "prefixAffinity")


class Expander:
    """`expand` over a listener's routes, remembering each route's result while the route
    object and its backends' facts stay the same."""

    def __init__(self) -> None:
        self._memo: dict[int, tuple[ir.Route, tuple[_Facts, ...], tuple[ir.Route, ...]]] = {}
        self._seen: dict[int, tuple[ir.Route, tuple[_Facts, ...], tuple[ir.Route, ...]]] = {}

    def routes(self, routes: Sequence[ir.Route], backends: Mapping[str, ir.Backend],
               special: frozenset[str]) -> tuple[ir.Route, ...]:
        """`special`: the backends with adapters or prefixAffinity (`special_backends`);
        routes reaching none of them pass through untouched."""
        if not special:
            return tuple(routes)
        out: list[ir.Route] = []
        for route in routes:
            if not any(wb.backend in special or wb.failover_to in special for wb in route.backends):
                out.append(route)
                continue
            facts = _facts(route, backends)
            known = self._memo.get(id(route)) or self._seen.get(id(route))
            if known is None or known[0] is not route or known[1] != facts:
                known = (route, facts, expand(route, backends))
            self._seen[id(route)] = known
            out.extend(known[2])
        return tuple(out)

    def end_round(self) -> None:
        """Keep only what the last round used (memory follows the current world)."""
        self._memo, self._seen = self._seen, {}
