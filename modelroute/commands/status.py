"""`modelroute status`: objects, phases, conditions and live splits, as last written by
`modelroute up` (embedded mode keeps status in DIR/.modelroute/status.json)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from controller.status_view import StatusUnavailable, read_status, render_status


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("status", help="show routes, live splits and canary state")
    p.add_argument("--dir", type=Path, default=Path("examples/quickstart"),
                   help="the directory `modelroute up` serves")
    p.add_argument("-o", "--output", choices=["text", "json"], default="text")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        doc = read_status(args.dir / ".modelroute")
    except StatusUnavailable as err:
        print(f"modelroute status: {err}")
        return 1
    print(json.dumps(doc, indent=1) if args.output == "json" else render_status(doc), end="")
    return 0
