"""`modelroute serve --provider file|kubernetes`: the control plane alone. Envoys anywhere
connect to the xDS port with a bootstrap from `envoy/` (gateway or sidecar role).

With the file provider, the ModelInfers of the directory still run as local replicas
(their endpoints are what the Envoys route to); only Envoy itself is not started.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import os
import signal
import socket
from pathlib import Path
from typing import Literal

from controller.local.instance import InstanceConflict
from modelroute.commands.up import add_admin_options, admin_settings
from modelroute.embedded import UNPRIVILEGED_OFFSET, Embedded, EmbeddedOptions
from modelroute.logs import add_log_level_option, configure_logging

XdsTls = Literal["auto", "files", "off"]  # --xds-tls


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("serve", help="control plane only: xDS server fed by a provider (file or kubernetes)")
    p.add_argument("--provider", choices=["file", "kubernetes"], default="file")
    p.add_argument("--dir", type=Path, default=Path("examples/quickstart"), help="manifests (file provider)")
    p.add_argument("--xds-address", default=None,
                   help="HOST:PORT the xDS server binds (default: 0.0.0.0:18000 for the kubernetes provider, "
                        "127.0.0.1:18000 for the file provider)")
    p.add_argument("--xds-tls", choices=["auto", "files", "off"], default=None,
                   help="mTLS with the Envoys on the xDS, rate-limit and stats ports: auto (kubernetes default: "
                        "the control plane issues and rotates the certificates), files (tls.crt, tls.key, ca.crt "
                        "in --xds-tls-dir), off (plaintext; file provider default, loopback only unless "
                        "--xds-insecure)")
    p.add_argument("--xds-tls-dir", type=Path, default=None,
                   help="the server certificate, key and client CA for --xds-tls files (reloaded on change)")
    p.add_argument("--xds-insecure", action="store_true",
                   help="allow plaintext xDS on a non-loopback address: every peer that can reach the port "
                        "gets configuration, API keys and TLS keys included")
    p.add_argument("--listen-address", default="0.0.0.0", help="address gateway listeners bind")
    p.add_argument("--kubeconfig", default=None, help="kubernetes provider: default $KUBECONFIG or in-cluster")
    p.add_argument("--namespace", default=None, help="kubernetes provider: watch one namespace (default: all)")
    p.add_argument("--system-namespace", default=os.environ.get("POD_NAMESPACE", "matrixinfer-system"),
                   help="kubernetes provider: where the leader Lease and gateway Services live")
    p.add_argument("--identity", default=os.environ.get("POD_NAME", socket.gethostname()),
                   help="kubernetes provider: this replica's leader-election identity")
    p.add_argument("--ratelimit-address", default=None,
                   help="kubernetes provider: HOST:PORT of the shared rate-limit service (gRPC; default: the xDS "
                        "host and port + 1, where the gateway bootstrap points)")
    p.add_argument("--redis-url", default=os.environ.get("MODELROUTE_REDIS_URL") or None,
                   help="kubernetes provider: Redis of the shared rate limits (default $MODELROUTE_REDIS_URL)")
    p.add_argument("--ratelimit-failure-mode", choices=["open", "closed"],
                   default=os.environ.get("MODELROUTE_RATELIMIT_FAILURE_MODE", "open").strip().lower() or "open",
                   help="kubernetes provider: Redis unreachable: allow (open) or refuse limited requests (closed)")
    p.add_argument("--stats-address", default="0.0.0.0:18002",
                   help="kubernetes provider: HOST:PORT where gateway Envoys push their stats (statsd) for canary "
                        "analysis")
    add_admin_options(p, default="0.0.0.0:19001")
    p.add_argument("--webhook-address", default=None,
                   help="kubernetes provider: HOST:PORT of the HTTPS admission webhook (default: none)")
    p.add_argument("--webhook-cert-dir", type=Path, default=None,
                   help="kubernetes provider: tls.crt/tls.key written by another issuer (e.g. a mounted cert-manager "
                        "Secret), reloaded on change; default: the control plane issues and rotates the certificate")
    p.add_argument("--webhook-service", default="modelroute-webhook",
                   help="kubernetes provider: the webhook's Service (its DNS names go into the certificate)")
    p.add_argument("--webhook-secret", default="modelroute-webhook-cert",
                   help="kubernetes provider: the Secret the control plane keeps the webhook CA and certificate in")
    p.add_argument("--webhook-configurations", default="modelroute-validate,modelroute-defaults",
                   help="kubernetes provider: webhook configurations whose caBundle the control plane writes")
    p.add_argument("--privileged-port-offset", type=int, default=UNPRIVILEGED_OFFSET,
                   help="kubernetes provider: added to manifest ports below 1024, so unprivileged gateways bind "
                        "them (the gateway Services map them back); 0 for gateways that may bind them")
    p.add_argument("--gateway-readiness-port", type=int, default=None,
                   help="kubernetes provider: port of the readiness listener pushed to every gateway (its "
                        "readinessProbe's port; default: none)")
    add_log_level_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    configure_logging(args.log_level, args.log_format)
    kubernetes = args.provider == "kubernetes"
    address = args.xds_address or ("0.0.0.0:18000" if kubernetes else "127.0.0.1:18000")
    host, _, port = address.rpartition(":")
    tls: XdsTls = args.xds_tls or ("auto" if kubernetes else "off")
    if tls == "files" and (args.xds_tls_dir is None or not args.xds_tls_dir.is_dir()):
        print(f"modelroute serve: --xds-tls files needs --xds-tls-dir DIR with tls.crt, tls.key, ca.crt "
              f"(got {args.xds_tls_dir})")
        return 2
    if tls == "auto" and not kubernetes:
        print("modelroute serve: --xds-tls auto needs the kubernetes provider (its Secrets hold the CA); "
              "use --xds-tls files")
        return 2
    if tls == "off" and not _loopback(host) and not args.xds_insecure:
        print(f"modelroute serve: plaintext xDS on {address} would give every peer that reaches it the whole "
              "configuration (API keys and TLS keys included): use --xds-tls, or --xds-insecure to accept that")
        return 2
    admin = admin_settings(args, "serve")
    if isinstance(admin, str):
        print(admin)
        return 2
    if kubernetes:
        if not port.isdigit():
            print(f"modelroute serve: --xds-address must be HOST:PORT (got {address})")
            return 2
        return asyncio.run(_serve_kubernetes(args, host or "0.0.0.0", int(port), tls, admin[1]))
    if not args.dir.is_dir() or not port.isdigit():
        print(f"modelroute serve: need an existing --dir and --xds-address HOST:PORT (got {args.dir}, {address})")
        return 2
    options = EmbeddedOptions(directory=args.dir.resolve(), xds_host=host or "0.0.0.0", xds_port=int(port),
                              listen_address=args.listen_address, start_envoy=False, admin_address=admin[0],
                              experiment_token=admin[1], otlp_endpoint=args.otlp_endpoint,
                              trace_sampling=args.trace_sampling,
                              xds_tls_dir=args.xds_tls_dir if tls == "files" else None)
    return asyncio.run(_serve(options))


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host == "localhost"


async def _serve(options: EmbeddedOptions) -> int:
    app = Embedded(options)

    def started() -> None:
        assert app.plane is not None
        print(f"xDS on {options.xds_host}:{app.plane.xds_port}, admin on {options.admin_address.rpartition(':')[0]}:"
              f"{app.admin_port} (/healthz /readyz /metrics /debug/nodes /experiments); Ctrl-C to stop", flush=True)

    try:
        await app.serve_until_signalled(started)
    except InstanceConflict as err:
        print(f"modelroute serve: {err}", flush=True)
        return 1
    return 0


async def _serve_kubernetes(args: argparse.Namespace, host: str, port: int, tls: XdsTls, token: str | None) -> int:
    from controller.kubernetes.client import KubeClient
    from controller.kubernetes.errors import ConfigError
    from controller.kubernetes.webhook_certs import WebhookTarget
    from controller.ratelimit.service import ServiceOptions
    from controller.local.instance import split_address
    from modelroute.kubernetes_mode import KubernetesMode, KubernetesOptions, WebhookOptions

    for flag in ("admin_address", "stats_address", "ratelimit_address", "webhook_address"):
        value = getattr(args, flag)
        try:
            if value is not None:
                split_address(value)
        except ValueError as err:
            print(f"modelroute serve: --{flag.replace('_', '-')}: {err}")
            return 2
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    try:
        client = KubeClient.from_kubeconfig(args.kubeconfig)
    except ConfigError as err:
        print(f"modelroute serve: {err}")
        return 2
    webhook = None
    if args.webhook_address is not None:
        target = WebhookTarget(namespace=args.system_namespace, service=args.webhook_service,
                               secret=args.webhook_secret,
                               configurations=tuple(n.strip() for n in args.webhook_configurations.split(",")
                                                    if n.strip()))
        webhook = WebhookOptions(address=args.webhook_address, target=target, cert_dir=args.webhook_cert_dir)
    async with client as api:
        ratelimit = ServiceOptions(redis_url=args.redis_url, fail_open=args.ratelimit_failure_mode == "open")
        mode = KubernetesMode(api, KubernetesOptions(identity=args.identity, system_namespace=args.system_namespace,
                                                     xds_host=host, xds_port=port, watch_namespace=args.namespace,
                                                     listen_address=args.listen_address,
                                                     ratelimit_address=args.ratelimit_address,
                                                     ratelimit=ratelimit, stats_address=args.stats_address,
                                                     admin_address=args.admin_address, webhook=webhook,
                                                     privileged_port_offset=args.privileged_port_offset,
                                                     gateway_readiness_port=args.gateway_readiness_port,
                                                     xds_tls=tls, xds_tls_dir=args.xds_tls_dir,
                                                     experiment_token=token, otlp_endpoint=args.otlp_endpoint,
                                                     trace_sampling=args.trace_sampling))
        try:
            await mode.start()
            assert mode.plane is not None
            assert mode.ratelimit is not None
            webhook_note = f", webhook (HTTPS) on port {mode.webhook_port}" if mode.webhook_port is not None else ""
            channels = "mTLS" if tls != "off" else "plaintext"
            stats = "TCP, mTLS" if tls != "off" else "UDP+TCP"
            print(f"xDS ({channels}) on {host}:{mode.plane.xds_port}, rate-limit service on port {mode.ratelimit.port}, "
                  f"stats (statsd, {stats}) on port {mode.canary.port}, admin (/healthz /readyz /metrics /experiments) "
                  "on port "
                  f"{mode.admin_port}{webhook_note} (kubernetes provider, identity {args.identity}); Ctrl-C to stop",
                  flush=True)
            await stop.wait()
        finally:
            await mode.stop()
    return 0
