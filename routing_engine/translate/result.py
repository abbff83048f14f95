"""What translation hands back, and the messages of what it leaves out (shared by the
one-shot `translate` and the memoizing `routing_engine.incremental.Translator`)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from routing_engine import ir, names
from routing_engine.api.resources import ObjectKey
from routing_engine.translate import cluster, endpoint
from routing_engine.translate.xds import CLUSTER, ENDPOINT
from routing_engine.world import EnvoyResource, envoy_resource


@dataclass(frozen=True, slots=True)
class TranslateError:
    owner: ObjectKey
    message: str


@dataclass(frozen=True, slots=True)
class TranslateResult:
    # type_url → name → resource, both levels sorted by key
    resources: Mapping[str, Mapping[str, EnvoyResource]]
    owners: Mapping[tuple[str, str], tuple[ObjectKey, ...]]
    errors: tuple[TranslateError, ...] = ()


class Collected:
    """Resources (type → name → resource) with their owners, as translation adds them: a
    resource added twice gets the later body and the union of owners."""

    __slots__ = ("resources", "owners")

    def __init__(self) -> None:
        self.resources: dict[str, dict[str, EnvoyResource]] = {}
        self.owners: dict[tuple[str, str], tuple[ObjectKey, ...]] = {}

    def add(self, resource: EnvoyResource, owners: tuple[ObjectKey, ...]) -> None:
        """`owners` sorted and unique."""
        self.resources.setdefault(resource.type_url, {})[resource.name] = resource
        key = (resource.type_url, resource.name)
        previous = self.owners.get(key)
        self.owners[key] = owners if previous is None else tuple(sorted({*previous, *owners}))


make_resource = envoy_resource


def failure(err: Exception) -> str:
    """An unexpected failure inside translation (a plugin bug), as one line for a status."""
    text = " ".join(str(err).split())[:200]
    return f"translation failed ({type(err).__name__}: {text})"


def needed_backends(r: ir.Route) -> tuple[str, ...]:
    """Every backend a route sends to (failover targets included), in order, once each."""
    return tuple({n: None for wb in r.backends for n in (wb.backend, wb.failover_to) if n})


def failover_pairs(r: ir.Route) -> tuple[tuple[str, str], ...]:
    """The (primary, spare) failover clusters a route sends to, sorted."""
    return tuple(sorted({(wb.backend, wb.failover_to) for wb in r.backends
                         if wb.failover_to and wb.failover_to != wb.backend}))


def unknown_backends(r: ir.Route, known: frozenset[str]) -> TranslateError:
    missing = sorted({n for wb in r.backends for n in (wb.backend, wb.failover_to) if n and n not in known})
    why = f"backend(s) {', '.join(missing)} not in the gateway" if missing else "no backend"
    return TranslateError(r.owner, f"route {r.name}: {why}; route left out")


def failover_resources(primary: ir.Backend, fallback: ir.Backend) -> tuple[EnvoyResource, EnvoyResource]:
    """A failover pair's Cluster and ClusterLoadAssignment (`cluster.py`, `endpoint.py`)."""
    return failover_cluster_resource(primary, fallback), failover_endpoints_resource(primary, fallback)


def failover_cluster_resource(primary: ir.Backend, fallback: ir.Backend) -> EnvoyResource:
    """The pair's Cluster: it depends on the primary alone (and the pair's name)."""
    name = names.failover_cluster(primary.name, fallback.name)
    return make_resource(CLUSTER, name, cluster.failover_cluster_bytes(primary, fallback.name))


def failover_endpoints_resource(primary: ir.Backend, fallback: ir.Backend) -> EnvoyResource:
    name = names.failover_cluster(primary.name, fallback.name)
    return make_resource(ENDPOINT, name, endpoint.failover_assignment_bytes(primary, fallback))


def failover_owners(primary: ir.Backend, fallback: ir.Backend, users: Iterable[ObjectKey]) -> tuple[ObjectKey, ...]:
    """A failover pair's resources' owners: both servers and every route using it, sorted."""
    return tuple(sorted({primary.owner, fallback.owner, *users}))
