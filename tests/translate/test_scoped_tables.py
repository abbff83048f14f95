"""Scoped route tables (translate/scopes.py): a big listener's routes split by path key,
named after the listener, routing exactly as the single table did in a real Envoy."""

from __future__ import annotations

import http.client
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelroute.envoy_check import validate
from routing_engine import engine, ir, serialize
from routing_engine.incremental import Translator
from routing_engine.translate import scopes, translate
from tests.support.references import dangling_references
from routing_engine.translate.xds import LISTENER, ROUTE, SCOPED_ROUTE
from tests.support import envoy_binary, free_port, stop_process, wait_until
from tests.translate.builders import gateway, listener, route

GROUPS = 40  # path groups /v1/g{n}; 7 routes each plus the plugins' own: above MIN_ROUTES


def _routes(variant: str = "") -> tuple[ir.Route, ...]:
    """Every kind of match, several per path group, in an order where earlier routes
    shadow later ones (first match wins must survive the split)."""
    found: list[ir.Route] = []
    for n in range(GROUPS):
        base = f"/v1/g{n}"
        found += [
            route(f"hdr-{n}", "a", match=ir.RouteMatch(ir.PathMatch("segment_prefix", f"{base}/chat"),
                                                      headers=(("x-user", ir.StringMatch("exact", "gold")),))),
            route(f"model-{n}", "b", match=ir.RouteMatch(ir.PathMatch("segment_prefix", f"{base}/chat"), model="big")),
            route(f"query-{n}", "a", match=ir.RouteMatch(ir.PathMatch("exact", f"{base}/q"),
                                                        query_params=(("v", ir.StringMatch("prefix", "b")),))),
            route(f"glob-{n}", "b", path=f"{base}/*/infer", kind="glob"),
            route(f"exact-{n}{variant if n == 3 else ''}", "a", path=f"{base}/exact", kind="exact"),
            route(f"chat-{n}", "a", path=f"{base}/chat"),
            route(f"group-{n}", "b", path=base),
        ]
    return tuple(found)


def _gateway(variant: str = "", port: int = 8080, **fields: Any) -> ir.Gateway:
    return gateway(listener(*_routes(variant), port=port, name=f"http-{port}", **fields))


def test_a_big_listener_gets_scopes_and_tables_named_after_it() -> None:
    result = translate(_gateway())
    [name] = result.resources[LISTENER]
    tag = next(iter(result.resources[ROUTE]))[len(name) + 1:].split("/")[0]
    assert all(n.startswith(f"{name}/{tag}/table/") for n in result.resources[ROUTE])
    assert all(n.startswith(f"{name}/{tag}/scope/") for n in result.resources[SCOPED_ROUTE])
    for scope in result.resources[SCOPED_ROUTE].values():
        message = serialize.parse(scope)
        assert message.key.fragments[0].string_key == tag  # only this listener's requests select it
        assert len(message.key.fragments) == 3  # /v1/g{n}: two segments every route shares
    assert 1 < len(result.resources[ROUTE]) <= scopes.MAX_TABLES
    assert dangling_references(result.resources) == []
    # Owners: a table is owned by the objects of its routes, a scope by those of its key.
    owners = {r.owner for r in _routes()}
    assert {o for n in result.resources[ROUTE] for o in result.owners[(ROUTE, n)]} == owners
    scope_g3 = next(n for n in result.resources[SCOPED_ROUTE] if n.endswith("/v1/g3"))
    assert {o.name for o in result.owners[(SCOPED_ROUTE, scope_g3)]} == {
        f"{kind}-3" for kind in ("hdr", "model", "query", "glob", "exact", "chat", "group")}


def test_a_route_edit_changes_one_table_and_a_listener_change_renames_everything() -> None:
    translator = Translator()
    before = translator.translate(_gateway())
    edited = translator.translate(_gateway(variant="-renamed"))
    changed = {(t, n) for t in (LISTENER, SCOPED_ROUTE, ROUTE)
               for n in edited.resources[t] if before.resources[t].get(n) != edited.resources[t][n]}
    assert len(changed) == 1 and next(iter(changed))[0] == ROUTE
    assert translator.last_stats.misses["table"] == 1
    limited = translator.translate(_gateway(rate_limits=(("a", ir.RateLimit(5, 5)),)))
    for type_url in (ROUTE, SCOPED_ROUTE):
        assert not set(limited.resources[type_url]) & set(before.resources[type_url])


def test_the_plugins_routes_have_tables_of_their_own() -> None:
    """`/ready` holds a check per server of the port (1.25 MB at 2,500 servers): no edit of
    other routes may re-send it, whatever table their key hashes to."""
    ready = tuple(f"s{i}" for i in range(50))
    result = translate(_gateway(ready_backends=ready))
    by_table = {name: [r.name for r in serialize.parse(t).virtual_hosts[0].routes]
                for name, t in result.resources[ROUTE].items()}
    plugin_tables = {name: routes for name, routes in by_table.items()
                     if routes[0] in ("modelroute/health", "modelroute/ready", "modelroute/metrics")}
    assert sorted(plugin_tables.values()) == [["modelroute/health"], ["modelroute/metrics"], ["modelroute/ready"]]
    # (the models list's routes share their paths' keys with user routes: hashed as theirs)
    translator = Translator()
    before = translator.translate(_gateway(ready_backends=ready))
    edited = translator.translate(_gateway("-renamed", ready_backends=ready))
    changed = [n for n, t in edited.resources[ROUTE].items() if before.resources[ROUTE].get(n) != t]
    assert len(changed) == 1 and changed[0] not in plugin_tables


def test_the_split_equals_a_fresh_translation_after_edits() -> None:
    translator = Translator()
    for variant in ("", "-x", "", "-y"):
        assert translator.translate(_gateway(variant)).resources == translate(_gateway(variant)).resources


def test_envoy_accepts_the_scoped_static_bootstrap() -> None:
    verdict = validate(engine.static_bootstrap(translate(_gateway()).resources))
    assert verdict.ok, verdict.message


# --- the split routes exactly as the single table, in a real Envoy ---------------------

def _named_answers(doc: dict[str, Any]) -> dict[str, Any]:
    """Every route of a static bootstrap answers its own name (which route matched is
    then visible to the client)."""
    def tables(hcm: dict[str, Any]) -> Iterator[dict[str, Any]]:
        if "route_config" in hcm:
            yield hcm["route_config"]
        for scope in hcm.get("scoped_routes", {}).get("scoped_route_configurations_list", {}).get(
                "scoped_route_configurations", []):
            yield scope["route_configuration"]

    for lst in doc["static_resources"]["listeners"]:
        for chain in lst["filter_chains"]:
            for network_filter in chain["filters"]:
                for table in tables(network_filter["typed_config"]):
                    for vhost in table["virtual_hosts"]:
                        for r in vhost["routes"]:
                            for action in ("route", "typed_per_filter_config"):
                                r.pop(action, None)
                            r["direct_response"] = {"status": 200, "body": {"inline_string": r.get("name", "")}}
    return doc


@pytest.fixture(scope="module")
def two_envoys(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, int]]:
    """The same gateway twice: one table (scoping off) and scoped."""
    ports = (free_port(), free_port())
    single = Translator(scoped=False).translate(_gateway(port=ports[0])).resources
    assert not single[SCOPED_ROUTE]
    docs = [engine.static_bootstrap(single, admin_port=free_port())]
    scoped = translate(_gateway(port=ports[1])).resources
    assert scoped[SCOPED_ROUTE]
    docs.append(engine.static_bootstrap(scoped, admin_port=free_port()))
    procs = []
    try:
        for n, doc in enumerate(docs):
            config = Path(tmp_path_factory.mktemp("envoy")) / f"bootstrap-{n}.json"
            for lst in doc["static_resources"]["listeners"]:
                lst["address"]["socket_address"]["address"] = "127.0.0.1"
            config.write_text(json.dumps(_named_answers(doc)))
            procs.append(subprocess.Popen([envoy_binary(), "-c", str(config), "--disable-hot-restart", "-l", "error",
                                           "--concurrency", "1", "--base-id", str(ports[n])],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
        for port in ports:
            wait_until(lambda port=port: _ask(port, "GET", "/health")[0] == 200, timeout=20, what="envoy /health")
        yield ports
    finally:
        for proc in procs:
            stop_process(proc)


def _ask(port: int, method: str, path: str, headers: dict[str, str] | None = None,
         body: bytes | None = None) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read().decode()
    except OSError:
        return 0, ""
    finally:
        conn.close()


def _requests() -> Iterator[tuple[str, str, dict[str, str], bytes | None]]:
    yield "GET", "/health", {}, None
    yield "GET", "/metrics/", {}, None
    yield "GET", "/", {}, None
    yield "GET", "/v1", {}, None
    yield "GET", "/nowhere/at/all", {}, None
    for n in (0, 7, 39):
        base = f"/v1/g{n}"
        model = json.dumps({"model": "big"}).encode()
        for path in (base, f"{base}/", f"{base}?x=1", f"{base}/other/deep", f"{base}/chat", f"{base}/chat/completions",
                     f"{base}/q", f"{base}/q?v=big", f"{base}/q?v=a", f"{base}/q/", f"{base}/exact", f"{base}/exact/",
                     f"{base}/exact?z", f"{base}/a/infer", f"{base}/a/infer/x", f"{base}//chat", f"{base}/./exact",
                     f"/v1/x/../g{n}/exact", f"{base}x/chat", f"/V1/g{n}/chat"):
            yield "GET", path, {}, None
        yield "GET", f"{base}/chat", {"x-user": "gold"}, None
        yield "GET", f"{base}/chat", {"x-user": "gold", "x-modelroute-scope": "forged/v1/g1"}, None
        yield "POST", f"{base}/chat/completions", {"content-type": "application/json"}, model
        yield "POST", f"{base}/chat", {"content-type": "application/json", "x-user": "gold"}, model


@pytest.mark.slow
def test_scoped_tables_route_every_request_as_the_single_table(two_envoys: tuple[int, int]) -> None:
    single, scoped = two_envoys
    compared = 0
    for method, path, headers, body in _requests():
        expected = _ask(single, method, path, headers, body)
        assert _ask(scoped, method, path, headers, body) == expected, (method, path, headers, expected)
        compared += expected[0] == 200
    assert compared > 50  # most requests did match a route (the comparison is not all 404s)


@given(st.text(min_size=1, max_size=40), st.text(min_size=1, max_size=40), st.text(max_size=20),
       st.lists(st.text(max_size=12), max_size=4))
def test_scope_bytes_equal_the_message_serialized(name: str, table: str, tag: str, key: list[str]) -> None:
    assert scopes.scope(name, table, tag, tuple(key)) == scopes.scope_message(name, table, tag, tuple(key)).SerializeToString(
        deterministic=True)
