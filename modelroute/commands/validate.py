"""`modelroute validate -f PATH...`: the admission rules, offline, for CI and pre-commit.

Errors go to stdout, one per line (so `grep` and editors' quickfix lists can use them); the
exit code is 1 when there is any error or nothing to validate, 0 otherwise with a one-line
summary. `-o json` prints one JSON document instead (for CI annotations): `valid`, the
`objects` found and the `errors`, each with its file, document index, object, field path
and rule as separate fields. Only single-object rules are checked here; references between objects are the
engine's job (`modelroute compile`). A ModelServer's `spec.extensions` is checked against the plugins
installed next to this command (built in and `modelroute.plugins` entry points), as the engine will.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections import Counter
from typing import Any

from routing_engine import plugins
from routing_engine.api.errors import ManifestError
from routing_engine.api.loader import MAX_MANIFEST_BYTES, load_manifests, load_text
from routing_engine.api.resources import KINDS, Resource


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "validate",
        help="check manifests against the admission rules",
        description="Check manifests (files, directories, or - for stdin) against the admission rules.",
    )
    parser.add_argument(
        "-f",
        "--filename",
        dest="paths",
        action="extend",
        nargs="+",
        required=True,
        metavar="PATH",
        help="manifest file or directory (repeatable); - reads standard input",
    )
    parser.add_argument("-o", "--output", choices=("text", "json"), default="text",
                        help="text: one error per line (default); json: one document for CI")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    paths: list[str] = args.paths
    try:
        extensions = plugins.extension_models(plugins.with_builtin(plugins.discover()))
    except plugins.PluginError as err:
        print(f"modelroute validate: {err}", file=sys.stderr)
        return 1
    objects, errors = load_manifests((p for p in paths if p != "-"), extensions=extensions)
    if "-" in paths:
        found, errs = load_text(sys.stdin.read(MAX_MANIFEST_BYTES + 1), "<stdin>", extensions=extensions)
        objects.extend(found)
        errors.extend(errs)
    if args.output == "json":
        print(json.dumps(report(objects, errors), indent=1))
        return 1 if errors or not objects else 0
    for error in errors:
        print(error)
    if errors:
        print(f"modelroute validate: {len(errors)} error(s)", file=sys.stderr)
        return 1
    if not objects:
        print(f"modelroute validate: no objects found in {' '.join(paths)}", file=sys.stderr)
        return 1
    print(summary(objects))
    return 0


def summary(objects: list[Resource]) -> str:
    """`5 objects valid (2 ModelServer, 1 ModelRoute, ...)`, kinds in API order."""
    counts = Counter(obj.KIND for obj in objects)
    parts = ", ".join(f"{counts[cls.KIND]} {cls.KIND}" for cls in KINDS if counts[cls.KIND])
    noun = "object" if len(objects) == 1 else "objects"
    return f"{len(objects)} {noun} valid ({parts})"


def report(objects: list[Resource], errors: list[ManifestError]) -> dict[str, Any]:
    """The `-o json` document: every field of every error, plus its one-line message."""
    return {
        "valid": not errors and bool(objects),
        "summary": f"{len(errors)} error(s)" if errors else summary(objects) if objects else "no objects found",
        "objects": [{"kind": o.KIND, "namespace": o.metadata.namespace, "name": o.metadata.name} for o in objects],
        "errors": [{**dataclasses.asdict(e), "message": str(e)} for e in errors],
    }
