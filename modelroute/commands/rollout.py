"""`modelroute rollout status|promote|abort|pause|resume ROUTE [--dir DIR]`: canary control
of a running `modelroute up DIR` (SPEC 3.4, 4).

`status` reads the status `modelroute up` writes (phase, live split, last decision, A/B
report). The other actions go through the command queue under `DIR/.modelroute/rollout/`
(`controller.canary_commands`): the command is queued, the running canary runner applies
it within a fraction of a second and replies; with no answer within `--wait` seconds the
command is withdrawn and the exit code is 1, so nothing is applied later by surprise.
ROUTE is `name` (namespace `default`) or `namespace/name`.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from controller import canary_commands
from controller.ab_report import render as render_report
from controller.canary import COMMANDS
from controller.status_view import StatusUnavailable, read_status

ACTIONS = ("status", *COMMANDS)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("rollout", help="canary control: status, promote, abort, pause, resume")
    p.add_argument("action", choices=ACTIONS)
    p.add_argument("route", help="the ModelRoute: name or namespace/name")
    p.add_argument("--dir", type=Path, default=Path("examples/quickstart"),
                   help="the directory `modelroute up` serves")
    p.add_argument("--wait", type=float, default=10.0, help="seconds to wait for `modelroute up` to apply it")
    p.add_argument("-o", "--output", choices=["text", "json"], default="text")
    p.set_defaults(func=run)


def _route_name(text: str) -> str:
    namespace, _, name = text.rpartition("/")
    return f"{namespace or 'default'}/{name}"


def _describe(canary: dict[str, Any]) -> list[str]:
    rate = canary.get("lastSuccessRate")
    lines = [f"phase {canary['phase']}: stable {canary['stableWeight']}% / canary {canary['canaryWeight']}%"
             + ("" if rate is None else f", last success rate {rate:g}%")
             + (f", failed intervals {canary['failedIntervals']}" if canary.get("failedIntervals") else "")]
    if canary.get("message"):
        lines.append(f"last: {canary['message']}")
    return lines


def run(args: argparse.Namespace) -> int:
    route = _route_name(args.route)
    if args.action == "status":
        return _status(args, route)
    queue = args.dir / ".modelroute" / canary_commands.COMMANDS_DIR
    if not (args.dir / ".modelroute").is_dir():
        print(f"modelroute rollout: {args.dir} has no .modelroute directory: is `modelroute up {args.dir}` running?")
        return 1
    cmd = canary_commands.submit(queue, route, args.action)
    deadline = time.monotonic() + args.wait
    reply = None
    while reply is None:
        reply = canary_commands.reply_of(queue, cmd)
        if reply is not None:
            break
        if time.monotonic() > deadline:
            if canary_commands.withdraw(queue, cmd):
                print(f"modelroute rollout: no answer from `modelroute up {args.dir}` within {args.wait:g}s; "
                      "the command was withdrawn (is it running?)")
                return 1
            deadline = time.monotonic() + 5.0  # claimed just now: the reply is coming
        time.sleep(0.05)
    if args.output == "json":
        print(json.dumps(reply, indent=1))
    else:
        print(reply["message"])
    return 0 if reply.get("ok") else 1


def _status(args: argparse.Namespace, route: str) -> int:
    try:
        doc = read_status(args.dir / ".modelroute")
    except StatusUnavailable as err:
        print(f"modelroute rollout: {err}")
        return 1
    found = next((r for r in doc["routes"] if f"{r['namespace']}/{r['name']}" == route), None)
    if found is None or not found.get("canary"):
        print(f"modelroute rollout: ModelRoute {route} has no canary rollout in {args.dir}")
        return 1
    canary = found["canary"]
    if args.output == "json":
        print(json.dumps({"route": route, "canary": canary, "groups": found["groups"]}, indent=1))
        return 0
    lines = [f"ModelRoute {route}", *_describe(canary)]
    for group in found["groups"]:
        split = ", ".join(f"{s['destination']} {s['percent']:g}%" + (f" ({s['role']})" if "role" in s else "")
                          for s in group["splits"])
        lines.append(f"  {group['match']}: {split}")
    if canary.get("report"):
        lines += ["", *render_report(canary["report"])]
    print("\n".join(lines))
    return 0
