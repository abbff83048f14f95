"""Issue #14: the xDS port trusts no client. Over mTLS an unauthenticated client gets
nothing; a client's certificate, not its node metadata, decides its node group; limits
bound what one client can make the server hold."""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import struct_pb2

from controller.certs import pki
from tests.xds.client import res
from tests.xds.conftest import Recorder
from xds_server.cache import Snapshot, SnapshotCache
from xds_server.grpc_app import start_grpc
from xds_server.identity import GATEWAY_IDENTITY, authorized_group, sidecar_identity
from xds_server.server import Limits, XdsServer
from xds_server.tls import ServerTls, TlsMaterial
from xds_server.types import CLUSTER, ROUTE

NOW = datetime.datetime.now(datetime.timezone.utc)
SERVER_NAME = "modelroute-xds"


@dataclass
class Pki:
    ca: pki.KeyPair
    server: pki.KeyPair

    def client(self, identity: str) -> pki.KeyPair:
        return pki.new_client(self.ca, identity, now=NOW)


@pytest.fixture(scope="module")
def certs() -> Pki:
    ca = pki.new_ca("modelroute-xds-ca", now=NOW)
    return Pki(ca, pki.new_serving(ca, [SERVER_NAME], now=NOW, ips=["127.0.0.1"]))


@dataclass
class Plane:
    port: int
    cache: SnapshotCache
    recorder: Recorder
    xds: XdsServer


@pytest.fixture
async def plane(certs: Pki) -> AsyncIterator[Plane]:
    recorder = Recorder()
    opened: list[str] = []
    recorder.on_stream_open = lambda stream: opened.append(stream.node_group)  # type: ignore[method-assign]
    recorder.opened = opened  # type: ignore[attr-defined]
    cache = SnapshotCache()
    xds = XdsServer(cache, [recorder], authorize=authorized_group, limits=Limits(max_streams=3, max_names=100,
                                                                                  max_name_bytes=64))
    tls = ServerTls(TlsMaterial(certs.server.cert_pem, certs.server.key_pem, certs.ca.cert_pem))
    server, port = await start_grpc(xds, "127.0.0.1:0", tls.credentials())
    cache.set_snapshot("gateway", Snapshot.build([res(CLUSTER, "gateway-cluster"), res(ROUTE, "secret-keys")]))
    cache.set_snapshot('sidecar:{"namespaces":["team-a"]}', Snapshot.build([res(CLUSTER, "team-a-cluster")]))
    try:
        yield Plane(port, cache, recorder, xds)
    finally:
        await server.stop(None)


def channel(plane: Plane, client: pki.KeyPair | None, ca: bytes | None) -> grpc.aio.Channel:
    if ca is None:
        return grpc.aio.insecure_channel(f"127.0.0.1:{plane.port}")
    credentials = grpc.ssl_channel_credentials(ca, client.key_pem if client else None,
                                               client.cert_pem if client else None)
    return grpc.aio.secure_channel(f"127.0.0.1:{plane.port}", credentials,
                                   options=[("grpc.ssl_target_name_override", SERVER_NAME)])


def node(role: str, scope: dict | None = None) -> base_pb2.Node:
    metadata = struct_pb2.Struct()
    metadata.update({"role": role, **({"scope": scope} if scope else {})})
    return base_pb2.Node(id=f"{role}-1", cluster=role, metadata=metadata)


async def first_response(ch: grpc.aio.Channel, n: base_pb2.Node, type_url: str = CLUSTER,
                         names: list[str] | None = None) -> discovery_pb2.DiscoveryResponse:
    call = ads_pb2_grpc.AggregatedDiscoveryServiceStub(ch).StreamAggregatedResources()
    try:
        await call.write(discovery_pb2.DiscoveryRequest(node=n, type_url=type_url, resource_names=names or []))
        return await asyncio.wait_for(call.read(), 3)
    finally:
        call.cancel()


async def test_an_unauthenticated_client_gets_nothing(plane: Plane, certs: Pki) -> None:
    stranger_ca = pki.new_ca("another-ca", now=NOW)
    stranger = pki.new_client(stranger_ca, GATEWAY_IDENTITY, now=NOW)
    attempts = [channel(plane, None, None),  # plaintext
                channel(plane, None, certs.ca.cert_pem),  # TLS, no client certificate
                channel(plane, stranger, certs.ca.cert_pem)]  # a gateway ID, signed by another CA
    for ch in attempts:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await first_response(ch, node("gateway"))
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        await ch.close()
    assert plane.recorder.opened == []  # type: ignore[attr-defined]  # no stream got as far as a node group


async def test_the_certificate_not_the_metadata_decides_the_node_group(plane: Plane, certs: Pki) -> None:
    gateway = channel(plane, certs.client(GATEWAY_IDENTITY), certs.ca.cert_pem)
    response = await first_response(gateway, node("gateway"))
    assert [a.value for a in response.resources] == [b"gateway-cluster:v1"]
    # A sidecar of team-a claiming to be a gateway (or another namespace) gets team-a's sidecar config.
    sidecar = channel(plane, certs.client(sidecar_identity("team-a")), certs.ca.cert_pem)
    for claimed in (node("gateway"), node("sidecar", {"namespaces": ["team-b", "team-a"]})):
        response = await first_response(sidecar, claimed)
        assert [a.value for a in response.resources] == [b"team-a-cluster:v1"]
    assert plane.recorder.opened[1:] == ['sidecar:{"namespaces":["team-a"]}'] * 2  # type: ignore[attr-defined]
    with pytest.raises(grpc.aio.AioRpcError) as refused:  # a certificate of ours without a known identity
        await first_response(channel(plane, certs.client("spiffe://matrixinfer.ai/admin"), certs.ca.cert_pem),
                             node("gateway"))
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    for ch in (gateway, sidecar):
        await ch.close()


async def test_limits_on_names_name_length_and_streams(plane: Plane, certs: Pki) -> None:
    ch = channel(plane, certs.client(GATEWAY_IDENTITY), certs.ca.cert_pem)
    for names, code in (([f"r{i}" for i in range(101)], grpc.StatusCode.RESOURCE_EXHAUSTED),
                        (["x" * 65], grpc.StatusCode.INVALID_ARGUMENT)):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await first_response(ch, node("gateway"), ROUTE, names)
        assert refused.value.code() == code
    calls = [ads_pb2_grpc.AggregatedDiscoveryServiceStub(ch).StreamAggregatedResources() for _ in range(4)]
    for call in calls:
        await call.write(discovery_pb2.DiscoveryRequest(node=node("gateway"), type_url=CLUSTER))
    outcomes = []
    for call in calls:
        try:
            await asyncio.wait_for(call.read(), 3)
            outcomes.append("served")
        except grpc.aio.AioRpcError as err:
            outcomes.append(err.code().name)
    assert sorted(outcomes) == ["RESOURCE_EXHAUSTED", "served", "served", "served"]
    for call in calls:
        call.cancel()
    await ch.close()


async def test_a_forged_nack_never_reaches_the_gateways_status(plane: Plane, certs: Pki) -> None:
    """Only the gateway group's verdicts set Programmed (modelroute.control_loop); a client
    must hold a gateway certificate to be in that group, whatever its metadata claims."""
    sidecar = channel(plane, certs.client(sidecar_identity("team-a")), certs.ca.cert_pem)
    call = ads_pb2_grpc.AggregatedDiscoveryServiceStub(sidecar).StreamAggregatedResources()
    await call.write(discovery_pb2.DiscoveryRequest(node=node("gateway"), type_url=CLUSTER))
    response = await asyncio.wait_for(call.read(), 3)
    await call.write(discovery_pb2.DiscoveryRequest(type_url=CLUSTER, response_nonce=response.nonce,
                                                    error_detail={"code": 3, "message": "forged rejection"}))
    for _ in range(100):
        if plane.recorder.nacks:
            break
        await asyncio.sleep(0.01)
    call.cancel()
    await sidecar.close()
    assert [(group, error) for group, _, _, error, _ in plane.recorder.nacks] == \
        [('sidecar:{"namespaces":["team-a"]}', "forged rejection")]
