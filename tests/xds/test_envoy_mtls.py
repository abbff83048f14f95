"""mTLS between Envoy and the control plane: Envoy with its client certificate gets its
configuration; a client without one is refused."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from prometheus_client import CollectorRegistry

from tests.support import free_port
from tests.xds.envoy_support import EnvoyProcess, eds_cluster, endpoints, http_get, listener, make_certs, route_config
from tests.xds.test_envoy_integration import eventually
from xds_server import Snapshot, start_control_plane
from xds_server.bootstrap import XdsTls
from xds_server.tls import server_credentials
from xds_server.types import CLUSTER

pytestmark = pytest.mark.slow


async def test_envoy_gets_config_over_mtls_and_a_plaintext_client_is_refused(tmp_path: Path) -> None:
    certs = await asyncio.to_thread(make_certs, tmp_path)
    xds_port, port = free_port(), free_port()
    plane = await start_control_plane(
        xds_address=f"127.0.0.1:{xds_port}", admin_host=None, registry=CollectorRegistry(),
        credentials=server_credentials(certs["server.crt"], certs["server.key"], certs["ca.crt"]))
    envoy = None
    try:
        plane.cache.set_snapshot("gateway", Snapshot.build([
            eds_cluster("backend"), endpoints("backend", 9), listener("main", port, "routes"),
            route_config("routes", cluster="backend", direct={"/": "over-mtls"})]))
        tls = XdsTls(cert=certs["client.crt"], key=certs["client.key"], ca=certs["ca.crt"])
        envoy = await asyncio.to_thread(EnvoyProcess, tmp_path, xds_port=xds_port, delta=False, tls=tls)
        await eventually(lambda: http_get(f"http://127.0.0.1:{port}/") == (200, "over-mtls"), what="config via mTLS")

        # Server-authenticated TLS but no client certificate: the handshake is refused.
        creds = grpc.ssl_channel_credentials(root_certificates=certs["ca.crt"].read_bytes())
        async with grpc.aio.secure_channel(f"127.0.0.1:{xds_port}", creds) as channel:
            call = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel).StreamAggregatedResources()
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await call.write(discovery_pb2.DiscoveryRequest(
                    node=base_pb2.Node(id="intruder", cluster="gateway"), type_url=CLUSTER))
                await asyncio.wait_for(call.read(), 10)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        if envoy is not None:
            await asyncio.to_thread(envoy.stop)
        await plane.stop(grace=None)
