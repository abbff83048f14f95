"""Kubernetes mode (`modelroute serve --provider kubernetes`): the same application as
embedded mode (`modelroute.app.App`), fed by the cluster instead of a directory.

    API server ──► KubernetesProvider ──► App (ControlLoop) ──► xDS server ──► Envoy gateways
       ▲                                   │       │
       │           KubernetesControlPlane ◄┘ state │ statuses
       └────────── (leader: workloads, gateway     ▼
                    Services, status) ◄──── ClusterStatusSink

The app gets three parts from here: the Kubernetes provider (informers: objects,
EndpointSlices, errors), the cluster side as workload runtime
(`controller.kubernetes.runtime`: leader election; the leader's Deployments, gateway
Services and ValidationFailed statuses) and the cluster status sink. Every replica
serves xDS; only the leader writes (Deployments, Services, status). Status writes are
network calls, so they run in their own task and always write the newest statuses: a
burst of compiles costs one round of writes, not one per compile.

Shared rate limits (`rateLimit.global`): every replica runs the app's rate-limit service
(gRPC, `ratelimit_address`, by default the xDS port + 1: the gateway bootstrap's
`modelroute_ratelimit` cluster), fed with the limits of each gateway compile. The
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
state for the same reason (the app does so in every mode).

Gateways run unprivileged: manifest ports below 1024 get `privileged_port_offset` (the
gateway Service maps the port back), one exposure per port (`Target.one_exposure_per_port`),
and every gateway snapshot carries the readiness listener on `gateway_readiness_port`
(`routing_engine.readiness`); that port and the gateway's admin port are reserved.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from aiohttp import web

from controller.certs.pki import KeyPair
from controller.certs.tls import ServingTls, untrusted_material, watch_tls_files
from controller.kubernetes import webhook_server
from controller.kubernetes.interface import KubeApi, Obj
from controller.kubernetes.leader import LeaderElector
from controller.kubernetes.provider import KubernetesProvider
from controller.kubernetes.resources import (AUTOSCALING_POLICY, ENGINE_KINDS, MODEL, MODEL_INFER, MODEL_ROUTE,
                                             ResourceType)
from controller.kubernetes.runtime import KubernetesControlPlane
from controller.kubernetes.webhook_certs import WebhookCertificates, WebhookTarget
from controller.kubernetes.xds_certs import XdsCertificates
from controller.local.instance import split_address
from controller.ratelimit.service import DEFAULT_REDIS_URL, ServiceOptions
from kit.tasks import cancel_and_wait, spawn
from modelroute.app import App, AppOptions, RunMode
from modelroute.canary_wiring import ClusterCanaryWiring
from modelroute.targets import GATEWAY, Placement, target_for_group
from routing_engine.api.resources import ObjectKey
from routing_engine.plugins import Plugin, extension_models
from routing_engine.world import Compiled, ObjectStatus
from xds_server.tls import ServerTls, TlsMaterial

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


class KubernetesMode(RunMode):
    # Set in __init__ after the leader tasks and the cluster side that refer to them.
    canary: ClusterCanaryWiring
    status: ClusterStatusSink

    def __init__(self, api: KubeApi, options: KubernetesOptions) -> None:
        self.options = options
        placement = placement_of(options)
        # The server side of the mTLS with the gateways: a throwaway certificate nobody
        # trusts until the real material arrives (handshakes fail meanwhile; /readyz says so).
        self.xds_tls: ServerTls | None = None
        self.stats_tls: ServingTls | None = None
        self.xds_certificates: XdsCertificates | None = None
        self._tls_ready = options.xds_tls == "off"
        if options.xds_tls != "off":
            self.xds_tls = ServerTls(untrusted_material())
            self.stats_tls = ServingTls(name="stats")
        self.app = App(AppOptions(
            mode="kubernetes", placement=placement, xds_address=f"{options.xds_host}:{options.xds_port}",
            ratelimit_address=options.ratelimit_bind(), ratelimit=options.ratelimit,
            admin_address=options.admin_address, experiment_token=options.experiment_token, plugins=options.plugins,
            otlp_endpoint=options.otlp_endpoint, trace_sampling=options.trace_sampling), tls=self.xds_tls)
        self.webhook_tls: ServingTls | None = ServingTls() if options.webhook is not None else None
        self.certificates: WebhookCertificates | None = None
        leader_tasks = {"canary runner": lambda: self.canary.lead(), "leader metric": self._leading}
        if options.xds_tls == "auto":
            self.xds_certificates = XdsCertificates(api, options.system_namespace)
            leader_tasks["xds certificates"] = self.xds_certificates.lead
        if options.webhook is not None and options.webhook.cert_dir is None:
            certificates = WebhookCertificates(api, options.webhook.target)
            self.certificates = certificates
            leader_tasks["webhook certificates"] = certificates.lead
        self.provider = KubernetesProvider(api, namespace=options.watch_namespace,
                                           on_lag=self.app.metrics.informer_lag.observe)
        self.cluster = KubernetesControlPlane(api, identity=options.identity,
                                              system_namespace=options.system_namespace,
                                              watch_namespace=options.watch_namespace,
                                              target=target_for_group(GATEWAY, placement),
                                              elector=LeaderElector(api, namespace=options.system_namespace,
                                                                    name="modelroute", identity=options.identity,
                                                                    retry_period=options.lease_retry_s),
                                              leader_tasks=leader_tasks, on_endpoints=lambda: self.status.changed(),
                                              current=self._cached, shared_informers={
                                                  ENGINE_KINDS[kind]: self.provider.informers[kind]
                                                  for kind in (MODEL_INFER.kind, MODEL.kind, AUTOSCALING_POLICY.kind)})
        routes = self.provider.informers[MODEL_ROUTE.kind]
        stats_host, _, stats_port = options.stats_address.rpartition(":")
        self.canary: ClusterCanaryWiring = ClusterCanaryWiring(
            self.loop, lambda: list(routes.cache.values()), stats_host=stats_host or "0.0.0.0",
            stats_port=int(stats_port), stats_tls=self.stats_tls.context if self.stats_tls else None,
            version=lambda: routes.resource_version or None)
        self.status = ClusterStatusSink(self.cluster, self.canary)
        self.app.plug(provider=self.provider, workloads=self.cluster, status=self.status, canary=self.canary,
                      ready=self._certificates_ready)
        self._tasks: list[asyncio.Task[None]] = []
        self.webhook: web.AppRunner | None = None
        self.webhook_port: int | None = None

    async def start(self) -> None:
        options = self.options.ratelimit
        if options.redis_url is None:
            log.error("NO REDIS CONFIGURED for shared rate limits (set MODELROUTE_REDIS_URL or --redis-url): "
                      "rateLimit.global is not enforced as a shared limit; trying %s and, while it cannot be "
                      "reached, answering %s", DEFAULT_REDIS_URL,
                      "fail-open (every request allowed)" if options.fail_open
                      else "fail-closed (every request to a limited server refused)")
        self._tasks = [spawn(self.status.run(), name="status-writer")]
        await self.app.start()
        if self.xds_certificates is not None:
            self._tasks.append(spawn(self.xds_certificates.follower(self.use_tls).run(), name="xds certificate"))
        elif self.options.xds_tls == "files" and self.options.xds_tls_dir is not None:
            self._tasks.append(spawn(watch_tls_files(self.options.xds_tls_dir, self.use_tls), name="xds certificate files"))
        webhook = self.options.webhook
        if webhook is not None and self.webhook_tls is not None:
            host, port = split_address(webhook.address)
            self.webhook, self.webhook_port = await webhook_server.serve(
                host=host, port=port, tls=self.webhook_tls, extensions=extension_models(self.app.loop.plugins))
            if webhook.cert_dir is not None:
                self._tasks.append(spawn(webhook_server.watch_files(webhook.cert_dir, self.webhook_tls),
                                         name="webhook certificate files"))
            elif self.certificates is not None:
                follower = self.certificates.follower(self.webhook_tls.load)
                self._tasks.append(spawn(follower.run(), name="webhook certificate"))
        assert self.plane is not None and self.ratelimit is not None
        log.info("kubernetes mode up: xds_port=%s ratelimit_port=%s stats_port=%s admin_port=%s webhook_port=%s "
                 "identity=%s", self.plane.xds_port, self.ratelimit.port, self.canary.port, self.admin_port,
                 self.webhook_port, self.options.identity)

    def _cached(self, rtype: ResourceType, namespace: str, name: str) -> Obj | None:
        """An engine object as the provider's informer caches it (status included)."""
        informer = self.provider.informers.get(rtype.kind)
        return informer.get(namespace, name) if informer is not None else None

    async def _leading(self) -> None:
        """A leader task: `modelroute_leader` is 1 while it runs."""
        self.app.metrics.leader.set(1)
        try:
            await asyncio.Event().wait()
        finally:
            self.app.metrics.leader.set(0)

    def _certificates_ready(self) -> bool:
        """What else /readyz waits for: the webhook (if any) and the gateways' mTLS (if on)
        have their certificates."""
        return self._tls_ready and (self.webhook_tls is None or self.webhook_tls.ready)

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
        await self.app.stop()
        if self.webhook is not None:
            await self.webhook.cleanup()


class ClusterStatusSink:
    """Kubernetes mode's status sink: the engine's statuses with each rollout's status
    fields, written by the leader (`KubernetesControlPlane.write_statuses`, which also
    tells every replica which ModelServers get a gateway Service) in a task of its own
    (`run`) that always writes the newest."""

    def __init__(self, cluster: KubernetesControlPlane, canary: ClusterCanaryWiring) -> None:
        self._cluster = cluster
        self._canary = canary
        self._statuses: Mapping[ObjectKey, ObjectStatus] | None = None
        self._extras: Mapping[ObjectKey, Mapping[str, Any]] = {}
        self._changed = asyncio.Event()

    def changed(self) -> None:
        """Write the statuses again (a gateway Service's endpoint changed)."""
        self._changed.set()

    def publish(self, compiled: Compiled, statuses: Mapping[ObjectKey, ObjectStatus]) -> None:
        self._statuses, self._extras = self._canary.status(statuses)
        self._changed.set()

    async def run(self) -> None:
        while True:
            await self._changed.wait()
            self._changed.clear()
            if self._statuses is not None:
                written = await self._cluster.write_statuses(self._statuses, self._extras)
                if written:
                    log.info("statuses written: count=%d", written)
