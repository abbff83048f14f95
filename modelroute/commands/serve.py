"""`modelroute serve --provider file|kubernetes`: the control plane alone. Envoys anywhere
connect to the xDS port with a bootstrap from `envoy/` (gateway or sidecar role).

With the file provider, the ModelInfers of the directory still run as local replicas
(their endpoints are what the Envoys route to); only Envoy itself is not started.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
from pathlib import Path

from controller.run_lock import AlreadyServed
from modelroute.embedded import Embedded, EmbeddedOptions
from modelroute.logs import add_log_level_option, configure_logging


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="control plane only: xDS server fed by a provider (file or kubernetes)")
    p.add_argument("--provider", choices=["file", "kubernetes"], default="file")
    p.add_argument("--dir", type=Path, default=Path("examples/quickstart"), help="manifests (file provider)")
    p.add_argument("--xds-address", default="0.0.0.0:18000", help="HOST:PORT the xDS server binds")
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
    add_log_level_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    configure_logging(args.log_level)
    host, _, port = args.xds_address.rpartition(":")
    if args.provider == "kubernetes":
        if not port.isdigit():
            print(f"modelroute serve: --xds-address must be HOST:PORT (got {args.xds_address})")
            return 2
        return asyncio.run(_serve_kubernetes(args, host or "0.0.0.0", int(port)))
    if not args.dir.is_dir() or not port.isdigit():
        print(f"modelroute serve: need an existing --dir and --xds-address HOST:PORT (got {args.dir}, {args.xds_address})")
        return 2
    options = EmbeddedOptions(directory=args.dir.resolve(), xds_host=host or "0.0.0.0", xds_port=int(port),
                              listen_address=args.listen_address, start_envoy=False)
    return asyncio.run(_serve(options))


async def _serve(options: EmbeddedOptions) -> int:
    app = Embedded(options)

    def started() -> None:
        assert app.plane is not None
        print(f"xDS on {options.xds_host}:{app.plane.xds_port}, admin on 127.0.0.1:{app.plane.admin_port} "
              f"(/healthz /readyz /metrics /debug/nodes); Ctrl-C to stop", flush=True)

    try:
        await app.serve_until_signalled(started)
    except AlreadyServed as err:
        print(f"modelroute serve: {err}")
        return 1
    return 0


async def _serve_kubernetes(args: argparse.Namespace, host: str, port: int) -> int:
    from controller.kubernetes.client import KubeClient
    from controller.kubernetes.errors import ConfigError
    from controller.ratelimit_service import ServiceOptions
    from modelroute.kubernetes_mode import KubernetesMode, KubernetesOptions

    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    try:
        client = KubeClient.from_kubeconfig(args.kubeconfig)
    except ConfigError as err:
        print(f"modelroute serve: {err}")
        return 2
    async with client as api:
        ratelimit = ServiceOptions(redis_url=args.redis_url, fail_open=args.ratelimit_failure_mode == "open")
        mode = KubernetesMode(api, KubernetesOptions(identity=args.identity, system_namespace=args.system_namespace,
                                                     xds_host=host, xds_port=port, watch_namespace=args.namespace,
                                                     ratelimit_address=args.ratelimit_address,
                                                     ratelimit=ratelimit, stats_address=args.stats_address))
        try:
            await mode.start()
            assert mode.plane is not None
            assert mode.ratelimit is not None
            print(f"xDS on {host}:{mode.plane.xds_port}, rate-limit service on port {mode.ratelimit.port}, "
                  f"stats (statsd, UDP+TCP) on port {mode.canary.port} (kubernetes provider, identity "
                  f"{args.identity}); Ctrl-C to stop", flush=True)
            await stop.wait()
        finally:
            await mode.stop()
    return 0
