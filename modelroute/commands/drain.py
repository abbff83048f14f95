"""`modelroute drain`: the gateway pod's preStop hook. Drains the Envoy beside it and
returns once no request is in flight (`controller.local.envoy_drain`); the kubelet's SIGTERM
then stops Envoy without cutting anything."""

from __future__ import annotations

import argparse

from controller.local.envoy_drain import DrainError, drain
from modelroute.logs import configure_logging


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("drain", help="gateway preStop hook: drain the local Envoy, wait for in-flight requests")
    p.add_argument("--admin-address", default="127.0.0.1:19000", help="the Envoy's admin HOST:PORT (loopback)")
    p.add_argument("--min-drain-s", type=float, default=5.0,
                   help="wait at least this long (endpoint removal spreading to load balancers and kube-proxy)")
    p.add_argument("--timeout-s", type=float, default=300.0,
                   help="return after this long even with requests in flight (below terminationGracePeriodSeconds)")
    p.add_argument("--log-level", default="info")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    configure_logging(args.log_level)
    try:
        result = drain(args.admin_address, min_drain_s=args.min_drain_s, timeout_s=args.timeout_s)
    except DrainError as err:
        print(f"modelroute drain: {err}", flush=True)
        return 1
    if result.drained:
        print(f"modelroute drain: drained in {result.seconds:.1f}s, no request in flight", flush=True)
    else:
        print(f"modelroute drain: timeout after {result.seconds:.1f}s with {result.in_flight} request(s) in flight",
              flush=True)
    return 0
