"""State-of-the-world ADS protocol rules, each checked over a real gRPC stream."""

from __future__ import annotations

from tests.xds.client import contents_of, names_of, res, until
from tests.xds.conftest import Env
from xds_server.snapshot import content_version
from xds_server.types import CLUSTER, ENDPOINT, LISTENER, ROUTE, SCOPED_ROUTE, SECRET


async def test_every_response_has_a_fresh_nonce_and_a_content_version(env: Env) -> None:
    env.set(res(LISTENER, "l1"))
    client = env.client()
    await client.request(LISTENER)
    first = await client.recv()
    assert first.nonce and names_of(first) == ["l1"]
    l1 = res(LISTENER, "l1")
    assert first.version_info == content_version([("l1", l1.version)])
    await client.ack(first)
    env.set(res(LISTENER, "l1", "v2"))
    second = await client.recv()
    assert second.nonce and second.nonce != first.nonce
    assert second.version_info != first.version_info


async def test_ack_and_nack_are_told_apart_by_error_detail(env: Env) -> None:
    env.set(res(CLUSTER, "c1"))
    client = env.client()
    await client.request(CLUSTER)
    good = await client.recv()
    await client.ack(good)
    env.set(res(CLUSTER, "c1", "bad"))
    bad = await client.recv()
    # A NACK may even carry the new version (e.g. a newly subscribed resource was bad):
    # only error_detail says it was rejected.
    await client.nack(bad, version=bad.version_info, error="cluster c1: bad lb policy")
    await client.expect_silence()
    await until(lambda: len(env.recorder.nacks) == 1, what="NACK seen")
    assert env.recorder.acks == [("gateway", CLUSTER, ["c1"], good.version_info)]
    assert env.recorder.nacks == [("gateway", CLUSTER, ["c1"], "cluster c1: bad lb policy", bad.version_info)]


async def test_acked_content_is_never_resent(env: Env) -> None:
    env.set(res(CLUSTER, "c1"), res(ENDPOINT, "c1"))
    client = env.client()
    await client.request(CLUSTER)
    cds = await client.recv()
    await client.ack(cds)
    await client.request(ENDPOINT, ["c1"])
    eds = await client.recv()
    await client.ack(eds, ["c1"])
    env.set(res(CLUSTER, "c1"), res(ENDPOINT, "c1"))  # a rebuild with identical content
    await client.request(ENDPOINT, ["c1"], version=eds.version_info, nonce=eds.nonce)  # same subscription again
    await client.expect_silence()


async def test_a_nacked_version_is_not_resent_but_the_next_one_is(env: Env) -> None:
    env.set(res(LISTENER, "l1"))
    client = env.client()
    await client.request(LISTENER)
    first = await client.recv()
    await client.ack(first)
    env.set(res(LISTENER, "l1", "bad"))
    bad = await client.recv()
    await client.nack(bad, version=first.version_info)
    env.set(res(LISTENER, "l1", "bad"), res(CLUSTER, "unrelated"))  # new snapshot, LDS unchanged
    await client.expect_silence()
    env.set(res(LISTENER, "l1", "fixed"))
    fixed = await client.recv()
    assert contents_of(fixed) == {"l1": "fixed"}


async def test_requests_with_a_stale_nonce_are_ignored(env: Env) -> None:
    env.set(res(ENDPOINT, "a"), res(ENDPOINT, "b"))
    client = env.client()
    await client.request(ENDPOINT, ["a"])
    n1 = await client.recv()
    await client.ack(n1, ["a"])
    env.set(res(ENDPOINT, "a", "v2"), res(ENDPOINT, "b"))
    n2 = await client.recv()
    # The client hadn't seen n2 yet when it asked for b: that request is stale.
    await client.request(ENDPOINT, ["a", "b"], version=n1.version_info, nonce=n1.nonce)
    await client.expect_silence()
    await client.ack(n2, ["a", "b"])
    n3 = await client.recv()
    assert names_of(n3) == ["b"]


async def test_wildcard_ends_with_an_explicit_name_and_star_restores_it(env: Env) -> None:
    env.set(res(LISTENER, "l1"), res(LISTENER, "l2"))
    client = env.client()
    await client.request(LISTENER)  # legacy wildcard: no names
    everything = await client.recv()
    assert names_of(everything) == ["l1", "l2"]
    await client.ack(everything, ["l2"])  # explicit name: the implicit wildcard ends
    only_l2 = await client.recv()
    assert names_of(only_l2) == ["l2"]
    await client.ack(only_l2, ["l2"])
    env.set(res(LISTENER, "l1"), res(LISTENER, "l2"), res(LISTENER, "l3"))
    await client.expect_silence()  # l3 is not subscribed any more
    await client.request(LISTENER, ["*", "l2"], version=only_l2.version_info, nonce=only_l2.nonce)
    back = await client.recv()
    assert names_of(back) == ["l1", "l2", "l3"]
    await client.ack(back, [])  # empty after naming things = unsubscribed from all
    env.set(res(LISTENER, "l4"))
    await client.expect_silence()


async def test_a_missing_resource_is_sent_when_it_appears(env: Env) -> None:
    env.set(res(ROUTE, "r1"))
    client = env.client()
    await client.request(ROUTE, ["r2"])
    await client.expect_silence()
    env.set(res(ROUTE, "r1"), res(ROUTE, "r2"))
    response = await client.recv()
    assert names_of(response) == ["r2"]


async def test_listeners_and_clusters_are_full_sets_so_dropping_one_removes_it(env: Env) -> None:
    env.set(res(CLUSTER, "c1"), res(CLUSTER, "c2"))
    client = env.client()
    await client.request(CLUSTER)
    both = await client.recv()
    await client.ack(both)
    env.set(res(CLUSTER, "c2"))
    after = await client.recv()
    assert names_of(after) == ["c2"]
    await client.ack(after)
    env.set()
    empty = await client.recv()
    assert names_of(empty) == []


async def test_routes_and_endpoints_are_only_sent_when_named_and_never_removed_by_absence(env: Env) -> None:
    env.set(res(ENDPOINT, "a"), res(ENDPOINT, "b"), res(ENDPOINT, "c"))
    client = env.client()
    await client.request(ENDPOINT, ["a", "b"])
    first = await client.recv()
    assert names_of(first) == ["a", "b"]  # c is not named
    await client.ack(first, ["a", "b"])
    env.set(res(ENDPOINT, "a"), res(ENDPOINT, "c"))  # b deleted: nothing to say in SotW
    await client.expect_silence()
    await client.request(ENDPOINT, ["a"], version=first.version_info, nonce=first.nonce)  # reference dropped
    await client.expect_silence()
    env.set(res(ENDPOINT, "a", "v2"), res(ENDPOINT, "c"))
    changed = await client.recv()
    assert contents_of(changed) == {"a": "v2"}


async def test_a_resubscribed_resource_is_resent_even_if_unchanged(env: Env) -> None:
    env.set(res(ROUTE, "r1"), res(ROUTE, "r2"))
    client = env.client()
    await client.request(ROUTE, ["r1", "r2"])
    first = await client.recv()
    await client.ack(first, ["r1"])
    await client.expect_silence()
    await client.request(ROUTE, ["r1", "r2"], version=first.version_info, nonce=first.nonce)
    again = await client.recv()
    assert names_of(again) == ["r2"]


async def test_at_most_one_unacknowledged_push_per_type(env: Env) -> None:
    env.set(res(ROUTE, "r1"))
    client = env.client()
    await client.request(ROUTE, ["r1"])
    first = await client.recv()
    env.set(res(ROUTE, "r1", "v2"))
    env.set(res(ROUTE, "r1", "v3"))
    await client.expect_silence()  # first is still unacknowledged
    await client.ack(first, ["r1"])
    latest = await client.recv()
    assert contents_of(latest) == {"r1": "v3"}  # both changes coalesced into one push


async def test_ads_answers_endpoints_and_secrets_while_a_cluster_update_is_unacknowledged(env: Env) -> None:
    """Envoy ACKs CDS only after its new clusters warmed, which needs their EDS (SPEC 3.8):
    EDS and SDS go out at once; listeners and routes wait for the clusters' ACK; routes
    do not wait for listeners (a warming listener needs its route table); listeners go
    after the route tables, once Envoy applied them (a replaced listener's fail closed)."""
    def world(content: str):  # type: ignore[no-untyped-def]
        return [res(t, n, content) for t, n in ((LISTENER, "l"), (ROUTE, "r"), (CLUSTER, "c"), (ENDPOINT, "c"),
                                                (SECRET, "s"))]

    client = env.client()
    for type_url, names in ((LISTENER, []), (ROUTE, ["r"]), (ENDPOINT, ["c"]), (CLUSTER, []), (SECRET, ["s"])):
        await client.request(type_url, names)
    await client.expect_silence(0.15)  # no snapshot yet
    subscribed = {LISTENER: [], ROUTE: ["r"], ENDPOINT: ["c"], CLUSTER: [], SECRET: ["s"]}
    env.set(*world("v1"))
    for content in ("v1", "v2"):
        first = [await client.recv() for _ in range(3)]
        assert [r.type_url for r in first] == [CLUSTER, ENDPOINT, SECRET], content
        await client.expect_silence(0.15)  # listeners and routes wait for the clusters
        for response in first[1:]:
            await client.ack(response, subscribed[response.type_url])
        await client.expect_silence(0.15)
        await client.ack(first[0])
        tables = await client.recv()
        assert tables.type_url == ROUTE, content  # RDS does not wait for LDS
        await client.expect_silence(0.15)  # the listener waits for the tables' ACK
        await client.ack(tables, subscribed[ROUTE])
        listeners = await client.recv()
        assert listeners.type_url == LISTENER, content
        await client.ack(listeners, subscribed[LISTENER])
        env.set(*world("v2"))


async def test_a_warming_clusters_endpoints_are_answered_before_its_cluster_update_is_acked(env: Env) -> None:
    env.set(res(CLUSTER, "a"), res(ENDPOINT, "a"))
    client = env.client()
    await client.request(CLUSTER)
    cds = await client.recv()
    await client.ack(cds)
    await client.request(ENDPOINT, ["a"])
    eds_a = await client.recv()
    await client.ack(eds_a, ["a"])
    env.set(res(CLUSTER, "a"), res(ENDPOINT, "a"), res(CLUSTER, "b"), res(ENDPOINT, "b"))
    added = await client.recv()
    assert added.type_url == CLUSTER and names_of(added) == ["a", "b"]
    # Envoy warms "b": it asks for its endpoints and holds the CDS ACK until they arrive.
    await client.request(ENDPOINT, ["a", "b"], version=eds_a.version_info, nonce=eds_a.nonce)
    eds = await client.recv()
    assert eds.type_url == ENDPOINT and names_of(eds) == ["b"]


async def test_removed_clusters_are_kept_until_routes_no_longer_need_them(env: Env) -> None:
    def world(route: str, *clusters: str):  # type: ignore[no-untyped-def]
        return [res(ROUTE, "r", route), *(res(CLUSTER, c) for c in clusters)]

    env.set(*world("to-a-and-b", "a", "b"))
    client = env.client()
    await client.request(CLUSTER)
    cds = await client.recv()
    await client.ack(cds)
    await client.request(ROUTE, ["r"])
    await client.ack(await client.recv(), ["r"])
    # The route stops sending to "b" and "b" is deleted in the same change: the route
    # goes first ("b" is kept: CDS would be unchanged), then "b" is removed.
    env.set(*world("to-a", "a"))
    routes = await client.recv()
    assert routes.type_url == ROUTE and contents_of(routes) == {"r": "to-a"}
    await client.expect_silence(0.15)
    await client.ack(routes, ["r"])
    removal = await client.recv()
    assert removal.type_url == CLUSTER and names_of(removal) == ["a"]


async def test_a_rejected_route_table_keeps_the_clusters_it_may_still_use(env: Env) -> None:
    env.set(res(ROUTE, "r", "to-b"), res(CLUSTER, "a"), res(CLUSTER, "b"))
    client = env.client()
    await client.request(CLUSTER)
    await client.ack(await client.recv())
    await client.request(ROUTE, ["r"])
    await client.ack(await client.recv(), ["r"])
    env.set(res(ROUTE, "r", "to-a-bad"), res(CLUSTER, "a"))
    rejected = await client.recv()
    assert rejected.type_url == ROUTE
    await client.nack(rejected, ["r"])
    await client.expect_silence()  # Envoy still routes to "b": it must stay
    env.set(res(ROUTE, "r", "to-a"), res(CLUSTER, "a"))
    fixed = await client.recv()
    assert fixed.type_url == ROUTE
    await client.ack(fixed, ["r"])
    removal = await client.recv()
    assert removal.type_url == CLUSTER and names_of(removal) == ["a"]


async def test_reconnect_with_the_current_version_gets_nothing(env: Env) -> None:
    snapshot = env.set(res(LISTENER, "l1"), res(ENDPOINT, "e1"))
    client = env.client()
    await client.request(LISTENER)
    lds = await client.recv()
    await client.ack(lds)
    await client.request(ENDPOINT, ["e1"])
    eds = await client.recv()
    client.close()
    # A restarted server computes the same versions from the same content.
    assert lds.version_info == content_version((n, r.version) for n, r in snapshot.of_type(LISTENER).items())
    again = env.client(node_id="envoy-1")
    await again.request(LISTENER, version=lds.version_info)
    await again.request(ENDPOINT, ["e1"], version=eds.version_info)
    await again.expect_silence()
    stale = env.client(node_id="envoy-2")
    await stale.request(LISTENER, version="something-else")
    assert names_of(await stale.recv()) == ["l1"]


async def test_node_groups_get_their_own_snapshots(env: Env) -> None:
    env.set(res(LISTENER, "gw"), group="gateway")
    env.set(res(LISTENER, "sc"), group="sidecar/ns-a")
    gateway = env.client(cluster="gateway")
    sidecar = env.client(cluster="sidecar/ns-a")
    await gateway.request(LISTENER)
    await sidecar.request(LISTENER)
    assert names_of(await gateway.recv()) == ["gw"]
    assert names_of(await sidecar.recv()) == ["sc"]


async def test_a_stream_waits_for_the_first_snapshot_of_its_group(env: Env) -> None:
    client = env.client(cluster="late")
    await client.request(CLUSTER)
    await client.expect_silence()
    env.set(res(CLUSTER, "c1"), group="late")
    assert names_of(await client.recv()) == ["c1"]


async def test_routes_and_endpoints_send_only_what_changed_with_a_whole_set_version(env: Env) -> None:
    env.set(res(ROUTE, "r1"), res(ROUTE, "r2"), res(ROUTE, "r3"))
    client = env.client()
    await client.request(ROUTE, ["r1", "r2", "r3"])
    first = await client.recv()
    assert names_of(first) == ["r1", "r2", "r3"]
    await client.ack(first, ["r1", "r2", "r3"])
    snapshot = env.set(res(ROUTE, "r1"), res(ROUTE, "r2", "v2"), res(ROUTE, "r3"))
    second = await client.recv()
    assert contents_of(second) == {"r2": "v2"}  # one edit, one resource on the wire
    assert second.version_info == content_version((n, r.version) for n, r in snapshot.of_type(ROUTE).items())
    await client.ack(second, ["r1", "r2", "r3"])
    # A reconnect at that version is up to date: nothing is resent.
    again = env.client(node_id="envoy-1b")
    await again.request(ROUTE, ["r1", "r2", "r3"], version=second.version_info)
    await again.expect_silence()


async def test_after_a_nack_a_new_envoy_of_the_group_gets_the_last_good_snapshot(env: Env) -> None:
    env.set(res(CLUSTER, "c1"), res(LISTENER, "l1"))
    first = env.client(node_id="envoy-a")
    await first.request(CLUSTER)
    cds = await first.recv()
    await first.ack(cds)
    await first.request(LISTENER)
    lds = await first.recv()
    await first.ack(lds)
    env.set(res(CLUSTER, "c1"), res(CLUSTER, "c2"), res(LISTENER, "l1", "bad"))
    cds2 = await first.recv()  # make-before-break: clusters first, and they are fine
    await first.ack(cds2)
    bad = await first.recv()
    await first.nack(bad, version=lds.version_info, error="listener l1: bad filter")
    await until(lambda: len(env.recorder.nacks) == 1, what="NACK seen")

    joiner = env.client(node_id="envoy-b")
    await joiner.request(CLUSTER)
    await joiner.request(LISTENER)
    got = {}
    for _ in range(2):
        response = await joiner.recv()
        got[response.type_url] = contents_of(response)
        await joiner.ack(response)
    # The last snapshot any client accepted entirely was the first one.
    assert got == {CLUSTER: {"c1": "v1"}, LISTENER: {"l1": "v1"}}

    env.set(res(CLUSTER, "c1"), res(CLUSTER, "c2"), res(LISTENER, "l1", "fixed"))
    fixed = {}
    for _ in range(2):
        response = await joiner.recv()
        fixed[response.type_url] = contents_of(response)
        await joiner.ack(response)
    assert fixed == {CLUSTER: {"c1": "v1", "c2": "v1"}, LISTENER: {"l1": "fixed"}}


async def test_a_cluster_warming_from_an_unacked_update_gets_its_endpoints_though_a_newer_snapshot_dropped_it(
        env: Env) -> None:
    """Envoy holds the CDS ACK until "b" has warmed; if the server answered its EDS
    request from the newer snapshot (no "b"), Envoy would wait out its 15 s fetch timeout
    and every route update would wait behind that CDS ACK."""
    env.set(res(CLUSTER, "a"), res(ENDPOINT, "a"))
    client = env.client()
    await client.request(CLUSTER)
    await client.ack(await client.recv())
    await client.request(ENDPOINT, ["a"])
    eds_a = await client.recv()
    await client.ack(eds_a, ["a"])
    env.set(res(CLUSTER, "a"), res(ENDPOINT, "a"), res(CLUSTER, "b"), res(ENDPOINT, "b"))
    cds = await client.recv()
    assert names_of(cds) == ["a", "b"]
    env.set(res(CLUSTER, "a"), res(ENDPOINT, "a"))  # "b" is gone again before Envoy ACKed it
    await client.request(ENDPOINT, ["a", "b"], version=eds_a.version_info, nonce=eds_a.nonce)  # warming "b"
    eds = await client.recv()
    assert eds.type_url == ENDPOINT and names_of(eds) == ["b"]
    await client.ack(eds, ["a", "b"])
    await client.ack(cds)  # "b" warmed: the CDS ACK comes, then the update without "b"
    removal = await client.recv()
    assert removal.type_url == CLUSTER and names_of(removal) == ["a"]


async def test_routing_scopes_are_a_full_set_that_waits_for_clusters_but_not_for_listeners(env: Env) -> None:
    """SRDS: Envoy subscribes by wildcard and takes each response as the whole scope set;
    scopes wait for the clusters their tables use, never for the listener (a warming
    listener needs its scopes first)."""
    env.set(res(CLUSTER, "c"), res(LISTENER, "l"), res(SCOPED_ROUTE, "s1"), res(ROUTE, "t1"))
    client = env.client()
    await client.request(CLUSTER)
    await client.request(LISTENER)
    await client.request(SCOPED_ROUTE)
    cds = await client.recv()
    assert cds.type_url == CLUSTER
    await client.expect_silence(0.15)  # listeners and scopes wait for the clusters
    await client.ack(cds)
    srds = await client.recv()
    assert srds.type_url == SCOPED_ROUTE and names_of(srds) == ["s1"]  # SRDS does not wait for LDS
    await client.expect_silence(0.15)  # the listener waits for the scopes' ACK
    await client.ack(srds)
    assert (await client.recv()).type_url == LISTENER
    env.set(res(CLUSTER, "c"), res(LISTENER, "l"), res(SCOPED_ROUTE, "s1"), res(SCOPED_ROUTE, "s2"),
            res(ROUTE, "t1"))
    assert names_of(await client.recv()) == ["s1", "s2"]  # the whole set, not the new scope alone


async def test_old_scopes_are_kept_while_the_listener_that_selects_them_still_runs(env: Env) -> None:
    """A listener change renames its scopes: the old ones stay on the client until it
    holds the new listener (a NACKed listener keeps the old one, which needs them)."""
    env.set(res(LISTENER, "l", "h1"), res(SCOPED_ROUTE, "l/h1/s"))
    client = env.client()
    await client.request(LISTENER)
    await client.request(SCOPED_ROUTE)
    await client.ack(await client.recv())
    await client.ack(await client.recv())
    env.set(res(LISTENER, "l", "h2"), res(SCOPED_ROUTE, "l/h2/s"))
    srds = await client.recv()
    assert names_of(srds) == ["l/h1/s", "l/h2/s"]  # old one kept
    await client.ack(srds)
    lds = await client.recv()
    assert lds.type_url == LISTENER
    await client.nack(lds, error="listener l: rejected")
    await client.expect_silence()  # the old listener still runs: its scopes stay
    env.set(res(LISTENER, "l", "h3"), res(SCOPED_ROUTE, "l/h3/s"))
    srds = await client.recv()
    assert {"l/h1/s", "l/h3/s"} <= set(names_of(srds))  # (it holds l/h2/s too: kept as well)
    await client.ack(srds)
    lds = await client.recv()
    assert lds.type_url == LISTENER
    await client.ack(lds)
    assert names_of(await client.recv()) == ["l/h3/s"]  # the listener caught up: old scopes go
