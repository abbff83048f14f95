"""Kubernetes mode's `/metrics`, on the admin address `serve` binds (all interfaces in the
install), holds every promised series: the gateway Envoy pushes its stats over TCP statsd
as in a cluster, and every PromQL query of the dashboards asks only for what it holds.
(Embedded mode: tests/observability/test_metrics.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.local.envoy_process import EnvoyProcess
from controller.kubernetes.client import KubeClient
from modelroute.canary_wiring import merge_stats_sink, tcp_stats_sink
from modelroute.kubernetes_mode import KubernetesMode, KubernetesOptions
from routing_engine.api.resources import ObjectKey
from routing_engine import plugins as plugin
from tests.kubernetes.fakeapi import FakeKubeApi
from tests.kubernetes.helpers import endpoint_slice, eventually, mock_replica, model, model_infer, server
from tests.observability.promql import missing, queries, scrape
from tests.observability.scraping import RefusedByEnvoy, canary_route, drive, scrape_until_complete
from tests.support import free_port
from xds_server.bootstrap import render_dict

pytestmark = pytest.mark.slow


async def test_kubernetes_metrics_hold_every_series_and_every_dashboard_query(
        api: KubeClient, fake_api: FakeKubeApi, tmp_path: Path) -> None:
    gateway_port, bad_port = free_port(), free_port()
    replica_ports = {"v1": free_port(), "v2": free_port(), "poison": free_port()}
    fake_api.seed(model("llama"))
    for infer, port in replica_ports.items():
        fake_api.seed(model_infer(infer, model_name="llama"))
        slice_ = endpoint_slice(f"{infer}-x", service=infer, ready={"127.0.0.1": True}, port=port)
        slice_["metadata"]["labels"]["workload.matrixinfer.ai/modelinfer"] = infer
        fake_api.seed(slice_)
    for name in ("v1", "v2"):
        fake_api.seed(server(name, infer=name, port=gateway_port, path=f"/v1/models/{name}"))
    fake_api.seed(canary_route())
    replicas = [await mock_replica(infer, port) for infer, port in replica_ports.items()]
    mode = KubernetesMode(api, KubernetesOptions(
        identity="cp-0", system_namespace="matrixinfer-system", xds_host="127.0.0.1", xds_port=0,
        listen_address="127.0.0.1", lease_retry_s=0.05, admin_address="127.0.0.1:0",
        plugins=plugin.with_builtin([RefusedByEnvoy()])))
    envoy: EnvoyProcess | None = None
    try:
        await mode.start()
        assert mode.plane is not None and mode.admin_port is not None
        bootstrap = merge_stats_sink(
            render_dict("gateway", node_id="gw-0", cluster="gateway", xds_port=mode.plane.xds_port,
                        admin_port=free_port()),
            tcp_stats_sink("127.0.0.1", mode.canary.port, flush_interval_ms=250))
        envoy = EnvoyProcess(bootstrap, tmp_path, name="gateway", log_level="warning")
        await envoy.start()
        await eventually(lambda: mode.canary.runner is not None, timeout=10, what="this replica leads")
        await drive(gateway_port)
        fake_api.seed(server("poison", infer="poison", port=bad_port, path="/p"))
        await eventually(lambda: ObjectKey("ModelServer", "default", "poison") in mode.loop.quarantine.rejected,
                         timeout=10, what="Envoy rejected the poison server")
        text = await scrape_until_complete(mode.admin_port)
    finally:
        if envoy is not None:
            await envoy.stop()
        await mode.stop()
        for proc in replicas:
            proc.terminate()
            await proc.wait()
    series = scrape(text)
    problems = {f"{name} {where}: {expr}": gaps for name, where, expr in queries()
                if (gaps := missing(series, expr))}
    assert not problems, problems
    assert "modelroute_leader 1.0" in text
    assert "modelroute_informer_lag_seconds_count" in text and "modelroute_informer_lag_seconds_count 0.0" not in text
