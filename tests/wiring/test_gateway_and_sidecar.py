"""One control plane, two Envoys: a gateway and a sidecar scoped to one namespace (SPEC 3.6).

The gateway binds its listeners on 127.0.0.2 and serves every ModelServer; the sidecar
binds 127.0.0.1 and receives only the namespace it asked for in its node metadata.
"""

from __future__ import annotations

import asyncio
import textwrap
from pathlib import Path

import aiohttp
import pytest

from controller.local.envoy_process import EnvoyProcess
from modelroute.embedded import Embedded, EmbeddedOptions
from tests.support import free_port
from xds_server.bootstrap import render_dict

pytestmark = pytest.mark.slow


def _server(namespace: str, name: str, port: int) -> str:
    return textwrap.dedent(f"""
        apiVersion: workload.matrixinfer.ai/v1alpha1
        kind: ModelInfer
        metadata: {{name: {name}, namespace: {namespace}}}
        spec: {{modelRef: {{name: m}}, replicas: 1}}
        ---
        apiVersion: networking.matrixinfer.ai/v1alpha1
        kind: ModelServer
        metadata: {{name: {name}, namespace: {namespace}}}
        spec:
          modelInferRef: {{name: {name}}}
          service: {{port: {port}}}
          routing: {{path: /v1/models/{name}}}
        ---
        """)


async def _get(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3)) as session:
        async with session.post(url, json={}) as response:
            return response.status, response.headers.get("x-modelinfer", "")


async def _eventually(url: str, expected: tuple[int, str], timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    last: object = None
    while asyncio.get_running_loop().time() < deadline:
        try:
            last = await _get(url)
            if last == expected:
                return
        except aiohttp.ClientError as err:
            last = err
        await asyncio.sleep(0.1)
    raise AssertionError(f"{url}: expected {expected}, last saw {last}")


async def test_sidecar_gets_only_its_scope_and_binds_loopback(tmp_path: Path) -> None:
    port_a, port_b = free_port(), free_port()
    (tmp_path / "servers.yaml").write_text(_server("team-a", "alpha", port_a) + _server("team-b", "beta", port_b))
    app = Embedded(EmbeddedOptions(directory=tmp_path, xds_port=0, listen_address="127.0.0.2",
                                   privileged_port_offset=0))
    sidecar: EnvoyProcess | None = None
    try:
        await app.start()
        await app.wait_ready(timeout=30)
        assert app.plane is not None
        bootstrap = render_dict("sidecar", node_id="app-1", cluster="sidecars", xds_port=app.plane.xds_port,
                                admin_port=free_port(), metadata={"scope": {"namespaces": ["team-a"]}})
        sidecar = EnvoyProcess(bootstrap, tmp_path / ".modelroute", name="sidecar", log_level="warning")
        await sidecar.start()

        # The gateway serves both namespaces on its own address.
        await _eventually(f"http://127.0.0.2:{port_a}/v1/models/alpha/infer", (200, "team-a/alpha"))
        await _eventually(f"http://127.0.0.2:{port_b}/v1/models/beta/infer", (200, "team-b/beta"))
        # The sidecar serves its namespace on loopback, and nothing of the other one.
        await _eventually(f"http://127.0.0.1:{port_a}/v1/models/alpha/infer", (200, "team-a/alpha"))
        listeners = await sidecar.config_dump(resource="dynamic_listeners")
        ports = sorted(l["active_state"]["listener"]["address"]["socket_address"]["port_value"]
                       for l in listeners["configs"])
        assert ports == [port_a]
        with pytest.raises(aiohttp.ClientConnectionError):
            await _get(f"http://127.0.0.1:{port_b}/v1/models/beta/infer")
        # Two node groups were compiled: the gateway's and the scoped sidecars'.
        assert sorted(app.loop.compiled) == ["gateway", 'sidecar:{"namespaces":["team-a"]}']
    finally:
        if sidecar is not None:
            await sidecar.stop()
        await app.stop()
