"""`modelroute serve --provider file|kubernetes`: the control plane alone. Envoys anywhere
connect to the xDS port with a bootstrap from `envoy/` (gateway or sidecar role).

With the file provider, the ModelInfers of the directory still run as local replicas
(their endpoints are what the Envoys route to); only Envoy itself is not started.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from modelroute.embedded import Embedded, EmbeddedOptions
from modelroute.logs import configure_logging


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="control plane only: xDS server fed by a provider (file or kubernetes)")
    p.add_argument("--provider", choices=["file", "kubernetes"], default="file")
    p.add_argument("--dir", type=Path, default=Path("examples/quickstart"), help="manifests (file provider)")
    p.add_argument("--xds-address", default="0.0.0.0:18000", help="HOST:PORT the xDS server binds")
    p.add_argument("--listen-address", default="0.0.0.0", help="address gateway listeners bind")
    p.add_argument("--log-level", default="info")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    configure_logging(args.log_level)
    if args.provider == "kubernetes":
        print("modelroute serve: the kubernetes provider is not wired yet (issue #6)")
        return 2
    host, _, port = args.xds_address.rpartition(":")
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

    await app.serve_until_signalled(started)
    return 0
