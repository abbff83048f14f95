"""`modelroute openapi [-o yaml|json]`: the OpenAPI 3 description of the MatrixInfer API
(the five kinds' REST interface and schemas, with the seeds' field descriptions), generated
from the same models as the CRDs and the loader. `docs/openapi.yaml` is the same document."""

from __future__ import annotations

import argparse
import json

import yaml

from routing_engine.api.openapi import document


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("openapi", help="print the OpenAPI 3 description of the API",
                       description="Print the OpenAPI 3 description of the MatrixInfer API (generated from the models).")
    p.add_argument("-o", "--output", choices=("yaml", "json"), default="yaml", help="document format (default yaml)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    doc = document()
    if args.output == "json":
        print(json.dumps(doc, indent=1))
    else:
        print(yaml.safe_dump(doc, sort_keys=False, width=1000), end="")
    return 0
