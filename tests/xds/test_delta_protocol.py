"""Incremental (delta) ADS protocol rules over a real gRPC stream."""

from __future__ import annotations

from tests.xds.client import contents_of, names_of, res, until
from tests.xds.conftest import Env
from xds_server.types import CLUSTER, ENDPOINT, LISTENER, ROUTE


async def test_wildcard_gets_every_resource_with_its_own_version(env: Env) -> None:
    env.set(res(CLUSTER, "c1"), res(CLUSTER, "c2"))
    client = env.client(delta=True)
    await client.delta_request(CLUSTER)
    response = await client.recv()
    assert response.nonce
    assert {r.name: r.version for r in response.resources} == {
        "c1": res(CLUSTER, "c1").version, "c2": res(CLUSTER, "c2").version}
    assert list(response.removed_resources) == []


async def test_only_changed_resources_are_sent_and_deletions_are_removed_resources(env: Env) -> None:
    env.set(res(CLUSTER, "c1"), res(CLUSTER, "c2"), res(CLUSTER, "c3"))
    client = env.client(delta=True)
    await client.delta_request(CLUSTER)
    first = await client.recv()
    await client.delta_request(CLUSTER, nonce=first.nonce)
    env.set(res(CLUSTER, "c1", "v2"), res(CLUSTER, "c2"))
    update = await client.recv()
    assert update.nonce != first.nonce
    assert contents_of(update) == {"c1": "v2"}
    assert list(update.removed_resources) == ["c3"]
    await client.delta_request(CLUSTER, nonce=update.nonce)
    env.set(res(CLUSTER, "c1", "v2"), res(CLUSTER, "c2"))  # same content again
    await client.expect_silence()


async def test_reconnect_with_initial_resource_versions_sends_only_the_difference(env: Env) -> None:
    env.set(res(CLUSTER, "same"), res(CLUSTER, "changed", "v2"), res(CLUSTER, "new"))
    client = env.client(delta=True)
    await client.delta_request(CLUSTER, initial={
        "same": res(CLUSTER, "same").version,
        "changed": res(CLUSTER, "changed").version,
        "gone": res(CLUSTER, "gone").version,
    })
    response = await client.recv()
    assert contents_of(response) == {"changed": "v2", "new": "v1"}
    assert list(response.removed_resources) == ["gone"]


async def test_reconnect_holding_everything_gets_nothing(env: Env) -> None:
    env.set(res(LISTENER, "l1"), res(ROUTE, "r1"))
    client = env.client(delta=True)
    await client.delta_request(LISTENER, initial={"l1": res(LISTENER, "l1").version})
    await client.delta_request(ROUTE, ["r1"], initial={"r1": res(ROUTE, "r1").version})
    await client.expect_silence()


async def test_named_subscribe_missing_then_appears_then_unsubscribe(env: Env) -> None:
    env.set(res(ENDPOINT, "a"))
    client = env.client(delta=True)
    await client.delta_request(ENDPOINT, ["a", "b"])
    first = await client.recv()
    assert names_of(first) == ["a"]
    assert list(first.removed_resources) == ["b"]  # b doesn't exist: said once, explicitly
    await client.delta_request(ENDPOINT, nonce=first.nonce)
    env.set(res(ENDPOINT, "a"), res(ENDPOINT, "b"))
    appeared = await client.recv()
    assert names_of(appeared) == ["b"] and list(appeared.removed_resources) == []
    await client.delta_request(ENDPOINT, nonce=appeared.nonce)
    await client.delta_request(ENDPOINT, unsubscribe=["a"])
    await client.expect_silence()  # unsubscribing alone needs no answer
    env.set(res(ENDPOINT, "a", "v2"), res(ENDPOINT, "b"), res(ENDPOINT, "c"))
    await client.expect_silence()  # a is no longer of interest, c never was


async def test_subscribing_again_resends_even_an_unchanged_resource(env: Env) -> None:
    env.set(res(ROUTE, "r1"))
    client = env.client(delta=True)
    await client.delta_request(ROUTE, ["r1"])
    first = await client.recv()
    await client.delta_request(ROUTE, nonce=first.nonce)
    await client.delta_request(ROUTE, ["r1"])
    again = await client.recv()
    assert names_of(again) == ["r1"]


async def test_explicit_name_keeps_the_delta_wildcard_and_unsubscribing_it_is_answered(env: Env) -> None:
    env.set(res(CLUSTER, "c1"), res(CLUSTER, "c2"))
    client = env.client(delta=True)
    await client.delta_request(CLUSTER)  # legacy wildcard
    first = await client.recv()
    await client.delta_request(CLUSTER, ["c1", "x"], nonce=first.nonce)
    named = await client.recv()  # c1 resent on explicit subscription, x reported missing
    assert names_of(named) == ["c1"] and list(named.removed_resources) == ["x"]
    await client.delta_request(CLUSTER, nonce=named.nonce)
    env.set(res(CLUSTER, "c1"), res(CLUSTER, "c2"), res(CLUSTER, "c3"))
    wild = await client.recv()
    assert names_of(wild) == ["c3"]  # still wildcard after naming c1 (delta rule)
    await client.delta_request(CLUSTER, nonce=wild.nonce)
    await client.delta_request(CLUSTER, unsubscribe=["c1", "x"])
    answer = await client.recv()
    # c1 is covered by the wildcard: keep it; x is not: remove it.
    assert names_of(answer) == ["c1"] and list(answer.removed_resources) == ["x"]
    await client.delta_request(CLUSTER, nonce=answer.nonce)
    await client.delta_request(CLUSTER, ["c2"], unsubscribe=["*"])
    await client.recv()  # c2 is (re)sent for the explicit subscription
    env.set(res(CLUSTER, "c1", "v2"), res(CLUSTER, "c2"), res(CLUSTER, "c4"))
    await client.expect_silence()  # wildcard gone: c1 and c4 are not of interest


async def test_delta_nack_keeps_the_version_out_until_it_changes(env: Env) -> None:
    env.set(res(ROUTE, "r1"), res(ROUTE, "r2"))
    client = env.client(delta=True)
    await client.delta_request(ROUTE, ["r1", "r2"])
    first = await client.recv()
    await client.delta_request(ROUTE, nonce=first.nonce)
    env.set(res(ROUTE, "r1", "bad"), res(ROUTE, "r2"))
    bad = await client.recv()
    await client.delta_request(ROUTE, nonce=bad.nonce, error="route r1: invalid regex")
    await client.expect_silence()
    await until(lambda: len(env.recorder.nacks) == 1, what="NACK seen")
    assert env.recorder.nacks == [("gateway", ROUTE, ["r1"], "route r1: invalid regex", bad.system_version_info)]
    env.set(res(ROUTE, "r1", "bad"), res(ROUTE, "r2", "v2"))
    only_r2 = await client.recv()
    assert contents_of(only_r2) == {"r2": "v2"}  # the rejected r1 version is not sent again
    await client.delta_request(ROUTE, nonce=only_r2.nonce)
    env.set(res(ROUTE, "r1", "good"), res(ROUTE, "r2", "v2"))
    fixed = await client.recv()
    assert contents_of(fixed) == {"r1": "good"}
    await client.delta_request(ROUTE, nonce=fixed.nonce)
    await until(lambda: len(env.recorder.acks) == 3, what="third ACK")
    assert [a[2] for a in env.recorder.acks] == [["r1", "r2"], ["r2"], ["r1"]]


async def test_subscription_changes_count_even_with_a_stale_nonce(env: Env) -> None:
    env.set(res(ENDPOINT, "a"), res(ENDPOINT, "b"))
    client = env.client(delta=True)
    await client.delta_request(ENDPOINT, ["a"])
    first = await client.recv()
    await client.delta_request(ENDPOINT, nonce=first.nonce)
    env.set(res(ENDPOINT, "a", "v2"), res(ENDPOINT, "b"))
    second = await client.recv()
    await client.delta_request(ENDPOINT, ["b"], nonce=first.nonce)  # stale nonce, new subscription
    await client.expect_silence()  # second is still unacknowledged
    await client.delta_request(ENDPOINT, nonce=second.nonce)
    b = await client.recv()
    assert names_of(b) == ["b"]


async def test_delta_answers_endpoints_while_clusters_warm_and_holds_listeners_and_routes(env: Env) -> None:
    client = env.client(delta=True)
    await client.delta_request(LISTENER)
    await client.delta_request(ROUTE, ["r"])
    await client.delta_request(ENDPOINT, ["c"])
    await client.delta_request(CLUSTER)
    await client.expect_silence(0.15)
    env.set(*[res(t, n) for t, n in ((LISTENER, "l"), (ROUTE, "r"), (CLUSTER, "c"), (ENDPOINT, "c"))])
    first = [await client.recv() for _ in range(2)]
    assert [r.type_url for r in first] == [CLUSTER, ENDPOINT]
    await client.delta_request(ENDPOINT, nonce=first[1].nonce)
    await client.expect_silence(0.15)  # listeners and routes wait for the clusters' ACK
    await client.delta_request(CLUSTER, nonce=first[0].nonce)
    tables = await client.recv()
    assert tables.type_url == ROUTE  # route tables before listeners (a replaced one's fail closed first)
    await client.expect_silence(0.15)  # the listener waits for the tables' ACK
    await client.delta_request(ROUTE, nonce=tables.nonce)
    assert (await client.recv()).type_url == LISTENER


async def test_delta_withholds_a_cluster_removal_until_routes_caught_up(env: Env) -> None:
    env.set(res(ROUTE, "r", "to-a-and-b"), res(CLUSTER, "a"), res(CLUSTER, "b"), res(ENDPOINT, "b"))
    client = env.client(delta=True)
    await client.delta_request(CLUSTER)
    cds = await client.recv()
    await client.delta_request(CLUSTER, nonce=cds.nonce)
    await client.delta_request(ENDPOINT, ["b"])
    eds = await client.recv()
    await client.delta_request(ENDPOINT, nonce=eds.nonce)
    await client.delta_request(ROUTE, ["r"])
    rds = await client.recv()
    await client.delta_request(ROUTE, nonce=rds.nonce)
    env.set(res(ROUTE, "r", "to-a"), res(CLUSTER, "a"))
    routes = await client.recv()
    assert routes.type_url == ROUTE and contents_of(routes) == {"r": "to-a"}
    await client.expect_silence(0.15)  # neither "b" nor its endpoints removed yet
    await client.delta_request(ROUTE, nonce=routes.nonce)
    removals = {r.type_url: list(r.removed_resources) for r in [await client.recv(), await client.recv()]}
    assert removals == {CLUSTER: ["b"], ENDPOINT: ["b"]}


async def test_delta_at_most_one_unacknowledged_push_per_type(env: Env) -> None:
    env.set(res(ENDPOINT, "e"))
    client = env.client(delta=True)
    await client.delta_request(ENDPOINT, ["e"])
    first = await client.recv()
    env.set(res(ENDPOINT, "e", "v2"))
    env.set(res(ENDPOINT, "e", "v3"))
    await client.expect_silence()
    await client.delta_request(ENDPOINT, nonce=first.nonce)
    latest = await client.recv()
    assert contents_of(latest) == {"e": "v3"}


async def test_a_first_wildcard_request_is_answered_even_with_nothing_to_send(env: Env) -> None:
    """Envoy's initialization waits for the first CDS/LDS answer; without one it waits
    for its 15 s initial_fetch_timeout (an empty world at start-up)."""
    env.set(res(ENDPOINT, "unrelated"))
    client = env.client(delta=True)
    await client.delta_request(CLUSTER)
    empty = await client.recv()
    assert empty.type_url == CLUSTER and not empty.resources and not empty.removed_resources
    await client.delta_request(CLUSTER, nonce=empty.nonce)
    await client.expect_silence()  # answered once; nothing more until something changes


async def test_delta_answers_a_warming_cluster_from_the_unacked_update(env: Env) -> None:
    env.set(res(CLUSTER, "a"))
    client = env.client(delta=True)
    await client.delta_request(CLUSTER)
    first = await client.recv()
    await client.delta_request(CLUSTER, nonce=first.nonce)
    env.set(res(CLUSTER, "a"), res(CLUSTER, "b"), res(ENDPOINT, "b"))
    cds = await client.recv()
    assert names_of(cds) == ["b"]
    env.set(res(CLUSTER, "a"))  # "b" dropped before the ACK
    await client.delta_request(ENDPOINT, ["b"])  # Envoy warms "b"
    eds = await client.recv()
    assert eds.type_url == ENDPOINT and names_of(eds) == ["b"] and not eds.removed_resources
