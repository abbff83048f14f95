"""Node group → Target: role and scope decide what an Envoy is compiled for (SPEC 3.6)."""

from envoy.config.core.v3 import base_pb2
from google.protobuf import json_format

from modelroute.targets import Placement, target_for_group
from routing_engine.api.resources import ObjectKey
from xds_server.identity import node_group as metadata_node_group

PLACEMENT = Placement(listen_address="10.1.2.3", privileged_port_offset=7)


def _node(metadata: dict) -> base_pb2.Node:
    node = base_pb2.Node(id="n1", cluster="whatever")
    json_format.ParseDict(metadata, node.metadata)
    return node


def test_gateway_keeps_the_placement():
    target = target_for_group(metadata_node_group(_node({"role": "gateway"})), PLACEMENT)
    assert (target.role, target.address, target.port(80), target.port(8080)) == ("gateway", "10.1.2.3", 87, 8080)


def test_node_without_metadata_is_a_gateway():
    assert target_for_group(metadata_node_group(base_pb2.Node(id="x")), PLACEMENT).role == "gateway"


def test_sidecar_binds_loopback_and_reads_its_scope():
    group = metadata_node_group(_node({"role": "sidecar", "scope": {"namespaces": ["b", "a"],
                                                                     "servers": ["team/llm", "plain"]}}))
    target = target_for_group(group, PLACEMENT)
    assert target.role == "sidecar" and target.address == "127.0.0.1"
    assert target.namespaces == frozenset({"a", "b"})
    assert target.servers == frozenset({ObjectKey("ModelServer", "team", "llm"),
                                        ObjectKey("ModelServer", "default", "plain")})


def test_equal_scopes_share_a_group_whatever_the_node_cluster():
    one = _node({"role": "sidecar", "scope": {"namespaces": ["a"]}})
    two = _node({"role": "sidecar", "scope": {"namespaces": ["a"]}})
    two.cluster = "other"
    assert metadata_node_group(one) == metadata_node_group(two)


def test_unscoped_sidecar_sees_everything():
    target = target_for_group("sidecar", PLACEMENT)
    assert target.namespaces is None and target.servers is None


def test_unreadable_scope_narrows_to_nothing_rather_than_widening():
    target = target_for_group("sidecar:{not json", PLACEMENT)
    assert target.namespaces == frozenset() and target.servers == frozenset()


def test_cluster_rules_apply_to_every_group_alike():
    """Claims decide statuses: a sidecar must refuse what the gateway refuses."""
    placement = Placement(privileged_port_offset=10000, one_exposure_per_port=True, reserved_ports=frozenset({19002}))
    for group in ("gateway", "sidecar", 'sidecar:{"namespaces": ["a"]}', "sidecar:{bad"):
        target = target_for_group(group, placement)
        assert (target.one_exposure_per_port, target.reserved_ports, target.port(80)) == (True, frozenset({19002}), 10080)
