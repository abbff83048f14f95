"""Snapshots, consistency checks, node groups and the debounce of set_snapshot bursts."""

from __future__ import annotations

import asyncio
import time

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import scoped_route_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.service.discovery.v3 import discovery_pb2

from tests.xds.client import Res, res
from xds_server.cache import DuplicateResourceError, Snapshot, SnapshotCache, check_consistency, content_version
from xds_server.types import CLUSTER, ENDPOINT, LISTENER, ROUTE, SCOPED_ROUTE


def eds_cluster(name: str, service: str = "") -> Res:
    cluster = cluster_pb2.Cluster(name=name, type=cluster_pb2.Cluster.EDS)
    cluster.eds_cluster_config.eds_config.ads.SetInParent()
    cluster.eds_cluster_config.service_name = service
    return Res(CLUSTER, name, cluster.SerializeToString())


def rds_listener(name: str, route: str) -> Res:
    hcm = hcm_pb2.HttpConnectionManager(stat_prefix=name)
    hcm.rds.route_config_name = route
    hcm.rds.config_source.ads.SetInParent()
    listener = listener_pb2.Listener(name=name)
    network_filter = listener.filter_chains.add().filters.add(name="envoy.filters.network.http_connection_manager")
    network_filter.typed_config.Pack(hcm)
    return Res(LISTENER, name, listener.SerializeToString())


def scope(name: str, table: str) -> Res:
    return Res(SCOPED_ROUTE, name, scoped_route_pb2.ScopedRouteConfiguration(
        name=name, route_configuration_name=table).SerializeToString())


def test_snapshot_versions_come_from_content_not_order_or_time() -> None:
    a = Snapshot.build([res(CLUSTER, "c1"), res(CLUSTER, "c2")])
    b = Snapshot.build([res(CLUSTER, "c2"), res(CLUSTER, "c1")])
    c = Snapshot.build([res(CLUSTER, "c1"), res(CLUSTER, "c2", "v2")])
    assert a.version(CLUSTER) == b.version(CLUSTER) != c.version(CLUSTER)
    assert a == b


def test_snapshot_is_immutable_and_rejects_duplicates() -> None:
    snapshot = Snapshot.build([res(ROUTE, "r1")])
    with pytest.raises(TypeError):
        snapshot.of_type(ROUTE)["r2"] = res(ROUTE, "r2")  # type: ignore[index]
    with pytest.raises(AttributeError):
        snapshot.resources = {}  # type: ignore[misc]
    with pytest.raises(DuplicateResourceError, match="'r1'"):
        Snapshot.build([res(ROUTE, "r1"), res(ROUTE, "r1", "v2")])


def test_consistency_names_the_missing_references() -> None:
    broken = Snapshot.build([eds_cluster("c1"), eds_cluster("c2", service="svc2"), rds_listener("l1", "r1")])
    assert check_consistency(broken) == [
        "Cluster 'c1': EDS ClusterLoadAssignment 'c1' is not in the snapshot",
        "Cluster 'c2': EDS ClusterLoadAssignment 'svc2' is not in the snapshot",
        "Listener 'l1': RDS RouteConfiguration 'r1' is not in the snapshot",
    ]
    whole = Snapshot.build([eds_cluster("c1"), eds_cluster("c2", service="svc2"), rds_listener("l1", "r1"),
                            res(ENDPOINT, "c1"), res(ENDPOINT, "svc2"), res(ROUTE, "r1")])
    assert check_consistency(whole) == []
    assert check_consistency(Snapshot.build([scope("s1", "t1"), scope("s2", "t2"), res(ROUTE, "t1")])) == [
        "ScopedRouteConfiguration 's2': RDS RouteConfiguration 't2' is not in the snapshot"]


async def test_node_group_is_node_cluster_by_default_and_overridable() -> None:
    node = base_pb2.Node(id="sidecar-7", cluster="sidecar/ns-a")
    assert SnapshotCache().node_group(node) == "sidecar/ns-a"
    by_id = SnapshotCache(lambda n: n.id.split("-")[0])
    assert by_id.node_group(node) == "sidecar"


async def test_watch_is_called_with_newer_snapshots_until_cancelled() -> None:
    cache = SnapshotCache()
    seen: list[Snapshot] = []
    watch = cache.watch("g", seen.append)
    first = Snapshot.build([res(CLUSTER, "c1")])
    cache.set_snapshot("g", first)
    cache.set_snapshot("other", Snapshot.build([]))
    watch.cancel()
    cache.set_snapshot("g", Snapshot.build([res(CLUSTER, "c2")]))
    assert seen == [first]
    assert cache.get_snapshot("g") is not first


def test_a_snapshot_is_published_when_set_and_per_group() -> None:
    """The cache does not debounce (the control loop does, before it compiles)."""
    cache = SnapshotCache()
    seen: list[str] = []
    cache.watch("g", lambda s: seen.append("g"))
    cache.watch("h", lambda s: seen.append("h"))
    cache.set_snapshot("g", Snapshot.build([]))
    cache.set_snapshot("g", Snapshot.build([res(CLUSTER, "c")]))
    cache.set_snapshot("h", Snapshot.build([]))
    assert seen == ["g", "g", "h"]
    assert CLUSTER in cache.get_snapshot("g").resources  # type: ignore[union-attr]


def test_metadata_node_group_keys_by_role_and_scope() -> None:
    from google.protobuf import struct_pb2

    from xds_server.identity import node_group as metadata_node_group

    def node(metadata: dict) -> base_pb2.Node:  # type: ignore[type-arg]
        n = base_pb2.Node(id="x", cluster="ignored")
        n.metadata.CopyFrom(struct_pb2.Struct())
        n.metadata.update(metadata)
        return n

    assert metadata_node_group(base_pb2.Node(id="x")) == "gateway"
    assert metadata_node_group(node({"role": "gateway"})) == "gateway"
    a = metadata_node_group(node({"role": "sidecar", "scope": {"namespaces": ["a", "b"], "servers": []}}))
    b = metadata_node_group(node({"role": "sidecar", "scope": {"servers": [], "namespaces": ["a", "b"]}}))
    c = metadata_node_group(node({"role": "sidecar", "scope": {"namespaces": ["c"]}}))
    assert a == b == 'sidecar:{"namespaces":["a","b"],"servers":[]}'
    assert c != a


def test_a_snapshot_with_unchanged_content_is_ignored() -> None:
    """A recompile that changes nothing (e.g. after a status write) must not wake every
    stream."""
    published: list[Snapshot] = []
    cache = SnapshotCache()
    cache.watch("g", published.append)
    first = Snapshot.build([res(CLUSTER, "a", "1")])
    cache.set_snapshot("g", first)
    cache.set_snapshot("g", Snapshot.build([res(CLUSTER, "a", "1")]))  # same content: ignored
    changed = Snapshot.build([res(CLUSTER, "a", "2")])
    cache.set_snapshot("g", changed)
    assert published == [first, changed] and cache.get_snapshot("g") is changed


def test_what_a_subscription_selects_is_computed_once_per_snapshot_for_every_stream() -> None:
    snapshot = Snapshot.build([res(ROUTE, "a"), res(ROUTE, "b"), res(CLUSTER, "c")])
    named, version = snapshot.subset(ROUTE, frozenset({"b", "missing"}))
    assert list(named) == ["b"] and snapshot.subset(ROUTE, frozenset({"missing", "b"}))[0] is named
    assert version == content_version([("b", res(ROUTE, "b").version)])
    everything, whole = snapshot.subset(CLUSTER, None)
    assert list(everything) == ["c"] and whole == snapshot.version(CLUSTER)
    with pytest.raises(TypeError):
        named["x"] = res(ROUTE, "x")  # type: ignore[index]  # shared by every stream: read-only


def test_a_snapshot_of_per_type_mappings_equals_one_built_resource_by_resource() -> None:
    from types import MappingProxyType

    routes = MappingProxyType({"r1": res(ROUTE, "r1"), "r2": res(ROUTE, "r2")})
    clusters = MappingProxyType({"c": res(CLUSTER, "c")})
    extra = [res(LISTENER, "ready"), res(ROUTE, "ready")]
    first = Snapshot.of_types({ROUTE: routes, CLUSTER: clusters, ENDPOINT: {}}, extra)
    assert first == Snapshot.build([*routes.values(), *clusters.values(), *extra])
    assert first.of_type(CLUSTER) is clusters  # kept as handed over
    edited = MappingProxyType({"r1": res(ROUTE, "r1", "v2"), "r2": res(ROUTE, "r2")})
    second = Snapshot.of_types({ROUTE: edited, CLUSTER: clusters}, extra, previous=first)
    assert second == Snapshot.build([*edited.values(), *clusters.values(), *extra])
    other_extra = [res(LISTENER, "ready", "v2"), extra[1]]
    third = Snapshot.of_types({ROUTE: edited, CLUSTER: clusters}, other_extra, previous=second)
    assert third == Snapshot.build([*edited.values(), *clusters.values(), *other_extra])
    with pytest.raises(DuplicateResourceError, match="'r1'"):
        Snapshot.of_types({ROUTE: routes}, [res(ROUTE, "r1")])


def test_a_response_of_encoded_pieces_is_the_response_protobuf_builds() -> None:
    """Streams send an envelope (version, type, nonce) followed by each resource's
    piece, serialized once per snapshot: the client parses exactly the response that
    building it field by field gives, resources in the order sent."""
    resources = [res(CLUSTER, "b"), res(CLUSTER, "a", "v2"), res(CLUSTER, "c")]
    snapshot = Snapshot.build(resources)
    envelope = discovery_pb2.DiscoveryResponse(version_info="v9", type_url=CLUSTER, nonce="7")
    wire = envelope.SerializeToString() + b"".join(snapshot.encoded(r, delta=False) for r in resources)
    built = discovery_pb2.DiscoveryResponse(version_info="v9", type_url=CLUSTER, nonce="7",
                                            resources=[snapshot.as_any(r) for r in resources])
    assert discovery_pb2.DiscoveryResponse.FromString(wire) == built

    delta_envelope = discovery_pb2.DeltaDiscoveryResponse(system_version_info="v9", type_url=CLUSTER, nonce="8",
                                                          removed_resources=["gone"])
    wire = delta_envelope.SerializeToString() + b"".join(snapshot.encoded(r, delta=True) for r in resources)
    delta_built = discovery_pb2.DeltaDiscoveryResponse(
        system_version_info="v9", type_url=CLUSTER, nonce="8", removed_resources=["gone"],
        resources=[discovery_pb2.Resource(name=r.name, version=r.version, resource=snapshot.as_any(r))
                   for r in resources])
    assert discovery_pb2.DeltaDiscoveryResponse.FromString(wire) == delta_built
    assert snapshot.encoded(resources[0], delta=False) is snapshot.encoded(resources[0], delta=False)  # made once


def test_a_whole_selection_is_joined_once_for_every_stream_that_asks_and_carried_while_unchanged() -> None:
    """What a fresh Envoy is sent (every resource it subscribes to) is one body, built
    once per snapshot and subscription and shared; a subscription only one stream has is
    not kept (no second copy of it); an unchanged type's whole carries into the next
    snapshot, a changed one's does not, and so does the claim a reconnect is compared with."""
    routes = {n: res(ROUTE, n) for n in ("b", "a", "c")}
    clusters = {"x": res(CLUSTER, "x")}
    snapshot = Snapshot.of_types({ROUTE: routes, CLUSTER: clusters})
    names = frozenset({"a", "c", "missing"})
    for delta in (False, True):
        first = snapshot.whole(ROUTE, names, delta=delta)
        assert first.names == ("a", "c") and dict(first.versions) == {n: routes[n].version for n in "ac"}
        assert first.body == b"".join(snapshot.encoded(routes[n], delta=delta) for n in "ac")
        second = snapshot.whole(ROUTE, names, delta=delta)
        assert second == first and second is not first  # (the first ask keeps nothing)
        assert snapshot.whole(ROUTE, names, delta=delta) is second  # kept from the second on
    assert snapshot.whole(ROUTE, names, delta=True).body != snapshot.whole(ROUTE, names, delta=False).body
    everything = [snapshot.whole(CLUSTER, None, delta=False) for _ in range(2)][1]
    claim, route_claim = [(snapshot.claim(CLUSTER, None), snapshot.claim(ROUTE, names)) for _ in range(2)][1]
    assert claim is not None and route_claim is not None  # (built for the second asker)
    edited = Snapshot.of_types({ROUTE: {**routes, "a": res(ROUTE, "a", "v2")}, CLUSTER: clusters}, previous=snapshot)
    assert edited.whole(CLUSTER, None, delta=False) is everything
    assert edited.whole(ROUTE, names, delta=False).versions["a"] == res(ROUTE, "a", "v2").version
    assert claim is not None and edited.claim(CLUSTER, None) is claim and edited.claim(ROUTE, names) is None
