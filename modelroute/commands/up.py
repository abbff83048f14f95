"""`modelroute up [DIR]`: embedded mode — Envoy, control plane and local model replicas
serving DIR's manifests; edits to DIR change live traffic. Ctrl-C stops every child.

A second `up` on the same directory or ports exits at once (code 1) naming the process
that holds them."""

from __future__ import annotations

import argparse
import asyncio
import logging
from pathlib import Path

from controller.envoy_process import EnvoyError
from controller.instance import InstanceConflict
from controller.status_view import read_status, render_status
from modelroute.embedded import Embedded, EmbeddedOptions
from modelroute.logs import add_log_level_option, configure_logging


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("up", help="embedded mode: serve a directory of manifests through a local Envoy")
    p.add_argument("directory", nargs="?", default="examples/quickstart", type=Path)
    p.add_argument("--xds-port", type=int, default=18000, help="control plane port on 127.0.0.1 (0: any free)")
    p.add_argument("--listen-address", default="127.0.0.1",
                   help="address the gateway's listeners bind (0.0.0.0 to expose them)")
    p.add_argument("--privileged-port-offset", type=int, default=None,
                   help="added to manifest ports below 1024 (default: 0 as root, else 10000)")
    p.add_argument("--delta", action="store_true", help="Envoy uses delta xDS")
    add_log_level_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    configure_logging(args.log_level)
    if not args.directory.is_dir():
        print(f"modelroute up: {args.directory} is not a directory")
        return 2
    options = EmbeddedOptions(directory=args.directory.resolve(), xds_port=args.xds_port,
                              listen_address=args.listen_address,
                              privileged_port_offset=args.privileged_port_offset, delta=args.delta)
    return asyncio.run(_serve(options))


async def _serve(options: EmbeddedOptions) -> int:
    app = Embedded(options)

    async def started() -> None:
        try:
            await app.wait_ready(timeout=30)
        except asyncio.TimeoutError:
            logging.getLogger("modelroute.embedded").warning("not every replica is ready or accepted by Envoy yet")
        print(render_status(read_status(options.run_dir)), flush=True)
        print(f"serving {options.directory}; edit its files to change traffic, "
              f"`modelroute status --dir {options.directory}` for status, Ctrl-C to stop", flush=True)

    try:
        await app.serve_until_signalled(started)
    except (InstanceConflict, EnvoyError) as err:
        print(f"modelroute up: {err}", flush=True)
        return 1
    return 0
