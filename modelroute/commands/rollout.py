"""`modelroute rollout status|promote|abort|pause|resume ROUTE [--dir DIR]`: canary control
of a running `modelroute up DIR` (SPEC 3.4, 4).

`status` reads the status `modelroute up` writes (phase, live split, last decision, A/B
report). The other actions go through the command queue under `DIR/.modelroute/rollout/`
(`controller.canary.commands`): the command is queued, the running canary runner applies
it within a fraction of a second and replies; with no answer within `--wait` seconds the
command is withdrawn and the exit code is 1, so nothing is applied later by surprise.
ROUTE is `name` (namespace `default`) or `namespace/name`.

With `--kubernetes` the same actions go to a cluster (`modelroute serve --provider
kubernetes`): `status` reads the ModelRoute's `status.canary`; a command is the
annotation `rollout.matrixinfer.ai/command: <action>@<nonce>` on the ModelRoute (a merge
patch through the kubeconfig's credentials), which the leading control plane applies and
acknowledges in `status.rollout.command`; the CLI waits for that acknowledgement for at
most `--wait` seconds (then it withdraws the annotation if nobody took it, exit 1; a
leader applying it at that very moment can still win the race: `rollout status` tells).
`--namespace` is used when ROUTE has none.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from pathlib import Path
from typing import Any

from controller.canary import commands as canary_commands
from controller.canary.ab_report import render as render_report
from controller.canary.decisions import COMMANDS
from controller.local.instance import holder
from controller.local.status_view import StatusUnavailable, read_status
from modelroute.commands.status import not_running

ACTIONS = ("status", *COMMANDS)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("rollout", help="canary control: status, promote, abort, pause, resume")
    p.add_argument("action", choices=ACTIONS)
    p.add_argument("route", help="the ModelRoute: name or namespace/name")
    p.add_argument("--dir", type=Path, default=Path("examples/quickstart"),
                   help="the directory `modelroute up` serves")
    p.add_argument("--wait", type=float, default=10.0, help="seconds to wait for `modelroute up` to apply it")
    p.add_argument("-o", "--output", choices=["text", "json"], default="text")
    p.add_argument("--kubernetes", action="store_true", help="control a rollout in a cluster (kubeconfig)")
    p.add_argument("--namespace", default=None, help="--kubernetes: the route's namespace (default: default)")
    p.add_argument("--kubeconfig", default=None, help="--kubernetes: default $KUBECONFIG or in-cluster")
    p.set_defaults(func=run)


def _route_name(text: str) -> str:
    namespace, _, name = text.rpartition("/")
    return f"{namespace or 'default'}/{name}"


def describe(canary: dict[str, Any]) -> list[str]:
    rate = canary.get("lastSuccessRate")
    lines = [f"phase {canary['phase']}: stable {canary['stableWeight']}% / canary {canary['canaryWeight']}%"
             + ("" if rate is None else f", last success rate {rate:g}%")
             + (f", failed intervals {canary['failedIntervals']}" if canary.get("failedIntervals") else "")]
    if canary.get("message"):
        lines.append(f"last: {canary['message']}")
    return lines


def run(args: argparse.Namespace) -> int:
    if args.kubernetes:
        return asyncio.run(_run_kubernetes(args))
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
    live = holder(args.dir / ".modelroute") is not None
    if args.output == "json":
        print(json.dumps({"route": route, "canary": canary, "groups": found["groups"], "running": live}, indent=1))
        return 0 if live else 1
    lines = [] if live else [not_running(args.dir, doc["updatedAt"])]
    lines += [f"ModelRoute {route}", *describe(canary)]
    for group in found["groups"]:
        split = ", ".join(f"{s['destination']} {s['percent']:g}%" + (f" ({s['role']})" if "role" in s else "")
                          for s in group["splits"])
        lines.append(f"  {group['match']}: {split}")
    if canary.get("report"):
        lines += ["", *render_report(canary["report"])]
    print("\n".join(lines))
    return 0 if live else 1


# --- against a cluster ----------------------------------------------------------------


async def _run_kubernetes(args: argparse.Namespace) -> int:
    namespace, _, name = args.route.rpartition("/")
    return await _in_cluster(args.action, namespace or args.namespace or "default", name, wait=args.wait,
                             output=args.output, kubeconfig=args.kubeconfig)


def run_in_cluster(action: str, route: str, *, wait: float, output: str, kubeconfig: str | None = None,
                   context: str | None = None) -> int:
    """The `--kubernetes` actions for ROUTE `namespace/name` (also `kubectl matrixinfer rollout`)."""
    namespace, _, name = route.rpartition("/")
    return asyncio.run(_in_cluster(action, namespace or "default", name, wait=wait, output=output,
                                   kubeconfig=kubeconfig, context=context))


async def _in_cluster(action: str, namespace: str, name: str, *, wait: float, output: str,
                      kubeconfig: str | None, context: str | None = None) -> int:
    from controller.kubernetes.client import KubeClient
    from controller.kubernetes.errors import ApiError, ConfigError

    try:
        client = KubeClient.from_kubeconfig(kubeconfig, context=context)
    except ConfigError as err:
        print(f"modelroute rollout: {err}")
        return 1
    try:
        async with client as api:
            if action == "status":
                return await _kube_status(api, namespace, name, output)
            return await _kube_command(api, namespace, name, action, wait=wait, output=output)
    except ApiError as err:
        print(f"modelroute rollout: ModelRoute {namespace}/{name}: {err}")
        return 1


async def _kube_status(api: Any, namespace: str, name: str, output: str) -> int:
    from controller.kubernetes.resources import MODEL_ROUTE

    obj = await api.get(MODEL_ROUTE, namespace, name)
    status = obj.get("status") or {}
    canary = status.get("canary")
    if not canary:
        print(f"modelroute rollout: ModelRoute {namespace}/{name} has no canary rollout in its status "
              "(canary.enabled, and a leading `modelroute serve --provider kubernetes`)")
        return 1
    rollout = status.get("rollout") or {}
    if output == "json":
        print(json.dumps({"route": f"{namespace}/{name}", "canary": canary, "rollout": rollout}, indent=1))
        return 0
    lines = [f"ModelRoute {namespace}/{name}", *describe(canary)]
    if rollout.get("report"):
        lines += ["", *render_report(rollout["report"])]
    print("\n".join(lines))
    return 0


async def _kube_command(api: Any, namespace: str, name: str, action: str, *, wait: float, output: str) -> int:
    """Set the command annotation, wait (bounded) for the leader's acknowledgement."""
    from controller.kubernetes.canary import COMMAND_ANNOTATION
    from controller.kubernetes.errors import ApiError
    from controller.kubernetes.resources import MODEL_ROUTE

    nonce = f"{time.time_ns():x}-{uuid.uuid4().hex[:8]}"
    value = f"{action}@{nonce}"
    await api.patch(MODEL_ROUTE, namespace, name, {"metadata": {"annotations": {COMMAND_ANNOTATION: value}}})
    deadline = time.monotonic() + wait
    withdrawn = False
    while True:
        obj = await api.get(MODEL_ROUTE, namespace, name)
        ack = ((obj.get("status") or {}).get("rollout") or {}).get("command") or {}
        if ack.get("id") == nonce:
            break
        if time.monotonic() > deadline:
            annotations = (obj.get("metadata") or {}).get("annotations") or {}
            if not withdrawn and annotations.get(COMMAND_ANNOTATION) == value:
                # Withdraw only what is still ours (resourceVersion: fails if anything changed).
                try:
                    await api.patch(MODEL_ROUTE, namespace, name, {"metadata": {
                        "resourceVersion": obj["metadata"]["resourceVersion"],
                        "annotations": {COMMAND_ANNOTATION: None}}})
                    print(f"modelroute rollout: no acknowledgement from the control plane within {wait:g}s; the "
                          "command was withdrawn (is `modelroute serve --provider kubernetes` running and leading?)")
                    return 1
                except ApiError:  # changed meanwhile (Conflict): the answer may be coming
                    withdrawn = True
                    deadline = time.monotonic() + 5.0
                    continue
            print(f"modelroute rollout: no acknowledgement of {value} within the wait")
            return 1
        await asyncio.sleep(0.1)
    if output == "json":
        print(json.dumps(ack, indent=1))
    else:
        print(ack.get("message", ""))
    return 0 if ack.get("ok") else 1
