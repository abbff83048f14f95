"""The embedded building blocks together, through the real Envoy: replicas from the
runtime behind a static cluster (the xDS server is not involved), paths forwarded
unchanged, identity and injected failures visible to the client."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from controller.local.envoy_process import EnvoyProcess
from controller.local.replicas import Endpoints, ReplicaRuntime
from routing_engine.api.resources import ModelInfer, ObjectKey
from tests.support import free_port

pytestmark = pytest.mark.slow
KEY = ObjectKey("ModelInfer", "default", "llama")


def bootstrap(port: int, endpoints: list[int]) -> dict[str, Any]:
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "gw",
        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
        "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
            {"match": {"path_separated_prefix": "/v1/models/llama"}, "route": {"cluster": "llama"}}]}]},
    }
    return {
        "node": {"id": "pieces", "cluster": "test"},
        "static_resources": {
            "listeners": [{"name": "gw", "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
                           "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                                           "typed_config": hcm}]}]}],
            "clusters": [{"name": "llama", "type": "STATIC", "connect_timeout": "1s", "lb_policy": "ROUND_ROBIN",
                          "load_assignment": {"cluster_name": "llama", "endpoints": [{"lb_endpoints": [
                              {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": p}}}}
                              for p in endpoints]}]}}],
        },
    }


def post(url: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], dict[str, Any]]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"content-type": "application/json", **(headers or {})})
    try:
        with opener.open(req, timeout=5) as resp:
            return resp.status, dict(resp.headers), json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), json.loads(err.read())


async def test_replicas_serve_through_envoy(tmp_path: Path) -> None:
    published: list[Endpoints] = []
    runtime = ReplicaRuntime(on_endpoints=published.append, log_dir=tmp_path / "replicas")
    envoy: EnvoyProcess | None = None
    try:
        await runtime.reconcile([ModelInfer.model_validate({
            "apiVersion": "workload.matrixinfer.ai/v1alpha1", "kind": "ModelInfer",
            "metadata": {"name": "llama"}, "spec": {"modelRef": {"name": "llama-7b"}, "replicas": 2}})])
        for _ in range(300):
            if published and len(published[-1].get(KEY, ())) == 2 and all(e.healthy for e in published[-1][KEY]):
                break
            await asyncio.sleep(0.05)
        ports = [e.port for e in published[-1][KEY] if e.port is not None]
        assert len(ports) == 2
        port = free_port()
        envoy = EnvoyProcess(bootstrap(port, ports), tmp_path / "envoy")
        await envoy.start()
        url = f"http://127.0.0.1:{port}/v1/models/llama/v1/chat/completions"
        replies = [await asyncio.to_thread(post, url, {"messages": [{"role": "user", "content": "hi there"}]})
                   for _ in range(10)]
        assert {r[0] for r in replies} == {200}
        assert {r[1]["x-replica"] for r in replies} == {"0", "1"}
        assert {r[2]["path"] for r in replies} == {"/v1/models/llama/v1/chat/completions"}
        assert replies[0][2]["usage"]["prompt_tokens"] == 2
        status, headers, body = await asyncio.to_thread(post, url, {}, {"x-mock-status": "503"})
        assert status == 503 and body["served_by"]["modelinfer"] == "llama"
    finally:
        if envoy is not None:
            await envoy.stop()
        await runtime.close()
