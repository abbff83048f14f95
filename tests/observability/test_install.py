"""The `monitoring` overlay: a ServiceMonitor that reaches every control plane replica's
/metrics (through the base's admin Service, on the port `serve` binds on all
interfaces), and the dashboards as a ConfigMap for Grafana's sidecar, byte for byte."""

from __future__ import annotations

import json

from tests.kubernetes.rendered import arg, by_kind, container, named
from tests.observability.promql import DASHBOARDS

OVERLAY = "overlays/monitoring"


def test_the_service_monitor_scrapes_the_admin_port_of_every_replica() -> None:
    (monitor,) = by_kind("ServiceMonitor", OVERLAY)
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["path"] == "/metrics"
    services = [s for s in by_kind("Service", OVERLAY)
                if monitor["spec"]["selector"]["matchLabels"].items() <= s["metadata"].get("labels", {}).items()]
    assert [s["metadata"]["name"] for s in services] == ["modelroute-admin"]
    (service,) = services
    assert service["metadata"]["namespace"] in monitor["spec"]["namespaceSelector"]["matchNames"]
    port = next(p for p in service["spec"]["ports"] if p["name"] == endpoint["port"])
    pod = named("Deployment", "modelroute", OVERLAY)["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod.items()  # every replica, not only the leader
    control_plane = container("modelroute", OVERLAY)
    container_port = next(p for p in control_plane["ports"] if p["name"] == port["targetPort"])
    assert arg(control_plane, "--admin-address") == f"0.0.0.0:{container_port['containerPort']}"


def test_the_dashboards_ship_as_a_config_map_for_grafana() -> None:
    config_map = named("ConfigMap", "modelroute-dashboards", OVERLAY)
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    files = {p.name: p.read_text() for p in DASHBOARDS.glob("*.json")}
    assert config_map["data"] == files
    for text in files.values():
        doc = json.loads(text)
        assert doc["uid"].startswith("modelroute-") and doc["panels"]
