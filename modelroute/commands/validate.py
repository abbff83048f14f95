"""`modelroute validate -f PATH...`: the admission rules, offline, for CI and pre-commit.

Errors go to stdout, one per line (so `grep` and editors' quickfix lists can use them); the
exit code is 1 when there is any error or nothing to validate, 0 otherwise with a one-line
summary. Only single-object rules are checked here; references between objects are the
engine's job (`modelroute compile`).
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter

from routing_engine.api.loader import load_manifests, load_text
from routing_engine.api.resources import KINDS, Resource


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
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
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    paths: list[str] = args.paths
    objects, errors = load_manifests(p for p in paths if p != "-")
    if "-" in paths:
        found, errs = load_text(sys.stdin.read(), "<stdin>")
        objects.extend(found)
        errors.extend(errs)
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
