"""The Envoy launcher against the real binary, with a minimal static bootstrap of our own
(the real templates live in envoy/ and are tested with the xDS server)."""

from __future__ import annotations

import asyncio
import os
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from controller.local.envoy_process import EnvoyError, EnvoyProcess, find_envoy
from tests.support import envoy_binary, free_port

pytestmark = pytest.mark.slow


def direct_response_bootstrap(port: int, body: str) -> dict[str, Any]:
    return {
        "node": {"id": f"test-{port}", "cluster": "test"},
        "static_resources": {"listeners": [{
            "name": "hello",
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
            "filter_chains": [{"filters": [{
                "name": "envoy.filters.network.http_connection_manager",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                    "stat_prefix": "hello",
                    "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
                    "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [{
                        "match": {"prefix": "/"}, "direct_response": {"status": 200, "body": {"inline_string": body}}}]}]},
                }}]}],
        }]},
    }


def fetch(url: str) -> tuple[int, str]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=5) as resp:
        return resp.status, resp.read().decode()


def test_finds_the_venv_binary() -> None:
    assert os.path.realpath(find_envoy()) == os.path.realpath(envoy_binary())


async def test_two_envoys_run_side_by_side_and_stop_cleanly(tmp_path: Path) -> None:
    ports = [free_port(), free_port()]
    envoys = [EnvoyProcess(direct_response_bootstrap(p, f"hello {i}"), tmp_path / f"e{i}", name=f"gw{i}")
              for i, p in enumerate(ports)]
    try:
        await asyncio.gather(*(e.start() for e in envoys))
        for i, (e, port) in enumerate(zip(envoys, ports)):
            assert e.admin_address is not None and e.admin_address[0] == "127.0.0.1"
            assert await asyncio.to_thread(fetch, f"http://127.0.0.1:{port}/anything") == (200, f"hello {i}")
            stats = await e.stats(prefix="http.hello.")
            assert stats["http.hello.downstream_rq_2xx"] == 1
            dump = await e.config_dump(resource="static_listeners")
            assert dump["configs"][0]["listener"]["name"] == "hello"
        assert envoys[0].log_path.exists() and envoys[0].log_path.stat().st_size > 0
    finally:
        codes = await asyncio.gather(*(e.stop() for e in envoys))
    assert codes == [0, 0]
    assert not any(e.running for e in envoys)


async def test_admin_is_forced_to_loopback(tmp_path: Path) -> None:
    bootstrap = direct_response_bootstrap(free_port(), "x")
    bootstrap["admin"] = {"address": {"socket_address": {"address": "0.0.0.0", "port_value": 0}}}
    envoy = EnvoyProcess(bootstrap, tmp_path)
    assert envoy.config["admin"]["address"]["socket_address"]["address"] == "127.0.0.1"
    assert bootstrap["admin"]["address"]["socket_address"]["address"] == "0.0.0.0"  # caller's dict untouched


async def test_yaml_text_bootstrap_and_wait_reports_exit(tmp_path: Path) -> None:
    import yaml

    port = free_port()
    envoy = EnvoyProcess(yaml.safe_dump(direct_response_bootstrap(port, "from yaml")), tmp_path)
    async with envoy:
        assert await asyncio.to_thread(fetch, f"http://127.0.0.1:{port}/") == (200, "from yaml")
        waiter = asyncio.create_task(envoy.wait())
        assert (await envoy.admin_post("/quitquitquit"))[0] == 200
        assert await asyncio.wait_for(waiter, 10) == 0


async def test_rejected_bootstrap_raises_with_log_tail(tmp_path: Path) -> None:
    bootstrap = direct_response_bootstrap(free_port(), "x")
    bootstrap["static_resources"]["clusters"] = [{"name": "bad", "type": "NO_SUCH_TYPE"}]
    envoy = EnvoyProcess(bootstrap, tmp_path, name="broken")
    with pytest.raises(EnvoyError, match="envoy broken exited") as err:
        await envoy.start(timeout=20)
    assert "NO_SUCH_TYPE" in str(err.value)
    assert not envoy.running


async def test_missing_binary_is_a_clear_error(tmp_path: Path) -> None:
    envoy = EnvoyProcess(direct_response_bootstrap(free_port(), "x"), tmp_path, binary=str(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError):
        await envoy.start()


@pytest.mark.expects_fetch_timeout
async def test_an_initial_fetch_that_times_out_is_seen(tmp_path: Path) -> None:
    """The suite's guard (tests/conftest.py) can see it: an Envoy whose control plane never
    answers its CDS request reports the timeout (here 0.2 s instead of 15 s)."""
    import yaml
    from prometheus_client import CollectorRegistry

    from tests.support import fetch_timeouts
    from xds_server import start_control_plane
    from xds_server.bootstrap import render

    plane = await start_control_plane(xds_address="127.0.0.1:0", admin_host=None, registry=CollectorRegistry())
    bootstrap = yaml.safe_load(render("gateway", node_id="silent", cluster="gateway", xds_port=plane.xds_port,
                                      admin_port=free_port()))
    for config in ("cds_config", "lds_config"):  # no snapshot: never answered
        bootstrap["dynamic_resources"][config]["initial_fetch_timeout"] = "0.2s"
    envoy = EnvoyProcess(bootstrap, tmp_path, name="silent")
    try:
        await envoy.start()
        async with asyncio.timeout(5):
            while not (found := await fetch_timeouts(envoy)):
                await asyncio.sleep(0.05)
        assert found == {"cluster_manager.cds.init_fetch_timeout": 1, "listener_manager.lds.init_fetch_timeout": 1}
    finally:
        await envoy.stop()
        await plane.stop(grace=None)
