"""ModelRoutes: front door, owner, groups, weights, fallback and failover, references."""

from __future__ import annotations

from routing_engine.api.resources import Resource

from routing_engine import ir
from tests.resolve.build import cond, infer, ir_route, listener, mr, ms, route, route_names, run, server, to, up

A, B, C = "modelserver/default/a", "modelserver/default/b", "modelserver/default/c"


def servers() -> list[Resource]:
    return [server("a", "/v1/a"), server("b", "/v1/b"), server("c", "/v1/c", 9090)]


def test_front_door_is_spec_path_else_fallback_else_first_destination() -> None:
    spec_path = run(servers() + [route("r", {"path": "/v1/chat/", "routes": [to("a")], "fallback": {"modelServerRef": {"name": "b"}}})])
    assert ir_route(spec_path, "modelroute/default/r/0").match.path == ir.PathMatch("segment_prefix", "/v1/chat")
    fallback = run(servers() + [route("r", {"routes": [to("a")], "fallback": {"modelServerRef": {"name": "b"}}})])
    assert ir_route(fallback, "modelroute/default/r/0").match.path.value == "/v1/b"
    first = run(servers() + [route("r", {"routes": [to("b"), to("a")]})])
    assert ir_route(first, "modelroute/default/r/0").match.path.value == "/v1/b"


def test_installed_on_the_owner_listener_only() -> None:
    # front door /v1/c/chat is under c's path, c listens on 9090: only there.
    res = run(servers() + [route("r", {"path": "/v1/c/chat", "routes": [to("a"), to("b")]})])
    assert "modelroute/default/r/0" in route_names(res, 9090)
    assert "modelroute/default/r/0" not in route_names(res, 8080)


def test_owner_is_the_longest_segment_prefix() -> None:
    res = run([server("root", "/v1", 7000), server("deep", "/v1/models", 7001), server("a", "/v1/a", 8080),
               route("r", {"path": "/v1/models/x", "routes": [to("a")]})])
    assert route_names(res, 7001)[0] == "modelroute/default/r/0"
    assert "modelroute/default/r/0" not in route_names(res, 7000) + route_names(res, 8080)


def test_no_owner_installs_on_every_referenced_server_port() -> None:
    res = run(servers() + [route("r", {"path": "/v2/other", "routes": [to("a"), to("c")]})])
    assert route_names(res, 8080)[0] == "modelroute/default/r/0"
    assert route_names(res, 9090)[0] == "modelroute/default/r/0"


def test_identical_matches_form_one_group_in_first_appearance_order() -> None:
    res = run(servers() + [route("r", {"routes": [
        to("a", match={"headers": {"X-Tier": "gold"}}, weight=80),
        to("c", match={}),
        to("b", match={"headers": {"x-tier": {"exact": "gold"}}}, weight=20),
    ]})])
    names = route_names(res, 8080)
    assert names[:2] == ["modelroute/default/r/0", "modelroute/default/r/1"]
    gold = ir_route(res, "modelroute/default/r/0")
    assert gold.match.headers == (("x-tier", ir.StringMatch("exact", "gold")),)
    assert gold.backends == (ir.WeightedBackend(A, 80), ir.WeightedBackend(B, 20))
    assert ir_route(res, "modelroute/default/r/1").backends == (ir.WeightedBackend(C, 1),)


def test_match_path_forms_and_other_matches() -> None:
    res = run(servers() + [route("r", {"routes": [
        to("a", match={"path": "/v1/a/exact"}),
        to("a", match={"path": "/v1/a/tree/*"}),
        to("a", match={"path": "/v1/*/glob"}),
        to("b", match={"queryParams": {"v": {"prefix": "2"}}, "headers": {"h": {"present": True}}, "model": "llama"}),
    ]})])
    paths = [ir_route(res, f"modelroute/default/r/{n}").match.path for n in range(3)]
    assert paths == [ir.PathMatch("exact", "/v1/a/exact"), ir.PathMatch("segment_prefix", "/v1/a/tree"),
                     ir.PathMatch("glob", "/v1/*/glob")]
    last = ir_route(res, "modelroute/default/r/3").match
    assert last == ir.RouteMatch(ir.PathMatch("segment_prefix", "/v1/a"), (("h", ir.StringMatch("present")),),
                                 (("v", ir.StringMatch("prefix", "2")),), "llama")


def test_missing_weights_are_equal_shares_of_the_rest() -> None:
    res = run(servers() + [route("all", {"path": "/x", "routes": [to("a"), to("b"), to("c")]}),
                           route("some", {"path": "/y", "routes": [to("a", weight=40), to("b"), to("c")]})])
    assert [b.weight for b in ir_route(res, "modelroute/default/all/0").backends] == [1, 1, 1]
    assert [b.weight for b in ir_route(res, "modelroute/default/some/0").backends] == [40, 30, 30]


# The model validator refuses all-zero groups it can see (tests/api); these entries match a
# segment prefix and name no front door, so only the engine can group them.
UNGROUPED = {"path": "/v1/a/*"}


def test_all_zero_weights_fail_the_route_and_server_keeps_serving() -> None:
    res = run(servers() + [route("r", {"routes": [to("a", weight=0, match=UNGROUPED), to("b", weight=0, match=UNGROUPED)]})])
    assert route_names(res, 8080) == [A, B]
    status = res.statuses[mr("r")]
    assert status.phase == "Failed" and status.active_routes == 0
    accepted = cond(res, mr("r"), "Accepted")
    assert (accepted.status, accepted.reason) == ("False", "ValidationFailed")
    assert accepted.message.startswith("ModelRoute default/r: spec.routes[0].weight: ")
    assert cond(res, mr("r"), "ResolvedRefs").status == "True"


def test_same_server_twice_in_a_group_adds_weights() -> None:
    res = run(servers() + [route("r", {"routes": [to("a", weight=30), to("b", weight=50), to("a", weight=20)]})])
    assert ir_route(res, "modelroute/default/r/0").backends == (ir.WeightedBackend(A, 50), ir.WeightedBackend(B, 50))


def test_group_timeout_and_retries_largest_explicit_else_servers_else_defaults() -> None:
    objs = [server("a", "/v1/a", routing={"timeout": "10s", "retries": 1}),
            server("b", "/v1/b", routing={"timeout": "20s"}), server("c", "/v1/c")]
    res = run(objs + [route("r", {"routes": [
        to("a", match={"model": "m1"}, timeout="5s", retries=4), to("b", match={"model": "m1"}, timeout="3s"),
        to("a", match={"model": "m2"}), to("b", match={"model": "m2"}),
        to("c", match={"model": "m3"}),
    ]})])
    got = [(r.timeout_ms, r.retries) for r in (ir_route(res, f"modelroute/default/r/{n}") for n in range(3))]
    assert got == [(5_000, 4), (20_000, 1), (60_000, 2)]


def test_fallback_catch_all_and_failover() -> None:
    res = run(servers() + [route("r", {"routes": [to("a", match={"model": "x"}, weight=90), to("b", match={"model": "x"}, weight=10)],
                                       "fallback": {"modelServerRef": {"name": "b"}}})])
    names = route_names(res, 8080)
    assert names[:2] == ["modelroute/default/r/0", "modelroute/default/r/fallback"]
    group = ir_route(res, "modelroute/default/r/0")
    assert group.backends == (ir.WeightedBackend(A, 90, failover_to=B), ir.WeightedBackend(B, 10, failover_to=None))
    catch_all = ir_route(res, "modelroute/default/r/fallback")
    assert catch_all.match == ir.RouteMatch(ir.PathMatch("segment_prefix", "/v1/b"))
    assert catch_all.backends == (ir.WeightedBackend(B, 1),)
    assert res.statuses[mr("r")].active_routes == 2


def test_missing_destination_keeps_the_whole_route_out() -> None:
    res = run(servers() + [route("r", {"path": "/v1/a/chat", "routes": [to("a"), to("x", weight=10)]})])
    assert not any(n.startswith("modelroute/") for l in res.gateway.listeners for n in (r.name for r in l.routes))
    assert route_names(res, 8080) == [A, B]
    status = res.statuses[mr("r")]
    assert status.phase == "Failed"
    refs = cond(res, mr("r"), "ResolvedRefs")
    assert (refs.status, refs.reason) == ("False", "ModelNotFound")
    assert refs.message == "ModelRoute default/r: spec.routes[1].destination.modelServerRef: ModelServer default/x not found"
    assert cond(res, mr("r"), "Accepted").reason == "ModelNotFound"


def test_failed_destination_server_is_not_found() -> None:
    objs = servers() + [server("dup", "/v1/a"),
                        route("r", {"routes": [to("dup")], "fallback": {"modelServerRef": {"name": "gone"}}})]
    res = run(objs)
    message = cond(res, mr("r"), "ResolvedRefs").message
    assert "spec.routes[0].destination.modelServerRef: ModelServer default/dup is Failed and not served" in message
    assert "spec.fallback.modelServerRef: ModelServer default/gone not found" in message


def test_cross_namespace_destination_denied_then_allowed() -> None:
    denied = run([server("m", "/v1/m", namespace="models"), route("r", {"path": "/r", "routes": [to("m", "models")]})])
    refs = cond(denied, mr("r"), "ResolvedRefs")
    assert refs.reason == "NetworkPolicyViolation"
    assert "ModelServer models/m does not allow references from namespace default" in refs.message
    assert denied.statuses[mr("r")].phase == "Failed"
    allowed = run([server("m", "/v1/m", namespace="models", annotations={"networking.matrixinfer.ai/allow-from": "default"}),
                   route("r", {"path": "/r", "routes": [to("m", "models")]})])
    assert ir_route(allowed, "modelroute/default/r/0").backends == (ir.WeightedBackend("modelserver/models/m", 1),)


def test_cross_namespace_fallback_needs_permission() -> None:
    res = run(servers() + [server("f", "/f", namespace="ops", annotations={"networking.matrixinfer.ai/allow-from": "team"}),
                           route("r", {"routes": [to("a")], "fallback": {"modelServerRef": {"name": "f", "namespace": "ops"}}})])
    assert cond(res, mr("r"), "ResolvedRefs").reason == "NetworkPolicyViolation"
    assert "spec.fallback.modelServerRef" in cond(res, mr("r"), "ResolvedRefs").message


def test_route_phase_active_with_healthy_backend_else_pending() -> None:
    spec = {"routes": [to("a")]}
    assert run(servers() + [route("r", spec), infer("a")], endpoints=up("a")).statuses[mr("r")].phase == "Active"
    assert run(servers() + [route("r", spec)]).statuses[mr("r")].phase == "Pending"


def test_pending_destination_without_model_infer_still_routes() -> None:
    res = run([server("a", "/v1/a", infer="not-yet"), route("r", {"routes": [to("a")]})])
    assert ir_route(res, "modelroute/default/r/0").backends == (ir.WeightedBackend(A, 1),)
    assert res.statuses[ms("a")].phase == "Pending"
    assert res.statuses[mr("r")].phase == "Pending"
    assert cond(res, mr("r"), "ResolvedRefs").status == "True"


def test_route_and_validation_problems_are_all_reported_refs_first() -> None:
    res = run(servers() + [route("r", {"routes": [to("a", weight=0, match=UNGROUPED), to("a", weight=0, match=UNGROUPED),
                                                  to("x", match={"model": "m"})]})])
    accepted = cond(res, mr("r"), "Accepted")
    assert accepted.reason == "ModelNotFound"
    assert accepted.message.index("spec.routes[2].destination") < accepted.message.index("spec.routes[0].weight")
