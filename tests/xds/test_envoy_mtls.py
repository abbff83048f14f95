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


async def test_a_gateway_gets_its_certificate_when_the_secret_appears_and_a_renewal_without_restart(
        tmp_path: Path) -> None:
    """What happens in a cluster: the gateway starts before the control plane has issued
    its certificate (an optional Secret volume, still empty); once the kubelet writes the
    Secret, Envoy (file-based SDS, watched directory) connects over mTLS at once; a renewed
    certificate is loaded without a restart."""
    import datetime
    import json
    import subprocess

    from controller.certs import pki
    from tests.support import envoy_binary, kubelet_write, stop_process
    from xds_server.bootstrap import MountedTls, render_dict
    from xds_server.identity import GATEWAY_IDENTITY, authorized_group
    from xds_server.tls import ServerTls, TlsMaterial

    now = datetime.datetime.now(datetime.timezone.utc)
    ca = pki.new_ca("xds-ca", now=now)
    server = pki.new_serving(ca, ["modelroute-xds.test.svc"], now=now, ips=["127.0.0.1"])
    secret, sds = tmp_path / "secret", tmp_path / "sds"
    secret.mkdir()
    sds.mkdir()
    plane = await start_control_plane(xds_address="127.0.0.1:0", admin_host=None, registry=CollectorRegistry(),
                                      authorize=authorized_group,
                                      credentials=ServerTls(TlsMaterial(server.cert_pem, server.key_pem,
                                                                        ca.cert_pem)).credentials())
    port, admin = free_port(), free_port()
    plane.cache.set_snapshot("gateway", Snapshot.build([
        eds_cluster("backend"), endpoints("backend", 9), listener("main", port, "routes"),
        route_config("routes", cluster="backend", direct={"/": "over-mtls"})]))
    mounted = MountedTls(str(secret), str(sds), ("modelroute-xds.test.svc",))
    for name, text in mounted.sds_files().items():
        (sds / name).write_text(text)
    bootstrap = tmp_path / "envoy.json"
    bootstrap.write_text(json.dumps(render_dict("gateway", node_id="gw", cluster="gateway", xds_port=plane.xds_port,
                                                admin_port=admin, tls=mounted)))
    log = (tmp_path / "envoy.log").open("wb")
    proc = subprocess.Popen([envoy_binary(), "-c", str(bootstrap), "--disable-hot-restart", "--concurrency", "1"],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        await eventually(lambda: http_get(f"http://127.0.0.1:{admin}/ready")[0] != 0, what="envoy admin")
        assert http_get(f"http://127.0.0.1:{port}/")[0] == 0  # no certificate yet: no config
        first = pki.new_client(ca, GATEWAY_IDENTITY, now=now)
        loop = asyncio.get_running_loop()
        written = loop.time()
        kubelet_write(secret, {"tls.crt": first.cert_pem, "tls.key": first.key_pem, "ca.crt": ca.cert_pem})
        await eventually(lambda: http_get(f"http://127.0.0.1:{port}/") == (200, "over-mtls"), what="config via mTLS")
        assert loop.time() - written < 1.0, "served more than 1 s after the Secret appeared"

        def serial() -> str:
            certs = json.loads(http_get(f"http://127.0.0.1:{admin}/certs")[1])["certificates"]
            return next(c["cert_chain"][0]["serial_number"] for c in certs if c["cert_chain"])

        before = serial()
        renewed = pki.new_client(ca, GATEWAY_IDENTITY, now=now)
        kubelet_write(secret, {"tls.crt": renewed.cert_pem, "tls.key": renewed.key_pem, "ca.crt": ca.cert_pem})
        await eventually(lambda: serial() != before, what="the renewed certificate loaded")
        assert int(serial(), 16) == pki.load(renewed.cert_pem).serial_number
    finally:
        stop_process(proc)
        log.close()
        await plane.stop(grace=None)
