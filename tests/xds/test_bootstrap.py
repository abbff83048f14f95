"""Bootstrap templates render and are accepted by `envoy --mode validate`."""

from __future__ import annotations

import subprocess

import pytest

from tests.support import envoy_binary
from xds_server.bootstrap import render, render_dict


@pytest.mark.parametrize("role", ["gateway", "sidecar"])
@pytest.mark.parametrize("delta", [False, True])
def test_bootstrap_renders_and_envoy_accepts_it(role: str, delta: bool, tmp_path) -> None:  # type: ignore[no-untyped-def]
    kwargs = dict(node_id=f"{role}-1", cluster=f"{role}/default", xds_port=18000, admin_port=19901,
                  delta=delta, metadata={"scope": {"namespaces": ["team-a"]}})
    config = render_dict(role, **kwargs)  # type: ignore[arg-type]
    assert config["node"] == {"id": f"{role}-1", "cluster": f"{role}/default",
                              "metadata": {"role": role, "scope": {"namespaces": ["team-a"]}}}
    assert config["dynamic_resources"]["ads_config"]["api_type"] == ("DELTA_GRPC" if delta else "GRPC")
    assert config["admin"]["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 19901}
    # Traffic stats made on a cluster's first request (docs/decisions.md, "Failover clusters").
    assert config["deferred_stat_options"] == {"enable_deferred_creation_stats": True}
    clusters = {c["name"]: c for c in config["static_resources"]["clusters"]}
    admin_ep = clusters["modelroute_admin"]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]
    assert admin_ep["endpoint"]["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 19901}
    path = tmp_path / "bootstrap.yaml"
    path.write_text(render(role, **kwargs))  # type: ignore[arg-type]
    result = subprocess.run([envoy_binary(), "--mode", "validate", "-c", str(path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]


def test_bootstrap_rejects_an_unknown_role() -> None:
    with pytest.raises(ValueError, match="gateway or sidecar"):
        render("ingress", node_id="x", cluster="x", xds_port=1, admin_port=2)  # type: ignore[arg-type]
