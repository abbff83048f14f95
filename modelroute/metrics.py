"""The control plane's own Prometheus series, on the registry its admin `/metrics` serves.

Each run mode (`Embedded`, `KubernetesMode`) has one registry, so a scrape shows that
control plane only (tests run several in one process). On it:

- the xDS server's (`xds_server.metrics`: streams, pushes, bytes, push→ACK latency,
  NACKs by type, snapshot build time);
- these (`ControlPlaneMetrics`): compile time per node group, edit→served (from a change
  handed to the engine to the gateway Envoys accepting every resource of the compile
  that has it, per input: objects, endpoints, canary weights), NACKs by owning object,
  objects by kind (counted when scraped: an edit must not pay a pass over the world), informer lag (Kubernetes: a watch event's arrival → the world with it
  handed to the engine), and whether this replica leads;
- the per-variant and rollout series (`controller.canary.experiment_metrics`);
- `ProcessWide`: what lives in the process-wide default registry: the process and Python
  runtime series, and the rate-limit service's (`modelroute_ratelimit_*`, one service per
  process). The rate-limit result series start at 0, so a dashboard shows 0, not "no
  data", before the first limited request.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterator, Sequence

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from controller.ratelimit import service as ratelimit_service
from routing_engine.api.resources import ObjectKey, Resource

_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# The default registry's families served by every instance's /metrics.
_PROCESS_PREFIXES = ("process_", "python_", "modelroute_ratelimit_")
RATELIMIT_RESULTS = ("ok", "over_limit", "failure_allowed", "failure_denied")
INPUTS = ("objects", "endpoints", "weights")


class ProcessWide(Collector):
    def collect(self) -> Iterator[Metric]:
        for family in REGISTRY.collect():
            if family.name.startswith(_PROCESS_PREFIXES):
                yield family


class ObjectsByKind(Collector):
    """`modelroute_objects{kind}`: the objects the engine compiles, counted when scraped
    (once per set of objects), not on every edit; a kind whose last object went away
    reads 0, not nothing."""

    def __init__(self) -> None:
        self._objects: Sequence[Resource] = ()
        self._counted: Sequence[Resource] | None = None
        self._counts: dict[str, int] = {}

    def set(self, objects: Sequence[Resource]) -> None:
        self._objects = objects

    def counts(self) -> dict[str, int]:
        objects = self._objects
        if self._counted is not objects:
            found = Tally(o.KIND for o in objects)
            self._counts = {kind: found.get(kind, 0) for kind in sorted(self._counts.keys() | found.keys())}
            self._counted = objects
        return dict(self._counts)

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily("modelroute_objects", "Objects the engine compiles, by kind", labels=["kind"])
        for kind, count in self.counts().items():
            family.add_metric([kind], count)
        yield family


class ControlPlaneMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.compile_seconds = Histogram(
            "modelroute_compile_duration_seconds", "Time to compile the world for one node group",
            ["node_group"], buckets=_SECONDS, registry=registry)
        self.edit_to_served = Histogram(
            "modelroute_edit_to_served_seconds", "From a change handed to the engine to the gateway Envoys "
            "accepting every resource of the compile that has it", ["input"], buckets=_SECONDS, registry=registry)
        self.object_nacks = Counter(
            "modelroute_object_nacks_total", "Envoy rejections of a resource, by the object it came from "
            "(object: namespace/name; not `namespace`, which scrapes attach for the target)",
            ["kind", "object"], registry=registry)
        self.objects = ObjectsByKind()
        registry.register(self.objects)
        self.informer_lag = Histogram(
            "modelroute_informer_lag_seconds", "From a watch event's arrival to the world with it handed to the "
            "engine (Kubernetes mode)", buckets=_SECONDS, registry=registry)
        self.leader = Gauge("modelroute_leader", "1 while this replica leads: writes status, judges rollouts "
                            "(always 1 in embedded mode)", registry=registry)
        for kind in INPUTS:
            self.edit_to_served.labels(kind)
        for result in RATELIMIT_RESULTS:
            ratelimit_service.DECISIONS.labels(result)
        registry.register(ProcessWide())

    def rejected(self, owners: frozenset[ObjectKey]) -> None:
        for owner in owners:
            self.object_nacks.labels(owner.kind, f"{owner.namespace}/{owner.name}").inc()
