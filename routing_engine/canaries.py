"""The canary of each ModelRoute in a world, as the engine groups the route (SPEC 3.4):
what the canary runner rolls out.

The grouping is `resolve`'s own (`resolve.routes.canary_of`: entries grouped by match in
normal form under the route's real front door), so the runner and the served config
never disagree on which two destinations are stable and canary.

This is a function of the objects, called before the compile, not a field of
`Compiled`: the runner must know a rollout's pair before the compile that serves it, so
that the rollout's live weights (its start, or the restart when the spec names another
pair) are in the `World` of that very compile; reading the pair off the compile's output
would hand Envoy the entries' own weights, or the previous pair's live ones, for one
push.
"""

from __future__ import annotations

from collections.abc import Iterable

from routing_engine.api.resources import ModelRoute, ModelServer, ObjectKey, Resource
from routing_engine.resolve.objects import choose
from routing_engine.resolve.routes import canary_of
from routing_engine.world import CanaryGroup


def canary_groups(objects: Iterable[Resource]) -> dict[ObjectKey, CanaryGroup]:
    """Every ModelRoute with `canary.enabled` and exactly one group of two destinations,
    with its canary, in key order. One object per key, chosen as resolve chooses
    between duplicates."""
    objects = tuple(objects)
    # Few routes have a canary: choose between duplicates only for their keys (this runs
    # on every edit of a 10,000-route world).
    wanted = {o.key for o in objects
              if isinstance(o, ModelRoute) and o.spec.canary is not None and o.spec.canary.enabled}
    if not wanted:
        return {}
    chosen = choose((o for o in objects if isinstance(o, ModelRoute) and o.key in wanted), lambda o: o.key)
    enabled = {key: route for key, route in chosen.items()
               if isinstance(route, ModelRoute) and route.spec.canary is not None and route.spec.canary.enabled}
    if not enabled:
        return {}
    servers = {key: server for key, server in choose((o for o in objects if isinstance(o, ModelServer)),
                                                      lambda o: o.key).items() if isinstance(server, ModelServer)}
    found: dict[ObjectKey, CanaryGroup] = {}
    for key in sorted(enabled):
        group = canary_of(enabled[key], servers)
        if group is not None:
            found[key] = group
    return found
