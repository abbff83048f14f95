"""`modelroute` command line: one module per subcommand under `modelroute.commands`.

Each command module defines `register(subparsers)` (adds its parser and sets
`func=run`) and `run(args) -> int` (the exit code). Modules are imported only when the
command line names them, so a slow import (grpc, kubernetes) never delays `validate`.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Iterable
from importlib import metadata

# command name → module under modelroute.commands, in help order
COMMANDS: dict[str, str] = {
    "up": "up",
    "serve": "serve",
    "compile": "compile",
    "validate": "validate",
    "status": "status",
    "rollout": "rollout",
    "drain": "drain",
    "sidecar-cert": "sidecar_cert",
    "openapi": "openapi",
    "completion": "completion",
}
_HELP = {
    "up": "embedded mode: serve a directory of manifests through a local Envoy",
    "serve": "control plane only: xDS server fed by a provider (file or kubernetes)",
    "compile": "compile manifests to Envoy resources, offline",
    "validate": "check manifests against the admission rules",
    "status": "show routes, live splits and canary state",
    "rollout": "canary control: status, promote, abort, pause, resume",
    "drain": "gateway preStop hook: drain the local Envoy, wait for in-flight requests",
    "sidecar-cert": "issue the xDS client certificate of one namespace's sidecars",
    "openapi": "print the OpenAPI 3 description of the API",
    "completion": "print a shell completion script (bash or zsh)",
}


def version() -> str:
    """The installed distribution's version (package metadata: one source, pyproject.toml)."""
    try:
        return metadata.version("modelroute")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def build_parser(commands: Iterable[str] = COMMANDS) -> argparse.ArgumentParser:
    """The parser, with `commands` registered in full (their modules imported) and the
    others as placeholders, so `--help` lists every command. Raises ModuleNotFoundError
    for a command whose module does not exist."""
    wanted = set(commands)
    parser = argparse.ArgumentParser(prog="modelroute", description="MatrixInfer routing engine: Envoy xDS control plane for AI models")
    parser.add_argument("--version", action="version", version=f"modelroute {version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in COMMANDS.items():
        if name in wanted:
            importlib.import_module(f"modelroute.commands.{module}").register(sub)
        else:
            sub.add_parser(name, help=_HELP[name], add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    chosen = next((a for a in argv if not a.startswith("-")), None)
    try:
        parser = build_parser([chosen] if chosen in COMMANDS else [])
    except ModuleNotFoundError as err:
        if err.name != f"modelroute.commands.{COMMANDS.get(chosen or '', '')}":
            raise
        print(f"modelroute: '{chosen}' is not implemented yet", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
