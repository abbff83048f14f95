"""Synthetic worlds for the benchmarks: N ModelServers and N ModelRoutes, the shapes users
write (an A/B split with a header pin and a fallback), spread over a few ports."""

from __future__ import annotations

from routing_engine.api.resources import ModelInfer, ModelRoute, ModelServer, ObjectKey, Resource
from routing_engine.world import BackendEndpoint, World

PORTS = (8080, 8081, 8082, 8083)


def server(i: int, ports: tuple[int, ...] = PORTS) -> ModelServer:
    return ModelServer.model_validate({
        "apiVersion": "networking.matrixinfer.ai/v1alpha1", "kind": "ModelServer",
        "metadata": {"name": f"server-{i}", "namespace": "bench"},
        "spec": {"modelInferRef": {"name": f"infer-{i}"}, "service": {"port": ports[i % len(ports)]},
                 "routing": {"path": f"/v1/models/m{i}", "timeout": "30s"}}})


def infer(i: int) -> ModelInfer:
    return ModelInfer.model_validate({
        "apiVersion": "workload.matrixinfer.ai/v1alpha1", "kind": "ModelInfer",
        "metadata": {"name": f"infer-{i}", "namespace": "bench"},
        "spec": {"modelRef": {"name": "m"}, "replicas": 2}})


def route(i: int, n: int, *, weight: int = 80) -> ModelRoute:
    """Route i fronts server i: a header pin to server i+1, then weight/100-weight over i and
    its neighbour (same port, so the route lives on one listener), fallback to i."""
    other = (i + len(PORTS)) % n
    return ModelRoute.model_validate({
        "apiVersion": "networking.matrixinfer.ai/v1alpha1", "kind": "ModelRoute",
        "metadata": {"name": f"route-{i}", "namespace": "bench"},
        "spec": {"routes": [
            {"match": {"headers": {"x-variant": "b"}}, "destination": {"modelServerRef": {"name": f"server-{other}"}}},
            {"destination": {"modelServerRef": {"name": f"server-{i}"}}, "weight": weight},
            {"destination": {"modelServerRef": {"name": f"server-{other}"}}, "weight": 100 - weight},
        ], "fallback": {"modelServerRef": {"name": f"server-{i}"}}}})


def objects(n: int, ports: tuple[int, ...] = PORTS) -> list[Resource]:
    """`ports`: four ports to spread the servers over instead of 8080–8083 (a bench that
    starts an Envoy listens on free ones)."""
    assert len(ports) == len(PORTS)  # route i's neighbour is on i's port
    return [*(server(i, ports) for i in range(n)), *(infer(i) for i in range(n)), *(route(i, n) for i in range(n))]


def endpoints(n: int) -> dict[ObjectKey, tuple[BackendEndpoint, ...]]:
    return {ObjectKey("ModelInfer", "bench", f"infer-{i}"):
            (BackendEndpoint(f"10.0.{i // 250}.{i % 250}", 8000), BackendEndpoint(f"10.1.{i // 250}.{i % 250}", 8000))
            for i in range(n)}


def world(n: int, objs: list[Resource] | None = None) -> World:
    objs = objects(n) if objs is None else objs
    return World(tuple(objs), endpoints(n))


def edited(n: int, objs: list[Resource], which: int, weight: int, base: World | None = None) -> World:
    """The same world with route `which` re-weighted (objects list is copied, not mutated).
    With `base`, its endpoints mapping is kept, as the control loop keeps it when only
    objects change."""
    objs = list(objs)
    objs[2 * n + which] = route(which, n, weight=weight)
    return World(tuple(objs), base.endpoints if base is not None else endpoints(n))


def with_servers_added(n: int, world: World, added: int) -> World:
    """`world` (of size n) plus ModelServers n..n+added-1 with their ModelInfers and
    endpoints, no route to them yet: a new model being brought up."""
    extra = range(n, n + added)
    objs = (*world.objects, *(server(i) for i in extra), *(infer(i) for i in extra))
    return World(objs, {**world.endpoints, **{k: v for k, v in endpoints(n + added).items()
                                              if k.name in {f"infer-{i}" for i in extra}}})


def big_route(entries: int, servers: int = 4) -> World:
    """One ModelRoute with `entries` header entries on one front door (a user pinning each
    tenant to a server): the case where shadowing compares entries of one path."""
    objs: list[Resource] = [ModelServer.model_validate({
        "apiVersion": "networking.matrixinfer.ai/v1alpha1", "kind": "ModelServer",
        "metadata": {"name": f"tenant-server-{i}", "namespace": "bench"},
        "spec": {"modelInferRef": {"name": f"infer-{i}"}, "service": {"port": PORTS[0]},
                 "routing": {"path": f"/v1/tenants/s{i}"}}}) for i in range(servers)]
    objs.append(ModelRoute.model_validate({
        "apiVersion": "networking.matrixinfer.ai/v1alpha1", "kind": "ModelRoute",
        "metadata": {"name": "tenants", "namespace": "bench"},
        "spec": {"path": "/v1/chat/completions",
                 "routes": [{"match": {"headers": {"x-tenant": f"t{i}"}},
                             "destination": {"modelServerRef": {"name": f"tenant-server-{i % servers}"}}}
                            for i in range(entries)],
                 "fallback": {"modelServerRef": {"name": "tenant-server-0"}}}}))
    return World(tuple(objs))
