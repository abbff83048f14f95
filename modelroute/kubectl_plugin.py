"""`kubectl matrixinfer ...`: the kubectl plugin the seeds promise (`kubectl-matrixinfer` on
PATH, installed with the package), against the cluster of the kubeconfig.

    kubectl matrixinfer get modelroutes -A            # the `modelroute status` tables
    kubectl matrixinfer get ms llama -o yaml          # the object, as stored
    kubectl matrixinfer describe modelroute llama     # conditions, live split, rollout decisions
    kubectl matrixinfer rollout promote llama -n prod # canary control (as `modelroute rollout`)
    kubectl matrixinfer validate -f route.yaml        # the admission rules, offline

kubectl's conventions: kinds by plural, singular or short name (`modelroutes`,
`modelroute`, `mr`); `-n NAMESPACE` (default: the kubeconfig context's namespace, else
`default`), `-A` for every namespace, `-o wide|yaml|json`, `-l` label selectors,
`--kubeconfig` and `--context`. The tables are `modelroute status`'s (one renderer,
`controller.local.status_view.render_tables`, fed by `modelroute.cluster_status`), so the two
commands never disagree. Completion: `kubectl matrixinfer completion bash|zsh` for the
standalone command; `kubectl matrixinfer <TAB>` works through the
`kubectl_complete-matrixinfer` executable (kubectl >= 1.26).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

import yaml

from controller.kubernetes.resources import ENGINE_KINDS
from controller.local.status_view import render_tables
from modelroute import completion
from modelroute.cluster_status import KINDS, document

PROG = "kubectl matrixinfer"
# Every name kubectl accepts for a kind: plural, singular, short names.
KIND_ALIASES: dict[str, str] = {}
for _kind in KINDS:
    _rtype = ENGINE_KINDS[_kind]
    for _alias in (_rtype.plural, _rtype.singular, *_rtype.short_names):
        KIND_ALIASES[_alias] = _kind


def _connection_options(parser: argparse.ArgumentParser, *, all_namespaces: bool = False) -> None:
    parser.add_argument("-n", "--namespace", default=None,
                        help="the namespace (default: the kubeconfig context's, else default)")
    if all_namespaces:
        parser.add_argument("-A", "--all-namespaces", action="store_true", help="every namespace")
    parser.add_argument("--kubeconfig", default=None, help="kubeconfig file (default $KUBECONFIG, ~/.kube/config)")
    parser.add_argument("--context", default=None, help="kubeconfig context (default: the current one)")


def build_parser() -> argparse.ArgumentParser:
    from controller.canary.decisions import COMMANDS as ROLLOUT_ACTIONS
    from modelroute.commands import validate

    parser = argparse.ArgumentParser(prog=PROG, description="MatrixInfer objects in the cluster of the kubeconfig")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    get = sub.add_parser("get", help="list objects: phases, endpoints, live splits",
                         description="List objects of a kind (plural, singular or short name).")
    get.add_argument("kind", choices=sorted(KIND_ALIASES), metavar="KIND",
                     help=f"one of {', '.join(ENGINE_KINDS[k].plural for k in KINDS)} (or singular/short names)")
    get.add_argument("names", nargs="*", metavar="NAME", help="only these objects")
    get.add_argument("-o", "--output", choices=("wide", "yaml", "json"), default=None,
                     help="wide: every condition; yaml/json: the objects as stored")
    get.add_argument("-l", "--selector", default=None, help="label selector, e.g. app=llama")
    _connection_options(get, all_namespaces=True)
    get.set_defaults(func=_get)

    describe = sub.add_parser("describe", help="one object in detail: conditions, live split, rollout decisions")
    describe.add_argument("kind", choices=sorted(KIND_ALIASES), metavar="KIND")
    describe.add_argument("name", metavar="NAME")
    _connection_options(describe)
    describe.set_defaults(func=_describe)

    rollout = sub.add_parser("rollout", help="canary control: status, promote, abort, pause, resume",
                             description="Canary control of a ModelRoute (what `modelroute rollout --kubernetes` does).")
    rollout.add_argument("action", choices=("status", *ROLLOUT_ACTIONS))
    rollout.add_argument("route", metavar="ROUTE", help="the ModelRoute's name (or namespace/name)")
    rollout.add_argument("--wait", type=float, default=10.0, help="seconds to wait for the control plane's answer")
    rollout.add_argument("-o", "--output", choices=("text", "json"), default="text")
    _connection_options(rollout)
    rollout.set_defaults(func=_rollout)

    validate.register(sub)

    shell = sub.add_parser("completion", help="print a shell completion script (bash or zsh)")
    shell.add_argument("shell", choices=sorted(completion.SHELLS))
    shell.set_defaults(func=lambda args: _print(completion.script(build_parser(), "kubectl-matrixinfer", args.shell)))
    return parser


def _print(text: str) -> int:
    print(text, end="")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130


def complete(argv: Sequence[str] | None = None) -> int:
    """`kubectl_complete-matrixinfer WORD...`: kubectl's plugin completion protocol (cobra):
    one candidate a line, then `:<directive>`."""
    words, directive = completion.candidates(completion.tree(build_parser()),
                                             list(sys.argv[1:] if argv is None else argv))
    print("\n".join([*words, f":{directive}"]))
    return 0


# --- talking to the cluster -------------------------------------------------------------


class _Failed(Exception):
    """A message for stderr, kubectl style, and exit code 1."""


def _run(args: argparse.Namespace, work: Any) -> int:
    from controller.kubernetes.client import KubeClient, context_namespace
    from controller.kubernetes.errors import ApiError, ConfigError, NotFound

    async def go() -> int:
        try:
            client = KubeClient.from_kubeconfig(args.kubeconfig, context=args.context)
        except ConfigError as err:
            raise _Failed(f"error: {err}") from None
        namespace = args.namespace or context_namespace(args.kubeconfig, args.context)
        async with client as api:
            try:
                return int(await work(api, namespace))
            except NotFound as err:
                raise _Failed(f"Error from server (NotFound): {err.message}") from None
            except ApiError as err:
                raise _Failed(f"Error from server ({err.reason or err.code}): {err.message}") from None

    try:
        return asyncio.run(go())
    except _Failed as failed:
        print(failed, file=sys.stderr)
        return 1


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _get(args: argparse.Namespace) -> int:
    kind = KIND_ALIASES[args.kind]
    rtype = ENGINE_KINDS[kind]

    async def work(api: Any, namespace: str) -> int:
        where = None if args.all_namespaces else namespace
        if args.names:
            items = [await api.get(rtype, namespace, name) for name in args.names]
        else:
            items = list((await api.list(rtype, namespace=where, label_selector=args.selector)).items)
        if args.output in ("yaml", "json"):
            shown: Any = items[0] if len(args.names) == 1 else {
                "apiVersion": "v1", "kind": "List", "items": items, "metadata": {"resourceVersion": ""}}
            print(json.dumps(shown, indent=4) if args.output == "json" else yaml.safe_dump(shown, sort_keys=False), end="")
            if args.output == "json":
                print()
            return 0
        if not items:
            where_text = "any namespace" if args.all_namespaces else f"{namespace} namespace"
            print(f"No resources found in {where_text}.", file=sys.stderr)
            return 0
        print(render_tables(document({kind: items}, now=_now()), every_condition=args.output == "wide"), end="")
        return 0

    return _run(args, work)


def _describe(args: argparse.Namespace) -> int:
    kind = KIND_ALIASES[args.kind]

    async def work(api: Any, namespace: str) -> int:
        obj = await api.get(ENGINE_KINDS[kind], namespace, args.name)
        print("\n".join(describe_lines(kind, obj)))
        return 0

    return _run(args, work)


def describe_lines(kind: str, obj: dict[str, Any]) -> list[str]:
    """kubectl-describe-style text of one object (pure: tests call it directly)."""
    from controller.canary.ab_report import render as render_report
    from modelroute.commands.rollout import describe as describe_canary

    meta, status = obj.get("metadata") or {}, obj.get("status") or {}
    lines = [f"{'Name:':<14}{meta.get('name')}", f"{'Namespace:':<14}{meta.get('namespace', 'default')}",
             f"{'Labels:':<14}{_pairs(meta.get('labels'))}", f"{'Annotations:':<14}{_pairs(meta.get('annotations'))}",
             f"{'API Version:':<14}{obj.get('apiVersion')}", f"{'Kind:':<14}{kind}",
             f"{'Created:':<14}{meta.get('creationTimestamp', '<unknown>')}", "Spec:"]
    lines += ["  " + line for line in yaml.safe_dump(obj.get("spec") or {}, sort_keys=False).splitlines()]
    summary = document({kind: [obj]}, now=_now())
    (row,) = summary["objects"]
    lines += ["Status:", f"  {'Phase:':<18}{status.get('phase', '<unknown>')}"]
    for field, label in (("serviceEndpoint", "Endpoint:"), ("activeRoutes", "Active routes:"),
                         ("replicas", "Replicas:"), ("readyReplicas", "Ready replicas:")):
        if field in row:
            lines.append(f"  {label:<18}{row[field]}")
    conditions = row["conditions"]
    lines.append("Conditions:")
    if conditions:
        lines.append(f"  {'Type':<14}{'Status':<8}{'Reason':<24}{'Last Transition':<22}Message")
        lines += [f"  {c.get('type', ''):<14}{c.get('status', ''):<8}{c.get('reason', ''):<24}"
                  f"{c.get('lastTransitionTime', ''):<22}{c.get('message', '')}" for c in conditions]
    else:
        lines.append("  <none>")
    for route in summary["routes"]:
        lines += ["Live split:", f"  {'Match':<28}Split"]
        for group in route["groups"]:
            split = ", ".join(f"{s['destination']} {s['percent']:g}%" + (f" ({s['role']})" if "role" in s else "")
                              for s in group["splits"])
            lines.append(f"  {group['match']:<28}{split}")
        if route.get("canary"):
            canary, rollout = route["canary"], status.get("rollout") or {}
            lines += ["Canary:"] + ["  " + line for line in describe_canary(canary)]
            lines.append("Recent rollout decisions:")
            state = rollout.get("state") or {}
            decided = datetime.fromtimestamp(state["updated_at"], timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ") \
                if isinstance(state.get("updated_at"), (int, float)) and state["updated_at"] else "?"
            lines.append(f"  {decided}  {canary.get('message') or state.get('message') or '<none yet>'}")
            command = rollout.get("command") or {}
            if command:
                verdict = "applied" if command.get("ok") else "refused"
                lines.append(f"  command {command.get('command')} ({verdict}): {command.get('message', '')}")
            if rollout.get("report"):
                lines += ["  " + line for line in render_report(rollout["report"])]
    return lines


def _pairs(mapping: Any) -> str:
    if not mapping:
        return "<none>"
    return ("\n" + " " * 14).join(f"{k}={v}" for k, v in sorted(mapping.items()))


def _rollout(args: argparse.Namespace) -> int:
    from modelroute.commands.rollout import run_in_cluster

    namespace, _, name = args.route.rpartition("/")
    if not namespace and not args.namespace:
        from controller.kubernetes.client import context_namespace

        namespace = context_namespace(args.kubeconfig, args.context)
    return run_in_cluster(args.action, f"{namespace or args.namespace}/{name}", wait=args.wait, output=args.output,
                          kubeconfig=args.kubeconfig, context=args.context)


if __name__ == "__main__":
    sys.exit(main())
