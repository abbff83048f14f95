"""A ModelRoute's entries → groups with weights, timeouts and retries (SPEC 3.3, 3.4).

- Entries whose matches are identical in normal form (`matching.route_match`) form one
  group, in first-appearance order; group `n` becomes route `modelroute/ns/name/n`.
- Weights are handed to translate as integers it normalizes (`routing_engine.weights`:
  all entries without a weight: equal shares (1 each); some without: the weighted ones
  keep theirs and the others share what is left of 100 equally, the remainder to the
  earliest, nothing if the others already use 100). A group whose weights are all 0 is
  `ValidationFailed`: it would send its traffic nowhere. An entry naming the same
  ModelServer as an earlier one in its group adds its weight to it (one cluster once
  per route).
- `canary.enabled` needs exactly one group with exactly two entries naming two
  different ModelServers: the first is stable, the second canary (`canary_group`: what
  the canary runner rolls out, through `routing_engine.canaries`); their weights are the
  live weights the canary controller set (`World.live_weights`, ignored unless both are percentages, so a controller bug
  never yields a weight Envoy rejects), else `trafficSplit`, else the entries' own.
  A rollout starts at `trafficSplit`, else (100 - stepWeight, stepWeight) with an
  analysis, else 90/10 (`start_weights`).
  Live weights of (0, 0) make the group all-zero, which fails like any other.
  With `canary.stickyHeader` (ext) the canary group carries that header as its
  `hash_header`: Envoy hashes it to pick the variant, so a user keeps one variant.
- Timeout and retries of a group: the largest explicit value among its entries, else
  the largest `routing` value among its destinations, else 60 s and 2 retries. The
  largest, because a group is one Envoy route and must not cut off its slowest model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from routing_engine import ir, names
from routing_engine.api.resources import CanarySpec, ModelRoute, ModelServer, ObjectKey
from routing_engine.api.types import parse_duration_ms
from routing_engine.resolve.conditions import VALIDATION_FAILED, Problem, problem
from routing_engine.resolve.matching import route_match
from routing_engine.resolve.servers import DEFAULT_RETRIES, DEFAULT_TIMEOUT_MS, ServerOutcome
from routing_engine.weights import shares
from routing_engine.world import CanaryGroup

DEFAULT_CANARY_START = (90, 10)


@dataclass(frozen=True, slots=True)
class Group:
    match: ir.RouteMatch
    entries: tuple[int, ...]  # indexes into spec.routes, in written order
    backends: tuple[ir.WeightedBackend, ...]
    timeout_ms: int
    retries: int
    hash_header: str | None = None  # canary.stickyHeader (ext), lower-cased


def destination(route: ModelRoute, entry: int) -> ObjectKey:
    ref = route.spec.routes[entry].destination.model_server_ref
    return ref.resolve(ModelServer.KIND, route.metadata.namespace)


def by_match(route: ModelRoute, front_door: str) -> dict[ir.RouteMatch, list[int]]:
    """The route's groups: entry indexes by match in normal form, in first-appearance order."""
    found: dict[ir.RouteMatch, list[int]] = {}
    whole: ir.RouteMatch | None = None  # the match of an entry that matches nothing itself
    for i, entry in enumerate(route.spec.routes):
        m = entry.match
        if m.path is None and not m.headers and not m.query_params and m.model is None:
            match = whole = whole or route_match(m, front_door)
        else:
            match = route_match(m, front_door)
        found.setdefault(match, []).append(i)
    return found


def _pairs(groups: Sequence[list[int]]) -> list[int]:
    """The groups a canary could be (their positions): exactly two entries."""
    return [n for n, entries in enumerate(groups) if len(entries) == 2]


def start_weights(canary: CanarySpec) -> tuple[int, int]:
    if canary.traffic_split is not None:
        return canary.traffic_split.stable, canary.traffic_split.canary
    if canary.analysis is not None:
        return 100 - canary.analysis.step_weight, canary.analysis.step_weight
    return DEFAULT_CANARY_START


def canary_group(route: ModelRoute, front_door: str) -> CanaryGroup | None:
    """The route's canary when `canary.enabled` and exactly one group has exactly two
    entries, naming two servers (otherwise `build_groups` reports ValidationFailed),
    grouped as `build_groups` groups them with this front door."""
    canary = route.spec.canary
    if canary is None or not canary.enabled:
        return None
    groups = list(by_match(route, front_door).values())
    pairs = _pairs(groups)
    if len(pairs) != 1:
        return None
    stable, second = groups[pairs[0]]
    if route.same_server_canary(stable, second) is not None:
        return None
    return CanaryGroup(destination(route, stable), destination(route, second), start_weights(canary), canary.analysis)


def build_groups(
    route: ModelRoute,
    dests: Sequence[ObjectKey],
    front_door: str,
    servers: Mapping[ObjectKey, ServerOutcome],
    live: tuple[int, int] | None,
) -> tuple[tuple[Group, ...], tuple[Problem, ...]]:
    """The route's groups, or the validation problems that keep it from compiling.
    `dests[i]` is entry i's ModelServer. Destinations need not resolve here (backend
    names come from keys); the caller decides whether unresolved references fail the
    route."""
    grouped = by_match(route, front_door)
    rules = route.spec.routes
    weights = [shares([rules[i].weight for i in entries]) for entries in grouped.values()]  # by position
    problems: list[Problem] = []
    canary = route.spec.canary
    sticky: int | None = None  # the position of the group that carries the sticky header
    if canary is not None and canary.enabled:
        pairs = _pairs(list(grouped.values()))
        if len(pairs) != 1:
            rule = (
                "canary needs exactly one group (entries with identical match) with exactly two "
                f"destinations, stable then canary; found {len(pairs)}"
            )
            problems.append(problem(VALIDATION_FAILED, route.key, "spec.canary", rule))
        elif (same := route.same_server_canary(*list(grouped.values())[pairs[0]])) is not None:
            problems.append(problem(VALIDATION_FAILED, route.key, same.field, same.rule))
        elif live is not None and all(0 <= w <= 100 for w in live):
            weights[pairs[0]] = list(live)
        elif canary.traffic_split is not None:
            weights[pairs[0]] = [canary.traffic_split.stable, canary.traffic_split.canary]
        if len(pairs) == 1 and canary.sticky_header:
            sticky = pairs[0]
    groups: list[Group] = []
    for n, (match, entries) in enumerate(grouped.items()):
        written = weights[n]
        if not any(written):
            fields = ", ".join(f"spec.routes[{i}]" for i in entries)
            rule = f"the weights of one group ({fields}) are all 0; at least one must be positive"
            problems.append(problem(VALIDATION_FAILED, route.key, f"spec.routes[{entries[0]}].weight", rule))
            continue
        group = _group(route, dests, match, entries, written, servers)
        if n == sticky and canary is not None and canary.sticky_header:
            group = replace(group, hash_header=canary.sticky_header.lower())
        groups.append(group)
    return tuple(groups), tuple(problems)


def _group(
    route: ModelRoute,
    dests: Sequence[ObjectKey],
    match: ir.RouteMatch,
    entries: Sequence[int],
    weights: Sequence[int],
    servers: Mapping[ObjectKey, ServerOutcome],
) -> Group:
    merged: dict[str, int] = {}
    rules = route.spec.routes
    # the largest explicit value among the entries, else among their servers' `routing`
    entry_timeout = entry_retries = server_timeout = server_retries = None
    for i, weight in zip(entries, weights):
        dest = dests[i]
        name = names.backend(dest)
        merged[name] = merged.get(name, 0) + weight
        rule = rules[i]
        if rule.timeout is not None:
            entry_timeout = max(entry_timeout or 0, parse_duration_ms(rule.timeout))
        if rule.retries is not None:
            entry_retries = max(entry_retries or 0, rule.retries)
        target = servers.get(dest)
        if target is not None:
            if target.timeout_ms is not None:
                server_timeout = max(server_timeout or 0, target.timeout_ms)
            if target.retries is not None:
                server_retries = max(server_retries or 0, target.retries)
    timeout = entry_timeout if entry_timeout is not None else server_timeout
    retries = entry_retries if entry_retries is not None else server_retries
    return Group(
        match=match,
        entries=tuple(entries),
        backends=tuple(ir.WeightedBackend(name, weight) for name, weight in merged.items()),
        timeout_ms=timeout if timeout is not None else DEFAULT_TIMEOUT_MS,
        retries=retries if retries is not None else DEFAULT_RETRIES,
    )
