"""The experiment page: routes, live splits, per-variant charts, the A/B test's verdict and
the rollout history, served by the control plane's admin HTTP server.

    GET  /experiments                                  the page (plain HTML + uPlot, vendored)
    GET  /experiments/static/<file>                    its script, styles and chart library
    GET  /api/v1/experiments?minutes=M&step=S          the page's data (JSON), polled every 2 s
    POST /api/v1/experiments/<ns>/<name>/<action>      promote | abort (disabled by default)

Read-only by default. Actions exist only when the control plane was given a token
(`--experiment-token-file`): a POST must then carry `Authorization: Bearer <token>`
(compared in constant time; a header, not a cookie, so another site's form cannot send
it). In a cluster only the leader's runner acts; a follower answers 503 and the page says
to retry (the leader holds the Lease `modelroute`).

The data: routes as the status shows them (`controller.local.status_view.route_json`, read off
the compiled IR, live canary weights included), each rollout's state, A/B report and
history, and per destination a time series over the last `minutes` in `step`-second
points from the stats every gateway pushes (`StatsCollector.series`): requests/s, success
rate (non-5xx per request), p95 duration, p50 time to first token and completion
tokens/s. Building the route views is pure and can be heavy in a large world, so it runs
in a thread; what reads live state (the runner) runs on the event loop.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from controller.canary.decisions import Event
from controller.canary.stats_sink import StatsCollector, VariantWindow
from controller.local.status_view import RouteView, route_json
from routing_engine import names
from routing_engine.api.resources import ModelRoute, ObjectKey

log = logging.getLogger("modelroute.experiments")

STATIC = Path(__file__).resolve().parent / "static" / "experiments"
ACTIONS = ("promote", "abort")
DEFAULT_MINUTES = 10.0
DEFAULT_STEP_S = 5.0
MAX_POINTS = 720
MIN_POINTS = 12

Rollouts = Callable[[Sequence[RouteView]], tuple[list[RouteView], Mapping[ObjectKey, tuple[Event, ...]]]]


@dataclass(frozen=True)
class ExperimentSource:
    """What the page reads, from the run mode's wiring."""

    mode: str  # embedded | kubernetes
    views: Callable[[], list[RouteView]]  # the routes as compiled (pure: run in a thread)
    rollouts: Rollouts  # the views with their rollout, and each rollout's history (on the loop)
    stats: StatsCollector
    command: Callable[[ObjectKey, str], tuple[bool, str] | None]  # None: this replica does not lead
    leading: Callable[[], bool]
    token: str | None = None  # None: read-only


def _number(text: str | None, default: float, low: float, high: float) -> float:
    try:
        value = float(text) if text is not None else default
    except ValueError:
        return default
    return min(high, max(low, value)) if math.isfinite(value) else default


def _rounded(x: float | None, digits: int = 2) -> float | None:
    return None if x is None else round(x, digits)


def _point(window: VariantWindow, step: float) -> dict[str, float | None]:
    failures = window.status_classes()["5xx"]
    n = window.completed
    durations = sorted(window.values("duration"))
    ttft = sorted(window.values("ttft"))
    completion = window.values("completion_tokens")

    def quantile(values: list[float], q: float) -> float | None:
        return values[min(len(values) - 1, int(q * len(values)))] if values else None

    return {"rps": round(n / step, 3), "successRate": _rounded(100.0 * (n - failures) / n) if n else None,
            "p95Ms": _rounded(quantile(durations, 0.95)), "ttftP50Ms": _rounded(quantile(ttft, 0.5)),
            "tokensPerSecond": round(sum(completion) / step, 3)}


def series(stats: StatsCollector, destinations: Sequence[str], *, now: float, minutes: float,
           step: float) -> dict[str, Any]:
    """Per destination ("ns/name"), each chart's points over the last `minutes`, from the
    first point with traffic (a chart of a young world is not squeezed into its right
    edge); at least MIN_POINTS."""
    end = step * math.ceil(now / step)
    start = end - min(MAX_POINTS * step, minutes * 60)
    clusters = {names.backend(ObjectKey("ModelServer", *d.split("/", 1))): d for d in destinations}
    windows = stats.series(list(clusters), since=start, until=end, step=step)
    rows = {clusters[cluster]: [_point(w, step) for w in points] for cluster, points in windows.items()}
    count = len(next(iter(windows.values()), []))
    busy = [i for i in range(count) if any(r[i]["rps"] for r in rows.values())]
    first = max(0, min(busy[0] - 1 if busy else count, count - MIN_POINTS))
    variants = {d: {key: [row[key] for row in points[first:]] for key in points[0]} if points else {}
                for d, points in rows.items()}
    return {"start": start + first * step, "step": step, "times": [start + i * step for i in range(first, count)],
            "variants": variants}


def _history(events: Sequence[Event]) -> list[dict[str, Any]]:
    return [{"at": at, "action": action, "stableWeight": stable, "canaryWeight": canary, "message": message}
            for at, action, stable, canary, message in events]


async def document(source: ExperimentSource, *, minutes: float, step: float) -> dict[str, Any]:
    views = await asyncio.to_thread(source.views)
    joined, histories = source.rollouts(views)
    routes = []
    for view in sorted(joined, key=lambda v: (v.canary is None, v.key)):
        doc = route_json(view)
        if view.canary is not None:
            doc["canary"]["history"] = _history(histories.get(view.key, ()))
        routes.append(doc)
    destinations = sorted({s["destination"] for r in routes for g in r["groups"] for s in g["splits"]})
    now = time.time()
    return {"generatedAt": now, "mode": source.mode, "leading": source.leading(),
            "actions": {"enabled": source.token is not None, "allowed": list(ACTIONS)},
            "routes": routes, "series": series(source.stats, destinations, now=now, minutes=minutes, step=step)}


def add_routes(app: web.Application, source: ExperimentSource) -> None:
    """The page's routes on the admin app."""

    async def page(_: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    async def data(request: web.Request) -> web.Response:
        minutes = _number(request.query.get("minutes"), DEFAULT_MINUTES, 1, 60)
        step = _number(request.query.get("step"), DEFAULT_STEP_S, 1, 300)
        return web.json_response(await document(source, minutes=minutes, step=step),
                                 headers={"Cache-Control": "no-store"})

    async def act(request: web.Request) -> web.Response:
        namespace, name, action = (request.match_info[k] for k in ("namespace", "name", "action"))
        route = f"{namespace}/{name}"
        if source.token is None:
            return web.json_response({"ok": False, "message": "actions are disabled: the experiment page is "
                                      "read-only (start the control plane with --experiment-token-file)"}, status=403)
        given = request.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {source.token}".encode()):
            log.warning("experiment action refused: no or wrong token", extra={"route": route, "action": action,
                                                                             "remote": request.remote})
            return web.json_response({"ok": False, "message": "a valid token is required (Authorization: Bearer)"},
                                     status=401, headers={"WWW-Authenticate": "Bearer"})
        if action not in ACTIONS:
            return web.json_response({"ok": False, "message": f"unknown action {action!r} (use one of "
                                      f"{', '.join(ACTIONS)})"}, status=400)
        result = source.command(ObjectKey(ModelRoute.KIND, namespace, name), action)
        if result is None:
            return web.json_response({"ok": False, "message": "this control plane replica does not lead the "
                                      "rollouts; retry (the leader holds the Lease modelroute)"}, status=503)
        ok, message = result
        log.info("experiment action: route=%s action=%s ok=%s", route, action, ok,
                 extra={"route": route, "action": action, "ok": ok, "remote": request.remote})
        return web.json_response({"ok": ok, "message": message}, status=200 if ok else 409)

    app.router.add_get("/experiments", page)
    app.router.add_static("/experiments/static/", STATIC, follow_symlinks=False)
    app.router.add_get("/api/v1/experiments", data)
    app.router.add_post("/api/v1/experiments/{namespace}/{name}/{action}", act)


def read_token(path: Path | None) -> str | None:
    """The actions' token from a file (a mounted Secret), stripped; None without a file.
    Raises ValueError for an empty file (an empty token would accept `Bearer `)."""
    if path is None:
        return None
    token = Path(path).read_text().strip()
    if not token:
        raise ValueError(f"{path} is empty: the experiment actions need a token")
    return token
