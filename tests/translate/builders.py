"""Hand-built IR for translate tests: small helpers with defaults a test overrides."""

from __future__ import annotations

from routing_engine import ir
from routing_engine.api.resources import ObjectKey


def server_key(name: str) -> ObjectKey:
    return ObjectKey("ModelServer", "default", name)


def route_key(name: str) -> ObjectKey:
    return ObjectKey("ModelRoute", "default", name)


def backend(name: str, *endpoints: ir.Endpoint) -> ir.Backend:
    eps = endpoints or (ir.Endpoint("127.0.0.1", 9000),)
    return ir.Backend(name=name, owner=server_key(name.split("/")[-1]), endpoints=eps)


def route(
    name: str,
    *backends: ir.WeightedBackend | str,
    path: str = "/v1/models/a",
    kind: str = "segment_prefix",
    owner: ObjectKey | None = None,
    **fields: object,
) -> ir.Route:
    weighted = tuple(b if isinstance(b, ir.WeightedBackend) else ir.WeightedBackend(b, 1) for b in backends)
    match = fields.pop("match", None) or ir.RouteMatch(path=ir.PathMatch(kind, path))  # type: ignore[arg-type]
    return ir.Route(
        name=name,
        owner=owner or route_key(name),
        match=match,  # type: ignore[arg-type]
        backends=weighted,
        timeout_ms=int(fields.pop("timeout_ms", 60_000)),  # type: ignore[arg-type]
        retries=int(fields.pop("retries", 0)),  # type: ignore[arg-type]
        **fields,  # type: ignore[arg-type]
    )


def listener(*routes: ir.Route, name: str = "http-8080", port: int = 8080, **fields: object) -> ir.Listener:
    return ir.Listener(name=name, address="0.0.0.0", port=port, routes=routes, **fields)  # type: ignore[arg-type]


def gateway(*listeners: ir.Listener, backends: tuple[ir.Backend, ...] = ()) -> ir.Gateway:
    if not backends:
        used = sorted({n for lst in listeners for r in lst.routes for wb in r.backends for n in (wb.backend, wb.failover_to) if n})
        backends = tuple(backend(n) for n in used)
    return ir.Gateway(listeners=listeners, backends=backends)
