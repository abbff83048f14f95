"""`modelroute compile -f PATH... [-o yaml|json] [--validate]`: manifests in, Envoy config
out, nothing started.

Prints one bootstrap-shaped document (`engine.static_bootstrap`: the listeners, routes,
clusters, endpoints and secrets the xDS server would serve, inlined so that
`envoy -c FILE` runs them with no control plane) to stdout. Problems go to stderr, one per
line: manifest errors, then every object the engine did not accept or could not resolve.
Compilation is best effort, so the document is printed even then, without the broken
objects; with no object at all (say, a mistyped path) nothing is printed. `--validate`
also asks the real Envoy (`envoy --mode validate`).
Exit 1 on any error, when nothing was found, or when Envoy rejects the document.
"""

from __future__ import annotations

import argparse
import json
import sys

import yaml

from routing_engine import engine
from routing_engine.api.errors import refused_keys
from routing_engine.api.loader import load_manifests
from routing_engine import plugins as plugin
from routing_engine.world import Compiled, Target, World

# Condition types whose status False means the object (or part of it) is not served.
_ERROR_CONDITIONS = ("Accepted", "ResolvedRefs")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "compile",
        help="compile manifests to Envoy resources, offline",
        description="Compile manifests to an Envoy bootstrap document (static resources) on stdout.",
    )
    parser.add_argument("-f", "--filename", dest="paths", action="extend", nargs="+", required=True, metavar="PATH",
                        help="manifest file or directory (repeatable)")
    parser.add_argument("-o", "--output", choices=("yaml", "json"), default="yaml", help="document format (default yaml)")
    parser.add_argument("--validate", action="store_true", help="also run `envoy --mode validate` on the document")
    parser.add_argument("--role", choices=("gateway", "sidecar"), default="gateway", help="which Envoy the output is for")
    parser.add_argument("--port-offset", type=int, default=0, metavar="N",
                        help="add N to manifest ports below 1024 (unprivileged Envoy)")
    parser.set_defaults(func=run)


def problems(compiled: Compiled) -> list[str]:
    """One line per distinct problem, in object order. A broken reference fails both
    Accepted and ResolvedRefs with the same message: it is printed once, naming both."""
    lines = []
    for key, status in compiled.statuses.items():
        failed: dict[str, list[str]] = {}  # message → "Type=False, Reason" parts, in order
        for condition in status.conditions:
            if condition.type in _ERROR_CONDITIONS and condition.status == "False":
                tags = failed.setdefault(condition.message, [])
                tags.append(f"{condition.type}=False")
                if condition.reason not in tags:
                    tags.append(condition.reason)
        for message, tags in failed.items():
            text = message if message.startswith(str(key)) else f"{key}: {message}"
            lines.append(f"{text} [{', '.join(_reason_last(tags))}]")
    return lines


def _reason_last(tags: list[str]) -> list[str]:
    """`Accepted=False, ResolvedRefs=False, ModelNotFound`: condition types first."""
    return [t for t in tags if "=" in t] + [t for t in tags if "=" not in t]


def run(args: argparse.Namespace) -> int:
    objects, errors = load_manifests(args.paths)
    for error in errors:
        print(error, file=sys.stderr)
    if not objects:
        # Nothing to compile: no document (an empty bootstrap that Envoy happily validates
        # would look like success).
        print(f"modelroute compile: no objects found in {' '.join(args.paths)}", file=sys.stderr)
        return 1
    compiler = engine.Compiler(plugin.with_builtin(plugin.discover()))
    target = Target(role=args.role, privileged_port_offset=args.port_offset)
    compiled = compiler.compile(World(objects=tuple(objects), refused=refused_keys(errors)), target)
    failed = problems(compiled)
    for line in failed:
        print(line, file=sys.stderr)
    document = engine.static_bootstrap(compiled.resources)
    if args.output == "json":
        print(json.dumps(document, indent=2))
    else:
        print(yaml.safe_dump(document, sort_keys=False, width=120), end="")
    exit_code = 1 if errors or failed else 0
    if args.validate:
        from controller.local.envoy_process import EnvoyError
        from modelroute.envoy_check import validate

        try:
            verdict = validate(document)
        except EnvoyError as err:
            print(f"modelroute compile: {err}", file=sys.stderr)
            return 2
        print(f"envoy --mode validate: {verdict.message}", file=sys.stderr)
        exit_code = exit_code or (0 if verdict.ok else 1)
    return exit_code
