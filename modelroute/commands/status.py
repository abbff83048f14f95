"""`modelroute status`: objects, phases, conditions, live splits and canary state.

Embedded mode: as last written by `modelroute up` (DIR/.modelroute/status.json). When no
`modelroute up` serves DIR any more (its lock, `controller.local.instance`, is free), the last
status is still shown, under a line saying so, and the exit code is 1: nothing in it is
live. `--kubernetes`: as the control plane wrote it into the cluster's objects.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from datetime import datetime, timezone
from pathlib import Path

from controller.local.instance import holder
from controller.local.status_view import StatusDocument, StatusUnavailable, read_status, render_status, run_dir


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("status", help="show routes, live splits and canary state")
    p.add_argument("--dir", type=Path, default=Path("examples/quickstart"),
                   help="the directory `modelroute up` serves")
    p.add_argument("--kubernetes", action="store_true", help="read status from a cluster (kubeconfig)")
    p.add_argument("--namespace", default=None, help="--kubernetes: one namespace (default: all)")
    p.add_argument("--kubeconfig", default=None, help="--kubernetes: default $KUBECONFIG or in-cluster")
    p.add_argument("-o", "--output", choices=["text", "json"], default="text")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        doc = asyncio.run(_from_cluster(args)) if args.kubernetes else read_status(run_dir(args.dir))
    except StatusUnavailable as err:
        print(f"modelroute status: {err}")
        return 1
    live = args.kubernetes or holder(args.dir / ".modelroute") is not None
    if args.output == "json":
        print(json.dumps({**doc, "running": live}, indent=1))
    else:
        if not live:
            print(not_running(args.dir, doc["updatedAt"]))
        print(render_status(doc), end="")
    return 0 if live else 1


def not_running(directory: Path, updated: str) -> str:
    return (f"NOT RUNNING: no `modelroute up` serves {directory}; below is the last status it wrote "
            f"({updated}), nothing in it is live.")


async def _from_cluster(args: argparse.Namespace) -> StatusDocument:
    from controller.kubernetes.client import KubeClient
    from controller.kubernetes.errors import ApiError, ConfigError
    from controller.kubernetes.resources import ENGINE_KINDS
    from modelroute.cluster_status import KINDS, document

    try:
        client = KubeClient.from_kubeconfig(args.kubeconfig)
    except ConfigError as err:
        raise StatusUnavailable(str(err)) from None
    try:
        async with client as api:
            objects = {kind: (await api.list(ENGINE_KINDS[kind], namespace=args.namespace)).items for kind in KINDS}
    except ApiError as err:
        raise StatusUnavailable(f"cannot list MatrixInfer objects: {err}") from None
    return document(objects, now=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))
