"""The control loop: objects → compile → snapshot; ACK/NACK → Programmed on the owners."""

from __future__ import annotations

import asyncio
import copy
import threading
from pathlib import Path

from kit.tasks import cancel_and_wait, spawn
from modelroute import control_loop
from modelroute.control_loop import ControlLoop
from modelroute.targets import Placement
from tests.translate.builders import table_name
from routing_engine.api.loader import load_manifests
from routing_engine.api.resources import ModelRoute, ObjectKey
from routing_engine.world import Compiled
from xds_server import SnapshotCache, StreamInfo, check_consistency

QUICKSTART = Path(__file__).resolve().parents[2] / "examples" / "quickstart"
ROUTE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
GATEWAY_STREAM = StreamInfo(stream_id=1, kind="ads", node_id="envoy-1", node_group="gateway")
LLAMA = ObjectKey("ModelRoute", "default", "llama")


async def _running_loop(statuses: list) -> tuple[ControlLoop, SnapshotCache, asyncio.Task]:
    loop = ControlLoop(placement=Placement(listen_address="127.0.0.1"),
                       on_status=lambda compiled, st: statuses.append(dict(st)))
    cache = SnapshotCache()
    loop.attach(cache)
    return loop, cache, spawn(loop.debouncer.run(), name="test-loop")


def _versions(cache: SnapshotCache) -> dict[tuple[str, str], str]:
    snapshot = cache.get_snapshot("gateway")
    assert snapshot is not None
    return {(t, n): r.version for t, named in snapshot.resources.items() for n, r in named.items()}


async def test_objects_become_a_snapshot_and_one_edit_changes_one_resource() -> None:
    statuses: list = []
    loop, cache, task = await _running_loop(statuses)
    try:
        objects, errors = load_manifests([QUICKSTART])
        assert errors == []
        loop.set_objects(objects)
        await loop.wait_synced(timeout=10)
        await loop.status_settled(timeout=5)
        before = _versions(cache)
        assert any(t == ROUTE for t, _ in before)
        assert statuses[-1][LLAMA].phase in ("Active", "Pending")

        route = next(o for o in objects if isinstance(o, ModelRoute))
        doc = route.model_dump(by_alias=True, exclude_none=True)
        doc["spec"]["routes"][1]["weight"], doc["spec"]["routes"][2]["weight"] = 50, 50
        edited = [ModelRoute.model_validate(doc) if o is route else o for o in objects]
        loop.set_objects(edited)
        await loop.wait_synced(timeout=10)
        after = _versions(cache)
        changed = sorted(k for k in after if before.get(k) != after[k])
        assert changed == [(ROUTE, table_name(loop.compiled["gateway"].resources, "listener/8080"))]
    finally:
        await cancel_and_wait(task)
        await loop.close()


async def test_compile_subscribers_get_each_gateway_compile_before_its_snapshot_is_served(caplog) -> None:
    loop, cache, task = await _running_loop([])
    seen: list[tuple[Compiled, object]] = []  # each compile, and the cache's snapshot when it came

    def broken(compiled: Compiled) -> None:
        raise RuntimeError("subscriber bug")

    loop.on_compiled(broken)  # logged; neither the push nor the next subscriber is held up
    loop.on_compiled(lambda compiled: seen.append((compiled, cache.get_snapshot("gateway"))))
    loop.add_group("sidecar")  # compiled too, not handed to subscribers
    try:
        objects, _ = load_manifests([QUICKSTART])
        loop.set_objects(objects)
        await loop.wait_synced(timeout=10)
        first = cache.get_snapshot("gateway")
        loop.set_objects([_weights(o, 50, 50) if isinstance(o, ModelRoute) else o for o in objects])
        await loop.wait_synced(timeout=10)
        assert [c for c, _ in seen][-1] is loop.compiled["gateway"]
        assert all(c is not loop.compiled["sidecar"] for c, _ in seen)
        # Each compile reached the subscriber while the cache still held the snapshot before it.
        assert seen[-1][1] is first and first is not cache.get_snapshot("gateway")
        assert "compile subscriber failed" in caplog.text
    finally:
        await cancel_and_wait(task)
        await loop.close()


def _ack_everything(loop: ControlLoop) -> None:
    """What a gateway Envoy accepting the whole current compile reports."""
    for type_url, by_name in loop.compiled["gateway"].resources.items():
        loop.hooks.on_ack(GATEWAY_STREAM, type_url, "v", {n: r.version for n, r in by_name.items()}, 0.01)


def _weights(route: ModelRoute, first: int, second: int) -> ModelRoute:
    doc = route.model_dump(by_alias=True, exclude_none=True)
    doc["spec"]["routes"][1]["weight"], doc["spec"]["routes"][2]["weight"] = first, second
    return ModelRoute.model_validate(doc)


async def test_a_rejected_edit_is_quarantined_the_old_version_serves_and_a_fix_clears_it() -> None:
    statuses: list = []
    loop, cache, task = await _running_loop(statuses)
    try:
        objects, _ = load_manifests([QUICKSTART])
        route = next(o for o in objects if isinstance(o, ModelRoute))
        loop.set_objects(objects)
        await loop.wait_synced(timeout=10)
        _ack_everything(loop)
        accepted_table = _versions(cache)
        edited = [_weights(route, 50, 50) if o is route else o for o in objects]
        loop.set_objects(edited)
        await loop.wait_synced(timeout=10)
        table = table_name(loop.compiled["gateway"].resources, "listener/8080")
        version = loop.compiled["gateway"].resources[ROUTE][table].version
        loop.hooks.on_nack(GATEWAY_STREAM, ROUTE, "v1", {table: version}, f"route {table}: bad regex")
        await loop.wait_synced(timeout=10)  # the quarantine recompiled with the old version
        assert _versions(cache) == accepted_table
        await loop.status_settled(timeout=5)
        rejected = statuses[-1][LLAMA]
        programmed = next(c for c in rejected.conditions if c.type == "Programmed")
        assert (rejected.phase, programmed.status, programmed.reason) == ("Failed", "False", "ValidationFailed")
        assert "bad regex" in programmed.message and "last accepted version keeps serving" in programmed.message
        others = [s for k, s in statuses[-1].items() if k != LLAMA and k.kind in ("ModelServer", "ModelRoute")]
        assert others and all(next(c for c in s.conditions if c.type == "Programmed").status == "True" for s in others)

        loop.set_objects([_weights(route, 60, 40) if o is route else o for o in objects])  # the fix
        await loop.wait_synced(timeout=10)
        _ack_everything(loop)
        await loop.status_settled(timeout=5)
        programmed = next(c for c in statuses[-1][LLAMA].conditions if c.type == "Programmed")
        assert programmed.status == "True" and statuses[-1][LLAMA].phase in ("Active", "Pending")  # no replicas here
    finally:
        await cancel_and_wait(task)
        await loop.close()


async def test_a_new_node_group_is_compiled_when_its_first_envoy_connects() -> None:
    loop, cache, task = await _running_loop([])
    try:
        objects, _ = load_manifests([QUICKSTART])
        loop.set_objects(objects)
        await loop.wait_synced(timeout=10)
        assert sorted(loop.compiled) == ["gateway"]
        loop.hooks.on_stream_open(StreamInfo(2, "ads", "app-1", "sidecar"))
        await loop.wait_synced(timeout=10)
        assert sorted(loop.compiled) == ["gateway", "sidecar"]
        assert cache.get_snapshot("sidecar") is not None
    finally:
        await cancel_and_wait(task)
        await loop.close()


async def test_node_groups_are_collected_when_their_last_stream_is_gone() -> None:
    """1,000 scoped sidecars connect and go: afterwards an edit compiles the gateway only."""
    loop, cache, task = await _running_loop([])
    loop.group_grace = 0.05
    try:
        objects, _ = load_manifests([QUICKSTART])
        loop.set_objects(objects)
        await loop.wait_synced(timeout=10)
        streams = [StreamInfo(10 + i, "ads", f"app-{i}", f'sidecar:{{"servers":["default/s{i}"]}}') for i in range(1000)]
        for stream in streams:
            loop.hooks.on_stream_open(stream)
        loop.hooks.on_stream_open(StreamInfo(9, "ads", "app-again", streams[0].node_group))  # two streams, one group
        await loop.wait_synced(timeout=60)
        assert len(loop.groups) == 1001
        for stream in streams:
            loop.hooks.on_stream_close(stream)
        await asyncio.sleep(0.2)
        assert loop.groups == {"gateway", streams[0].node_group}  # still one stream there
        assert cache.get_snapshot(streams[1].node_group) is None
        loop.hooks.on_stream_close(StreamInfo(9, "ads", "app-again", streams[0].node_group))
        await asyncio.sleep(0.2)
        assert loop.groups == {"gateway"} and sorted(loop.compiled) == ["gateway"]
        loop.set_objects(objects[:-1])
        await loop.wait_synced(timeout=10)
        assert sorted(loop.compiled) == ["gateway"]
    finally:
        await cancel_and_wait(task)
        await loop.close()


async def test_gateway_snapshots_carry_the_readiness_listener_and_sidecars_do_not() -> None:
    from envoy.config.listener.v3 import listener_pb2
    from envoy.config.route.v3 import route_pb2

    from routing_engine.readiness import NAME
    from xds_server import check_consistency

    loop = ControlLoop(placement=Placement(listen_address="10.0.0.7", readiness_port=19002))
    cache = SnapshotCache()
    loop.attach(cache)
    task = spawn(loop.debouncer.run(), name="test-loop")
    try:
        objects, _ = load_manifests([QUICKSTART])
        loop.set_objects(objects)
        loop.hooks.on_stream_open(StreamInfo(2, "ads", "app-1", "sidecar"))
        await loop.wait_synced(timeout=10)
        gateway, sidecar = cache.get_snapshot("gateway"), cache.get_snapshot("sidecar")
        assert gateway is not None and sidecar is not None
        listener = listener_pb2.Listener.FromString(gateway.of_type(LISTENER)[NAME].body)
        assert (listener.address.socket_address.address, listener.address.socket_address.port_value) == \
            ("10.0.0.7", 19002)
        routes = route_pb2.RouteConfiguration.FromString(gateway.of_type(ROUTE)[NAME].body)
        (route,) = routes.virtual_hosts[0].routes
        assert route.direct_response.status == 200
        assert check_consistency(gateway) == []  # its routes come by RDS, like every listener's
        assert "listener/8080" in gateway.of_type(LISTENER)  # beside the engine's listeners
        assert NAME not in sidecar.of_type(LISTENER) and NAME not in sidecar.of_type(ROUTE)
    finally:
        await cancel_and_wait(task)
        await loop.close()


async def test_a_slow_compile_of_one_node_group_never_holds_back_another(monkeypatch) -> None:
    """Each group compiles in its own worker: while the sidecar group's compile hangs,
    gateway edits keep reaching the cache; the sidecar then compiles the newest world."""
    release = threading.Event()
    compiled_for: list[str] = []
    compile_paused = control_loop.compile_paused

    def slow_for_sidecars(compiler, world, target, *, freeze=False):  # type: ignore[no-untyped-def]
        if target.role == "sidecar":
            assert release.wait(timeout=30), "never released"
        compiled_for.append(target.role)
        return compile_paused(compiler, world, target, freeze=freeze)

    monkeypatch.setattr(control_loop, "compile_paused", slow_for_sidecars)
    loop, cache, task = await _running_loop([])
    try:
        objects, _ = load_manifests([QUICKSTART])
        loop.set_objects(objects)
        await loop.wait_synced(timeout=10)
        loop.hooks.on_stream_open(StreamInfo(2, "ads", "app-1", "sidecar"))
        route = next(o for o in objects if isinstance(o, ModelRoute))
        for weights in ((50, 50), (30, 70)):
            before = cache.get_snapshot("gateway")
            loop.set_objects([_weights(route, *weights) if o is route else o for o in objects])
            for _ in range(200):  # the gateway is served while the sidecar compile hangs
                if cache.get_snapshot("gateway") is not before:
                    break
                await asyncio.sleep(0.01)
            assert cache.get_snapshot("gateway") is not before
            assert cache.get_snapshot("sidecar") is None
        release.set()
        await loop.wait_synced(timeout=10)
        assert cache.get_snapshot("sidecar") is not None
        assert compiled_for.count("sidecar") <= 2  # the hung one, then only the newest world
    finally:
        release.set()
        await cancel_and_wait(task)
        await loop.close()


async def test_a_replaced_scoped_listener_keeps_its_scopes_for_one_listener_generation() -> None:
    """Envoy takes each scope response as the whole set: the scopes (and tables) of a
    listener that was just replaced stay in the snapshot for its draining connections,
    until the listeners change again."""
    from bench import _stack
    from routing_engine.translate.xds import SCOPED_ROUTE

    loop, cache, task = await _running_loop([])
    try:
        docs = _stack.base_docs(300, 8080) + [_stack.route_doc(0)]
        generations: list[set[str]] = []
        for limited_now in (False, True, False):  # a rate limit on the port adds a filter to its listener
            limited = copy.deepcopy(docs)
            if limited_now:
                limited[2]["spec"]["rateLimit"] = {"enabled": True, "requestsPerSecond": 5}  # server-blue
            loop.set_objects(_stack.to_objects(limited))
            await loop.wait_synced(timeout=30)
            compiled = set(loop.compiled["gateway"].resources[SCOPED_ROUTE])
            served = set(cache.get_snapshot("gateway").of_type(SCOPED_ROUTE))
            assert compiled and compiled <= served
            generations.append(compiled)
            assert served - compiled == (generations[-2] if len(generations) > 1 else set())
        assert not generations[0] & generations[1] and not generations[1] & generations[2]  # renamed each time
        assert check_consistency(cache.get_snapshot("gateway")) == []
    finally:
        await cancel_and_wait(task)
        await loop.close()
