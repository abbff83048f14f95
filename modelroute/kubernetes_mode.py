"""Kubernetes mode (`modelroute serve --provider kubernetes`): the same control loop as
embedded mode, fed by the cluster instead of a directory.

    API server ──► KubernetesControlPlane ──► ControlLoop ──► xDS server ──► Envoy gateways
       ▲              (informers; leader: workloads,            │
       └──────────── gateway Services, status) ◄── statuses ────┘

Every replica serves xDS; only the leader writes (Deployments, Services, status). Status
writes are network calls, so they run in their own task and always write the newest
statuses: a burst of compiles costs one round of writes, not one per compile.

Shared rate limits (`rateLimit.global`): every replica runs the rate-limit service
(gRPC, `ratelimit_address`, by default the xDS port + 1: the gateway bootstrap's
`modelroute_ratelimit` cluster) and hands it the limits of each gateway compile. The
counters live in the Redis named by `MODELROUTE_REDIS_URL` / `--redis-url`, which is what
makes the limit shared by every gateway and every replica. In a cluster there is no
private redis-server: without a configured Redis the service says so loudly at start
and answers by its failure mode (fail-open: everything allowed; fail-closed: limited
requests refused) whenever Redis cannot be reached.

Canary rollouts (`modelroute.canary_wiring.ClusterCanaryWiring`): every replica listens
for the gateways' stats on `stats_address` (UDP and TCP); the runner runs on the leader,
its state goes to each ModelRoute's `status.canary`/`status.rollout` with the status
writes, and every other replica applies the split that status shows.

Every port the Deployment declares is bound here: xDS, rate-limit, stats, the admin
server (`/healthz`, `/readyz`, `/metrics`, `/debug/nodes` and the experiment page
`/experiments` on `admin_address`: all interfaces for `serve`, so Prometheus can scrape
every replica; the per-variant and rollout series come from the leader) and the
admission webhook (HTTPS on `webhook.address`; its certificate from the control plane's
own Secret, `controller.kubernetes.webhook_certs`, or from files another issuer writes).
`/readyz` answers 200 once this replica has compiled the cluster as listed (so the xDS
Service never sends an Envoy to a replica that would serve it an empty world) and, with
a webhook, serves a certificate. The xDS cache is attached only at the provider's first
snapshot for the same reason.

Gateways run unprivileged: manifest ports below 1024 get `privileged_port_offset` (the
gateway Service maps the port back), one exposure per port (`Target.one_exposure_per_port`),
and every gateway snapshot carries the readiness listener on `gateway_readiness_port`
(`routing_engine.readiness`); that port and the gateway's admin port are reserved.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from prometheus_client import CollectorRegistry

from aiohttp import web

from kit.tasks import cancel_and_wait, spawn
from controller.canary.experiment_metrics import CanaryCollector, VariantCollector
from controller.local.instance import split_address
from controller.engines.probe import EngineProbe
from controller.kubernetes import webhook_server
from controller.kubernetes.interface import KubeApi
from controller.kubernetes.leader import LeaderElector
from controller.kubernetes.runtime import KubernetesControlPlane
from controller.kubernetes.webhook_certs import WebhookCertificates, WebhookTarget
from controller.kubernetes.xds_certs import XdsCertificates
from controller.certs.pki import KeyPair
from controller.certs.tls import ServingTls, untrusted_material, watch_tls_files
from controller.ratelimit.limits import cluster_limits
from controller.kubernetes.resources import MODEL_ROUTE
from controller.ratelimit.service import DEFAULT_REDIS_URL, RunningService, ServiceOptions, start_ratelimit_service
from controller.local.status_view import RouteView
from modelroute.canary_wiring import ClusterCanaryWiring
from modelroute.control_loop import ControlLoop
from modelroute.experiment_page import ExperimentSource, add_routes
from modelroute.metrics import ControlPlaneMetrics
from modelroute.route_views import route_views
from modelroute.targets import GATEWAY, Placement, target_for_group
from modelroute.tracing import tracing
from routing_engine.api.resources import ObjectKey, Resource
from routing_engine.plugins import Plugin
from routing_engine.world import BackendEndpoint, Compiled, ObjectStatus
from xds_server import ControlPlane, start_control_plane
from xds_server.identity import authorized_group
from xds_server.tls import ServerTls, TlsMaterial
from xds_server.http import admin_app, start_admin

log = logging.getLogger("modelroute.kubernetes")


# The gateway bootstrap's Envoy admin port (deploy/: loopback only); no listener may take it.
GATEWAY_ADMIN_PORT = 19000


@dataclass(frozen=True, slots=True)
class WebhookOptions:
    address: str  # HOST:PORT of the HTTPS admission webhook
    target: WebhookTarget  # its Service, certificate Secret and webhook configurations
    # Certificate files written by another issuer (a mounted cert-manager Secret), reloaded
    # when they change; None: the control plane issues and rotates it (`webhook_certs`).
    cert_dir: Path | None = None


@dataclass(frozen=True, slots=True)
class KubernetesOptions:
    identity: str  # this replica's name in leader election (the pod name)
    system_namespace: str  # where the Lease and the gateway Services live
    xds_host: str = "0.0.0.0"
    xds_port: int = 18000
    watch_namespace: str | None = None  # None: all namespaces
    listen_address: str = "0.0.0.0"  # where gateway listeners bind
    # rateLimit.global: HOST:PORT of the rate-limit service (None: the xDS host and port + 1,
    # what the bootstrap assumes; a free port when xds_port is 0) and its Redis.
    ratelimit_address: str | None = None
    ratelimit: ServiceOptions = field(default_factory=ServiceOptions.from_env)
    stats_address: str = "127.0.0.1:0"  # where gateway Envoys push stats (`serve`: 0.0.0.0:18002)
    lease_retry_s: float = 2.0  # how often a replica campaigns for / renews the leader Lease
    admin_address: str = "127.0.0.1:0"  # /healthz /readyz /metrics (`serve`: 0.0.0.0:19001, the probes' port)
    webhook: WebhookOptions | None = None
    privileged_port_offset: int = 0  # added to manifest ports < 1024 (unprivileged gateways: 10000)
    gateway_readiness_port: int | None = None  # the readiness listener pushed to gateways (None: none)
    # mTLS with the gateways on the xDS, rate-limit and stats ports (SPEC 3.8): "auto" (the
    # control plane issues and rotates the certificates: `controller.kubernetes.xds_certs`;
    # what `serve` does by default), "files" (tls.crt, tls.key and ca.crt in `xds_tls_dir`,
    # e.g. a mounted cert-manager Secret) or "off" (plaintext: for tests and networks where
    # every peer that can reach these ports is trusted).
    xds_tls: Literal["auto", "files", "off"] = "off"
    xds_tls_dir: Path | None = None
    experiment_token: str | None = None  # None: the experiment page is read-only
    # The translator's feature plugins (None: built-in plus the `modelroute.plugins` entry points).
    plugins: tuple[Plugin, ...] | None = None
    otlp_endpoint: str | None = None  # OpenTelemetry collector (OTLP/gRPC HOST:PORT); None: no tracing
    trace_sampling: float = 100.0  # percent of new requests the gateways trace

    def ratelimit_bind(self) -> str:
        if self.ratelimit_address is not None:
            return self.ratelimit_address
        return f"{self.xds_host}:{self.xds_port + 1 if self.xds_port else 0}"


def placement_of(options: KubernetesOptions) -> Placement:
    readiness = options.gateway_readiness_port
    reserved = {GATEWAY_ADMIN_PORT} | ({readiness} if readiness is not None else set())
    return Placement(listen_address=options.listen_address, privileged_port_offset=options.privileged_port_offset,
                     one_exposure_per_port=True, readiness_port=readiness, reserved_ports=frozenset(reserved))


class KubernetesMode:
    def __init__(self, api: KubeApi, options: KubernetesOptions) -> None:
        self.options = options
        placement = placement_of(options)
        # One registry per instance: its /metrics shows this control plane only, and tests may
        # run several in one process.
        self.registry = CollectorRegistry()
        self.metrics = ControlPlaneMetrics(self.registry)
        self.tracer, plugins = tracing(options.otlp_endpoint, options.trace_sampling, options.plugins)
        self.loop = ControlLoop(placement=placement, on_status=self._on_status, metrics=self.metrics,
                                plugins=plugins, tracer=self.tracer)
        # EndpointSlices → what the engines report (adapters, load) → the control loop
        self.probe = EngineProbe(self.loop.set_endpoints)
        self.webhook_tls: ServingTls | None = ServingTls() if options.webhook is not None else None
        self.certificates: WebhookCertificates | None = None
        leader_tasks = {"canary runner": lambda: self.canary.lead(), "leader metric": self._leading}
        # The server side of the mTLS with the gateways: a throwaway certificate nobody
        # trusts until the real material arrives (handshakes fail meanwhile; /readyz says so).
        self.xds_tls: ServerTls | None = None
        self.stats_tls: ServingTls | None = None
        self.xds_certificates: XdsCertificates | None = None
        self._tls_ready = options.xds_tls == "off"
        if options.xds_tls != "off":
            self.xds_tls = ServerTls(untrusted_material())
            self.stats_tls = ServingTls(name="stats")
            if options.xds_tls == "auto":
                self.xds_certificates = XdsCertificates(api, options.system_namespace)
                leader_tasks["xds certificates"] = self.xds_certificates.lead
        if options.webhook is not None and options.webhook.cert_dir is None:
            certificates = WebhookCertificates(api, options.webhook.target)
            self.certificates = certificates
            leader_tasks["webhook certificates"] = certificates.lead
        self.cluster = KubernetesControlPlane(api, self, identity=options.identity,
                                              system_namespace=options.system_namespace,
                                              watch_namespace=options.watch_namespace,
                                              target=target_for_group(GATEWAY, placement),
                                              elector=LeaderElector(api, namespace=options.system_namespace,
                                                                    name="modelroute", identity=options.identity,
                                                                    retry_period=options.lease_retry_s),
                                              leader_tasks=leader_tasks,
                                              on_endpoints=lambda: self._statuses_changed.set(),
                                              on_informer_lag=self.metrics.informer_lag.observe)
        routes = self.cluster.provider.informers[MODEL_ROUTE.kind]
        stats_host, _, stats_port = options.stats_address.rpartition(":")
        self.canary: ClusterCanaryWiring = ClusterCanaryWiring(self.loop, lambda: list(routes.cache.values()),
                                                               stats_host=stats_host or "0.0.0.0", stats_port=int(stats_port),
                                                               stats_tls=self.stats_tls.context if self.stats_tls else None)
        self.registry.register(VariantCollector(self.canary.stats))
        self.registry.register(CanaryCollector(lambda: self.canary.runner))
        self.plane: ControlPlane | None = None
        self.ratelimit: RunningService | None = None
        self._statuses: Mapping[ObjectKey, ObjectStatus] | None = None
        self._extras: Mapping[ObjectKey, Mapping[str, Any]] = {}
        self._statuses_changed: asyncio.Event = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.admin: web.AppRunner | None = None
        self.admin_port: int | None = None
        self.webhook: web.AppRunner | None = None
        self.webhook_port: int | None = None
        self._listed = False  # the provider's first snapshot arrived (the xDS cache is attached)

    async def start(self) -> None:
        options = self.options.ratelimit
        if options.redis_url is None:
            log.error("NO REDIS CONFIGURED for shared rate limits (set MODELROUTE_REDIS_URL or --redis-url): "
                      "rateLimit.global is not enforced as a shared limit; trying %s and, while it cannot be "
                      "reached, answering %s", DEFAULT_REDIS_URL,
                      "fail-open (every request allowed)" if options.fail_open
                      else "fail-closed (every request to a limited server refused)")
        self.ratelimit = await start_ratelimit_service(
            self.options.ratelimit_bind(), options, credentials=self.xds_tls.credentials() if self.xds_tls else None)
        await self.tracer.start()
        # debounce 0: the control loop debounces world changes, once, before compiling.
        self.plane = await start_control_plane(xds_address=f"{self.options.xds_host}:{self.options.xds_port}",
                                               admin_host=None, authorize=authorized_group,
                                               hooks=[self.loop.hooks], registry=self.registry,
                                               credentials=self.xds_tls.credentials() if self.xds_tls else None)
        host, port = split_address(self.options.admin_address)
        app = admin_app(ready=self.ready, debug=self.plane.debug, registry=self.registry)
        add_routes(app, self.experiments())
        self.admin, self.admin_port = await start_admin(app, host, port)
        await self.canary.start()
        self._tasks = [spawn(self.loop.debouncer.run(), name="control-loop"),
                       spawn(self.probe.run(), name="engine-probe"),
                       spawn(self.cluster.run(), name="kubernetes"),
                       spawn(self._write_statuses(), name="status-writer")]
        if self.xds_certificates is not None:
            self._tasks.append(spawn(self.xds_certificates.follower(self.use_tls).run(), name="xds certificate"))
        elif self.options.xds_tls == "files" and self.options.xds_tls_dir is not None:
            self._tasks.append(spawn(watch_tls_files(self.options.xds_tls_dir, self.use_tls), name="xds certificate files"))
        webhook = self.options.webhook
        if webhook is not None and self.webhook_tls is not None:
            host, port = split_address(webhook.address)
            self.webhook, self.webhook_port = await webhook_server.serve(host=host, port=port, tls=self.webhook_tls)
            if webhook.cert_dir is not None:
                self._tasks.append(spawn(webhook_server.watch_files(webhook.cert_dir, self.webhook_tls),
                                         name="webhook certificate files"))
            elif self.certificates is not None:
                follower = self.certificates.follower(self.webhook_tls.load)
                self._tasks.append(spawn(follower.run(), name="webhook certificate"))
        log.info("kubernetes mode up: xds_port=%s ratelimit_port=%s stats_port=%s admin_port=%s webhook_port=%s "
                 "identity=%s", self.plane.xds_port, self.ratelimit.port, self.canary.port, self.admin_port,
                 self.webhook_port, self.options.identity)

    def experiments(self) -> ExperimentSource:
        """What the experiment page reads of this replica (rollouts: the leader's runner, or
        the statuses it wrote)."""
        def views() -> list[RouteView]:
            compiled = self.loop.compiled.get(GATEWAY)
            return [] if compiled is None else route_views(compiled, self.loop.objects)

        return ExperimentSource(mode="kubernetes", views=views, rollouts=self.canary.rollouts,
                                stats=self.canary.stats, command=self.canary.command,
                                leading=lambda: self.canary.runner is not None, token=self.options.experiment_token)

    async def _leading(self) -> None:
        """A leader task: `modelroute_leader` is 1 while it runs."""
        self.metrics.leader.set(1)
        try:
            await asyncio.Event().wait()
        finally:
            self.metrics.leader.set(0)

    def ready(self) -> bool:
        """/readyz: the cluster as listed is compiled and served, and the webhook (if any)
        and the gateways' mTLS (if on) have their certificates."""
        serving = self.plane is not None and self._listed and self.plane.ready()
        return serving and self._tls_ready and (self.webhook_tls is None or self.webhook_tls.ready)

    def use_tls(self, material: TlsMaterial) -> None:
        """The mTLS material for the gateways' channels (xDS, rate limits, stats), from the
        CA Secret or the mounted files: the next handshake of each uses it."""
        if self.xds_tls is None or self.stats_tls is None:
            return
        self.xds_tls.update(material)
        self.stats_tls.load(KeyPair(material.cert_pem, material.key_pem), client_ca=material.client_ca_pem)
        self._tls_ready = True

    async def stop(self) -> None:
        await cancel_and_wait(*self._tasks)
        await self.probe.close()
        await self.loop.close()
        await self.canary.stop()
        for runner in (self.webhook, self.admin):
            if runner is not None:
                await runner.cleanup()
        if self.plane is not None:
            await self.plane.stop()
        if self.ratelimit is not None:
            await self.ratelimit.stop()
        await self.tracer.stop()

    # The world sink of the cluster side: the canary sees the routes before the engine does,
    # so a rollout's weights are in place for the compile of its route.
    def set_objects(self, objects: Sequence[Resource]) -> None:
        if not self._listed and self.plane is not None:
            # Until now the loop compiled an empty world (nothing listed yet): never serve it.
            self.loop.attach(self.plane.cache)
            self._listed = True
        self.canary.set_routes(objects)
        self.loop.set_objects(objects)
        self.probe.set_objects(objects)

    def set_endpoints(self, endpoints: Mapping[ObjectKey, tuple[BackendEndpoint, ...]]) -> None:
        self.probe.set_endpoints(endpoints)

    def _on_status(self, compiled: Compiled, statuses: Mapping[ObjectKey, ObjectStatus]) -> None:
        if self.ratelimit is not None and compiled.gateway is not None:  # the unscoped compile
            self.ratelimit.service.set_limits(cluster_limits([compiled.gateway]))
        self._statuses, self._extras = self.canary.status(statuses)
        self._statuses_changed.set()

    async def _write_statuses(self) -> None:
        while True:
            await self._statuses_changed.wait()
            self._statuses_changed.clear()
            if self._statuses is not None:
                written = await self.cluster.write_statuses(self._statuses, self._extras)
                if written:
                    log.info("statuses written: count=%d", written)
