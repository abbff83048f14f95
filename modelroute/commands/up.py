"""`modelroute up [DIR]`: embedded mode — Envoy, control plane and local model replicas
serving DIR's manifests; edits to DIR change live traffic. Ctrl-C stops every child.

A second `up` on the same directory or ports exits at once (code 1) naming the process
that holds them."""

from __future__ import annotations

import argparse
import asyncio
import logging
from pathlib import Path

from controller.local.envoy_process import EnvoyError
from controller.local.instance import InstanceConflict, split_address
from controller.local.status_view import read_status, render_status
from modelroute.embedded import Embedded, EmbeddedOptions
from modelroute.experiment_page import read_token
from modelroute.logs import add_log_level_option, configure_logging


def add_admin_options(parser: argparse.ArgumentParser, *, default: str) -> None:
    """`--admin-address` and `--experiment-token-file` (shared by `up` and `serve`)."""
    parser.add_argument("--admin-address", default=default,
                        help=f"HOST:PORT of /healthz, /readyz, /metrics, /debug/nodes and the experiment page "
                             f"/experiments (default {default})")
    parser.add_argument("--experiment-token-file", type=Path, default=None,
                        help="a file holding a token: the experiment page may then promote and abort rollouts for "
                             "requests that carry it (Authorization: Bearer); without it the page is read-only")
    parser.add_argument("--otlp-endpoint", default=None,
                        help="HOST:PORT of an OpenTelemetry collector (OTLP/gRPC): the gateways trace requests and "
                             "the control plane its pushes there (default: no tracing)")
    parser.add_argument("--trace-sampling", type=float, default=100.0,
                        help="percent of new requests the gateways trace (with --otlp-endpoint; default 100)")


def admin_settings(args: argparse.Namespace, command: str) -> tuple[str, str | None] | str:
    """(admin address, token) from the options, or the usage error to print."""
    try:
        split_address(args.admin_address)
        if args.otlp_endpoint is not None:
            split_address(args.otlp_endpoint)
        if not 0 <= args.trace_sampling <= 100:
            raise ValueError(f"--trace-sampling must be a percentage (0..100), not {args.trace_sampling:g}")
        return args.admin_address, read_token(args.experiment_token_file)
    except (ValueError, OSError) as err:
        return f"modelroute {command}: {err}"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("up", help="embedded mode: serve a directory of manifests through a local Envoy")
    p.add_argument("directory", nargs="?", default="examples/quickstart", type=Path)
    p.add_argument("--xds-port", type=int, default=18000, help="control plane port on 127.0.0.1 (0: any free)")
    p.add_argument("--listen-address", default="127.0.0.1",
                   help="address the gateway's listeners bind (0.0.0.0 to expose them)")
    p.add_argument("--privileged-port-offset", type=int, default=None,
                   help="added to manifest ports below 1024 (default: 0 as root, else 10000)")
    ads = p.add_mutually_exclusive_group()
    ads.add_argument("--sotw", dest="delta", action="store_false",
                     help="Envoy subscribes state-of-the-world (GRPC) instead of delta (DELTA_GRPC, the default)")
    ads.add_argument("--delta", dest="delta", action="store_true", help=argparse.SUPPRESS)  # (the default)
    add_admin_options(p, default="127.0.0.1:19001")
    add_log_level_option(p)
    p.set_defaults(func=run, delta=True)


def run(args: argparse.Namespace) -> int:
    configure_logging(args.log_level, args.log_format)
    if not args.directory.is_dir():
        print(f"modelroute up: {args.directory} is not a directory")
        return 2
    admin = admin_settings(args, "up")
    if isinstance(admin, str):
        print(admin)
        return 2
    options = EmbeddedOptions(directory=args.directory.resolve(), xds_port=args.xds_port,
                              listen_address=args.listen_address,
                              privileged_port_offset=args.privileged_port_offset, delta=args.delta,
                              admin_address=admin[0], experiment_token=admin[1], otlp_endpoint=args.otlp_endpoint,
                              trace_sampling=args.trace_sampling)
    return asyncio.run(_serve(options))


async def _serve(options: EmbeddedOptions) -> int:
    app = Embedded(options)

    async def started() -> None:
        try:
            await app.wait_ready(timeout=30)
        except asyncio.TimeoutError:
            logging.getLogger("modelroute.embedded").warning("not every replica is ready or accepted by Envoy yet")
        print(render_status(read_status(options.run_dir)), flush=True)
        host = options.admin_address.rpartition(":")[0]
        print(f"experiments: http://{host}:{app.admin_port}/experiments, metrics: http://{host}:{app.admin_port}"
              f"/metrics", flush=True)
        print(f"serving {options.directory}; edit its files to change traffic, "
              f"`modelroute status --dir {options.directory}` for status, Ctrl-C to stop", flush=True)

    try:
        await app.serve_until_signalled(started)
    except (InstanceConflict, EnvoyError) as err:
        print(f"modelroute up: {err}", flush=True)
        return 1
    return 0
