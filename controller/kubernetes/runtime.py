"""The cluster side of Kubernetes mode: leader election and what only the leader writes.

    provider states (`apply`, every replica) ──► the latest, for the leader's loops
    leader only: WorkloadController (ModelInfer → Deployment/Service/HPA + status)
                 gateway Services of the ModelServers (+ sweep of stale ones)
                 status writes: engine statuses (`write_statuses`, called by the
                 mode's status sink) and ValidationFailed for objects left out as invalid,
                 with Kubernetes Events for what changed (`events`)
                 whatever else the mode leads (`leader_tasks`: the canary runner)
                 the label `LEADER_LABEL` on its own pod, which the stats Service
                 selects: gateways push their stats to the leader (its canary runner)

The application (`modelroute.app.App`) plugs this in as Kubernetes mode's workload
runtime: the cluster runs the workloads (from the Deployments the leader's workload
controller writes), their endpoints come back as EndpointSlices in the provider's state,
and every provider state is handed here (`apply`). Kubernetes mode's status sink writes
the engine's statuses through `write_statuses`.

The engine's status of a ModelInfer is not written: the workload controller owns it
(from the Deployment). A ModelServer's `serviceEndpoint` is the gateway Service's
address (LoadBalancer ingress once assigned), not the engine's guess.

Only a ModelServer the engine compiled (`Accepted=True` in the statuses handed to
`write_statuses`) gets a gateway Service: one refused for its port's exposure, TLS mode
or path must not have a Service reaching the listener of the servers that kept the port
(a LoadBalancer in front of a ClusterIP server's port). A server refused later loses its
Service; nothing is created before the first compile's statuses.

What it costs. Every edit publishes every object's status, and every provider state
reaches the gateway loop: at 10,000 routes, reading each status and applying each
Service was 30,000 API calls per edit. So a status is written only when it differs from
what was found on the very object the informer caches (`current`; a new object, e.g.
after our own write or someone else's, is compared again), and a Service is applied
again only for a new ModelServer object (a LoadBalancer's until its ingress is known),
every `RESYNC_S`, and when leadership starts (a new process); stale ones are swept when
the served servers change.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import replace
from typing import Any

from controller.kubernetes import gateway
from controller.kubernetes.errors import ApiError, NotFound
from controller.kubernetes.events import EventRecorder
from controller.kubernetes.informer import Informer
from controller.kubernetes.interface import KubeApi, Obj
from controller.kubernetes.leader import LeaderElector
from controller.kubernetes.resources import ENGINE_KINDS, MODEL_INFER, POD, SECRET, ResourceType
from controller.kubernetes.status_writer import StatusWriter
from controller.kubernetes.workload_controller import WorkloadController
from controller.provider import PartsFilter, ProviderState
from kit.tasks import cancel_and_wait, spawn
from routing_engine.api.resources import ModelServer, ObjectKey, Resource
from routing_engine.world import ConditionView, ObjectStatus, Target

log = logging.getLogger(__name__)

LEADER_LABEL = "modelroute.matrixinfer.ai/leader"
RESYNC_S = 600.0  # every gateway Service applied again at least this often (as informers resync)

# Engine statuses this side writes (a ModelInfer's is the workload controller's).
_WRITTEN_KINDS = frozenset(kind for kind, rtype in ENGINE_KINDS.items() if rtype not in (MODEL_INFER, SECRET))
# (kind, namespace, name) → the object as an informer caches it (None: not cached).
Current = Callable[[ResourceType, str, str], Obj | None]


def invalid_statuses(state: ProviderState) -> dict[ObjectKey, ObjectStatus]:
    """Failed/ValidationFailed for every object the provider left out, all rules in one message."""
    messages: dict[ObjectKey, list[str]] = {}
    for error in state.errors:
        key = error.object_key
        if key is not None and key.kind in ENGINE_KINDS and key.kind != SECRET.kind:
            messages.setdefault(key, []).append(f"{error.path}: {error.rule}" if error.path else error.rule)
    return {key: ObjectStatus("Failed", (ConditionView("Accepted", "False", "ValidationFailed", "; ".join(m)),))
            for key, m in messages.items()}


class KubernetesControlPlane:
    """`run()` until cancelled (leader election, and while leading the leader's work), or
    `start()` … `close()`; `apply(state)` with every provider state."""

    def __init__(self, api: KubeApi, *, identity: str, system_namespace: str,
                 watch_namespace: str | None = None, target: Target = Target(),
                 elector: LeaderElector | None = None, status: StatusWriter | None = None,
                 leader_tasks: Mapping[str, Callable[[], Coroutine[Any, Any, None]]] | None = None,
                 on_endpoints: Callable[[], None] = lambda: None, current: Current | None = None,
                 shared_informers: Mapping[ResourceType, Informer] | None = None) -> None:
        """`on_endpoints` is called when a gateway Service's endpoint changed (the statuses
        should be written again to carry it). `current` looks an object up in an informer
        cache (module docstring, "What it costs"); without it each status is read.
        `shared_informers`: the provider's, for the workload controller to subscribe to
        (`WorkloadController`'s `shared`)."""
        self._api = api
        self._identity = identity
        self._leader_tasks = dict(leader_tasks or {})
        self._system_namespace = system_namespace
        self._target = target
        self.elector = elector or LeaderElector(api, namespace=system_namespace, name="modelroute",
                                                identity=identity)
        self.status = status or StatusWriter(api, events=EventRecorder(api, instance=identity))
        self.workloads = WorkloadController(api, status=self.status, namespace=watch_namespace,
                                            shared=shared_informers)
        self._latest: ProviderState | None = None
        self._changed = asyncio.Event()
        self.endpoints: dict[ObjectKey, str] = {}  # ModelServer → serviceEndpoint from its Service
        self._served: frozenset[ObjectKey] | None = None  # ModelServers the engine compiled
        self._on_endpoints = on_endpoints
        self._current = current
        # Per object: (its cached document, the status and extra fields) the last time they
        # were found written; per ModelServer: the very object whose Service was applied.
        self._confirmed: dict[ObjectKey, tuple[Obj, ObjectStatus, str | None, Mapping[str, Any] | None]] = {}
        self._applied: dict[ObjectKey, ModelServer] = {}
        self._swept: frozenset[ObjectKey] | None = None
        self._server_filter = PartsFilter(lambda o: isinstance(o, ModelServer))
        # The ModelServers and served keys of the last pass that left every Service applied.
        self._settled: tuple[tuple[Resource, ...], frozenset[ObjectKey]] | None = None
        self._task: asyncio.Task[None] | None = None

    async def apply(self, state: ProviderState) -> None:
        """The provider's latest state: the leader converges the gateway Services and the
        ValidationFailed statuses to it."""
        self._latest = state
        self._changed.set()

    async def run(self) -> None:
        await self.elector.run(self._lead)

    async def start(self) -> None:
        self._task = spawn(self.run(), name="kubernetes")

    async def close(self) -> None:
        await cancel_and_wait(self._task)

    async def _lead(self) -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(self.workloads.run(), name="workload controller")
            group.create_task(self._gateway_loop(), name="gateway services")
            group.create_task(self._leader_label(), name="leader label")
            for name, task in self._leader_tasks.items():
                group.create_task(task(), name=name)

    async def _set_leader_label(self, leading: bool) -> None:
        patch = {"metadata": {"labels": {LEADER_LABEL: "true" if leading else None}}}
        try:
            await self._api.patch(POD, self._system_namespace, self._identity, patch)
        except NotFound:
            log.info("no pod of this identity: leader label not set (running outside a cluster?)",
                     extra={"resource": f"Pod {self._system_namespace}/{self._identity}"})
        except ApiError as err:
            log.warning("leader label not changed", extra={"resource": f"Pod {self._system_namespace}/"
                                                                       f"{self._identity}", "error": str(err)})

    async def _leader_label(self) -> None:
        """Label this pod while leading (the stats Service selects it); unlabel when not."""
        await self._set_leader_label(True)
        try:
            await asyncio.Event().wait()
        finally:
            await asyncio.shield(self._set_leader_label(False))

    async def _gateway_loop(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._changed.wait(), RESYNC_S)
            except TimeoutError:  # a Service changed or deleted behind our back is repaired
                self._applied.clear()
                self._swept = self._settled = None
            self._changed.clear()
            state = self._latest
            if state is None:
                continue
            try:
                await self._gateway_services(state)
                for key, status in invalid_statuses(state).items():
                    await self._write(key, status, None)
            except ApiError as err:
                log.warning("gateway services not converged; retrying on the next change",
                            extra={"error": str(err)})

    async def _gateway_services(self, state: ProviderState) -> None:
        """One Service per compiled ModelServer, none for the others (module docstring)."""
        served = self._served
        if served is None:
            return  # the engine has not said yet which servers it compiled
        every = self._server_filter(state.split())
        if self._settled == (every, served):  # (the very same ModelServers: compared by identity first)
            return
        servers = [o for o in every if isinstance(o, ModelServer) and o.key in served]
        before = dict(self.endpoints)
        for server in servers:
            if self._applied.get(server.key) is server:
                continue
            endpoint, _ = await gateway.reconcile(self._api, server, namespace=self._system_namespace,
                                                  target=self._target)
            if endpoint is not None:
                self.endpoints[server.key] = endpoint
                if server.spec.service.type != "LoadBalancer" or ".svc.cluster.local:" not in endpoint:
                    self._applied[server.key] = server  # settled (a LoadBalancer: once it has its ingress)
        keys = frozenset(s.key for s in servers)
        if keys != self._swept:
            await gateway.sweep(self._api, namespace=self._system_namespace, servers=servers)
            self._swept = keys
        for key in set(self.endpoints) - keys:
            del self.endpoints[key]
        for key in set(self._applied) - keys:
            del self._applied[key]
        self._settled = (every, served) if len(self._applied) == len(servers) else None
        if self.endpoints != before:
            self._on_endpoints()

    def _unconfirmed(self, statuses: Mapping[ObjectKey, ObjectStatus],
                     extras: Mapping[ObjectKey, Mapping[str, Any]]) -> list[ObjectKey]:
        """The statuses not found written on the very object the informer caches now: one
        pass of lookups (the publication of a 10,000-route world, at each edit)."""
        endpoints = self.endpoints
        return [key for key, status in statuses.items() if key.kind in _WRITTEN_KINDS
                and not self._is_confirmed(key, self._cached(key), status, endpoints.get(key), extras.get(key))]

    def _cached(self, key: ObjectKey) -> Obj | None:
        return self._current(ENGINE_KINDS[key.kind], key.namespace, key.name) if self._current is not None else None

    def _is_confirmed(self, key: ObjectKey, doc: Obj | None, status: ObjectStatus, endpoint: str | None,
                      extra: Mapping[str, Any] | None) -> bool:
        """Whether this status was found written on `doc`, the very object cached now."""
        known = self._confirmed.get(key)
        return doc is not None and known is not None and known[0] is doc \
            and (known[1] is status or known[1] == status) and known[2] == endpoint and known[3] == extra

    async def _write(self, key: ObjectKey, status: ObjectStatus, extra: Mapping[str, Any] | None,
                     endpoint: str | None = None) -> bool:
        """Write one engine status (with the gateway Service's endpoint) unless it was found
        written on the very object the informer caches."""
        doc = self._cached(key)
        if self._is_confirmed(key, doc, status, endpoint, extra):
            return False
        full = replace(status, service_endpoint=endpoint) if endpoint is not None else status
        written = await self.status.write(ENGINE_KINDS[key.kind], key.namespace, key.name, full, extra=extra,
                                          current=doc)
        if written or doc is None:
            self._confirmed.pop(key, None)  # its informer will bring the object as written
        else:
            self._confirmed[key] = (doc, status, endpoint, extra)
        return written

    async def write_statuses(self, statuses: Mapping[ObjectKey, ObjectStatus],
                             extras: Mapping[ObjectKey, Mapping[str, Any]] | None = None) -> int:
        """Write engine statuses (leader only), with `extras` (more status fields per
        object, e.g. `canary`); returns how many were written. Every replica learns from
        them which ModelServers get a gateway Service (the module docstring)."""
        served = frozenset(key for key, status in statuses.items() if key.kind == ModelServer.KIND and any(
            c.type == "Accepted" and c.status == "True" for c in status.conditions))
        if served != self._served:
            self._served = served
            self._changed.set()
        if not self.elector.is_leader:
            return 0
        written, extras = 0, extras or {}
        for key in sorted(self._unconfirmed(statuses, extras)):
            try:
                written += await self._write(key, statuses[key], extras.get(key), self.endpoints.get(key))
            except ApiError as err:
                log.warning("status not written", extra={"resource": str(key), "error": str(err)})
        for key in self._confirmed.keys() - statuses.keys():
            del self._confirmed[key]
        return written
