"""Graceful shutdown of a gateway Envoy: what its pod's preStop hook runs
(`modelroute drain`), so a rollout never cuts a long inference request.

Kubernetes takes a terminating pod out of its Services' endpoints while the preStop hook
runs, and sends SIGTERM (on which Envoy exits at once, closing every connection) only
when the hook returns or the grace period ends. So the hook:
1. asks Envoy to drain (`POST /drain_listeners?graceful`): for `--drain-time-s` Envoy
   keeps accepting (load balancers and kube-proxy may still send a few new connections
   while the endpoint removal spreads) but closes each connection after its current
   request (HTTP/1.1 `Connection: close`, HTTP/2 GOAWAY; with `--drain-strategy
   immediate` from the first response on), then stops listening;
2. waits until no request is in flight (the `downstream_rq_active` gauges of the
   listeners' connection managers, Envoy's admin and the readiness listener left out),
   but at least `min_drain_s` (the time endpoint removal takes to spread) and at most
   `timeout_s` (keep it below the pod's `terminationGracePeriodSeconds`);
3. returns, and the kubelet's SIGTERM stops Envoy.
Envoy's admin is on loopback inside the pod, which the hook shares.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

# Admin is on loopback: an http_proxy from the environment must never be used for it.
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))
# Connection managers whose requests are not traffic: Envoy's admin, the readiness listener.
IGNORED_PREFIXES = ("http.admin.", "http.modelroute_readiness.")


class DrainError(RuntimeError):
    """Envoy's admin could not be reached or refused to drain."""


@dataclass(frozen=True, slots=True)
class DrainResult:
    drained: bool  # False: the timeout came first
    seconds: float
    in_flight: int  # requests still active when it returned


def _call(admin: str, method: str, path: str, timeout: float) -> str:
    request = urllib.request.Request(f"http://{admin}{path}", method=method)
    try:
        with _NO_PROXY.open(request, timeout=timeout) as resp:
            return str(resp.read().decode(errors="replace"))
    except urllib.error.HTTPError as err:
        raise DrainError(f"envoy admin {method} {path}: HTTP {err.code}") from err
    except OSError as err:
        raise DrainError(f"envoy admin {admin} unreachable ({method} {path}): {err}") from err


def active_requests(stats_json: str) -> int:
    """Requests in flight on the traffic listeners, from `/stats?format=json`."""
    total = 0
    for stat in json.loads(stats_json).get("stats", []):
        name = str(stat.get("name", ""))
        if name.startswith("http.") and name.endswith(".downstream_rq_active") and not name.startswith(IGNORED_PREFIXES):
            total += int(stat.get("value") or 0)
    return total


def drain(admin: str, *, min_drain_s: float, timeout_s: float, poll_s: float = 0.5,
          clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> DrainResult:
    """Steps 1 and 2 of the module docstring against the admin at `admin` (HOST:PORT)."""
    started = clock()
    _call(admin, "POST", "/drain_listeners?graceful", timeout=5.0)
    log.info("envoy draining", extra={"admin": admin})
    while True:
        elapsed = clock() - started
        in_flight = active_requests(_call(admin, "GET", "/stats?format=json&filter=downstream_rq_active", timeout=5.0))
        if in_flight == 0 and elapsed >= min_drain_s:
            return DrainResult(True, elapsed, 0)
        if elapsed >= timeout_s:
            return DrainResult(False, elapsed, in_flight)
        sleep(poll_s)
