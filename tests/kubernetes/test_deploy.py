"""deploy/ manifests: well-formed, the gateway bootstrap in sync with the template and
accepted by the real Envoy, RBAC granting every call the controller makes, webhooks
pointing at the routes the webhook server has and covering every CRD."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from controller.kubernetes import resources as r
from controller.kubernetes.webhook_server import make_app
from tests.support import REPO, envoy_binary
from controller.kubernetes.runtime import LEADER_LABEL
from modelroute.canary_wiring import merge_stats_sink, tcp_stats_sink
from xds_server.bootstrap import render_dict

DEPLOY = REPO / "deploy"
NS = "matrixinfer-system"
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "ValidatingWebhookConfiguration",
                  "MutatingWebhookConfiguration"}


def docs() -> list[dict[str, Any]]:
    return [d for f in sorted(DEPLOY.glob("*.yaml")) for d in yaml.safe_load_all(f.read_text()) if d]


def by_kind(kind: str) -> list[dict[str, Any]]:
    return [d for d in docs() if d["kind"] == kind]


def test_every_object_is_well_formed_and_in_the_system_namespace() -> None:
    assert len(docs()) >= 15
    names = set()
    for d in docs():
        assert d["apiVersion"] and d["kind"] and d["metadata"]["name"]
        if d["kind"] not in CLUSTER_SCOPED:
            assert d["metadata"].get("namespace") == NS, d["metadata"]["name"]
        names.add((d["kind"], d["metadata"]["name"]))
    assert len(names) == len(docs())  # no duplicates


def test_gateway_bootstrap_matches_the_template() -> None:
    (config_map,) = by_kind("ConfigMap")
    expected = merge_stats_sink(
        render_dict("gateway", node_id="gateway", cluster="modelroute-gateway", xds_port=18000, admin_port=19000,
                    xds_host=f"modelroute-xds.{NS}.svc.cluster.local"),
        tcp_stats_sink(f"modelroute-stats.{NS}.svc.cluster.local", 18002, flush_interval_ms=1000))
    assert yaml.safe_load(config_map["data"]["envoy.yaml"]) == expected
    xds = next(s for s in by_kind("Service") if s["metadata"]["name"] == "modelroute-xds")
    assert xds["spec"]["ports"][0]["port"] == 18000


def _control_plane_container() -> dict[str, Any]:
    (deployment,) = [d for d in by_kind("Deployment") if d["metadata"]["name"] == "modelroute"]
    container: dict[str, Any] = deployment["spec"]["template"]["spec"]["containers"][0]
    return container


def test_rate_limit_service_is_exposed_where_the_gateway_bootstrap_points() -> None:
    (config_map,) = by_kind("ConfigMap")
    bootstrap = yaml.safe_load(config_map["data"]["envoy.yaml"])
    (cluster,) = [c for c in bootstrap["static_resources"]["clusters"] if c["name"] == "modelroute_ratelimit"]
    address = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
    service = next(s for s in by_kind("Service") if address["address"].startswith(s["metadata"]["name"] + "."))
    port = next(p for p in service["spec"]["ports"] if p["port"] == address["port_value"])
    container = _control_plane_container()
    assert {p["name"]: p["containerPort"] for p in container["ports"]}[port["targetPort"]] == 18001
    assert container["args"][container["args"].index("--ratelimit-address") + 1] == "0.0.0.0:18001"
    redis = next(e for e in container["env"] if e["name"] == "MODELROUTE_REDIS_URL")
    assert redis["valueFrom"]["secretKeyRef"]["optional"] is True


@pytest.mark.slow
def test_gateway_bootstrap_is_accepted_by_envoy(tmp_path: Path) -> None:
    (config_map,) = by_kind("ConfigMap")
    bootstrap = tmp_path / "envoy.yaml"
    bootstrap.write_text(config_map["data"]["envoy.yaml"])
    done = subprocess.run([envoy_binary(), "--mode", "validate", "-c", str(bootstrap), "--service-node", "pod-1"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]


def granted(rules: list[dict[str, Any]], group: str, resource: str, verb: str) -> bool:
    return any(group in rule["apiGroups"] and resource in rule["resources"]
               and (verb in rule["verbs"] or "*" in rule["verbs"]) for rule in rules)


# What the controller calls, by resource: informers list+watch, writers as used.
NEEDED = {
    **{t: ("get", "list", "watch") for t in r.ENGINE_KINDS.values()},
    r.DEPLOYMENT: ("get", "list", "watch", "create", "update", "delete"),
    r.SERVICE: ("get", "list", "create", "update", "delete"),
    r.HPA: ("get", "list", "watch", "create", "update", "delete"),
    r.ENDPOINT_SLICE: ("list", "watch"),
}


def test_cluster_role_grants_every_call_the_controller_makes() -> None:
    role = next(c for c in by_kind("ClusterRole") if c["metadata"]["name"] == "modelroute-controller")
    for rtype, verbs in NEEDED.items():
        for verb in verbs:
            assert granted(role["rules"], rtype.group, rtype.plural, verb), f"{verb} {rtype}"
        if rtype.status_subresource and rtype.group.endswith("matrixinfer.ai"):
            assert granted(role["rules"], rtype.group, f"{rtype.plural}/status", "patch"), f"status of {rtype}"
    # The spec is the user's: the controller cannot rewrite it.
    assert not granted(role["rules"], r.MODEL_ROUTE.group, "modelroutes", "update")
    (lease_role,) = by_kind("Role")
    for verb in ("get", "create", "update"):
        assert granted(lease_role["rules"], r.LEASE.group, r.LEASE.plural, verb)


def test_stats_reach_the_leader_where_the_gateway_bootstrap_sends_them() -> None:
    (config_map,) = by_kind("ConfigMap")
    bootstrap = yaml.safe_load(config_map["data"]["envoy.yaml"])
    (sink,) = bootstrap["stats_sinks"]
    (cluster,) = [c for c in bootstrap["static_resources"]["clusters"]
                  if c["name"] == sink["typed_config"]["tcp_cluster_name"]]
    address = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
    service = next(s for s in by_kind("Service") if address["address"].startswith(s["metadata"]["name"] + "."))
    assert service["spec"]["selector"][LEADER_LABEL] == "true"  # the canary runner's replica only
    container = _control_plane_container()
    by_name = {p["name"]: p for p in container["ports"]}
    served = {(p["port"], p.get("protocol", "TCP")) for p in service["spec"]["ports"]
              if by_name[p["targetPort"]]["containerPort"] == p["port"]}
    assert served == {(address["port_value"], "TCP"), (address["port_value"], "UDP")}
    assert container["args"][container["args"].index("--stats-address") + 1] == f"0.0.0.0:{address['port_value']}"
    (lease_role,) = by_kind("Role")
    assert granted(lease_role["rules"], "", "pods", "patch")  # the leader labels its own pod


def test_seed_roles_are_published() -> None:
    names = {c["metadata"]["name"] for c in by_kind("ClusterRole")}
    assert {"model-registry-user", "inference-operator"} <= names


def test_webhooks_point_at_served_paths_and_cover_every_crd() -> None:
    served = {route.resource.canonical for route in make_app().router.routes() if route.resource is not None}
    crd_plurals = {yaml.safe_load(p.read_text())["spec"]["names"]["plural"] for p in (REPO / "crds").glob("*.yaml")}
    (validating,) = by_kind("ValidatingWebhookConfiguration")
    (mutating,) = by_kind("MutatingWebhookConfiguration")
    for config in (validating, mutating):
        for hook in config["webhooks"]:
            assert hook["clientConfig"]["service"]["path"] in served
            assert hook["admissionReviewVersions"] == ["v1"]
    covered = {res for hook in validating["webhooks"] for rule in hook["rules"] for res in rule["resources"]}
    assert covered == crd_plurals
    webhook_svc = next(s for s in by_kind("Service") if s["metadata"]["name"] == "modelroute-webhook")
    (deployment,) = [d for d in by_kind("Deployment") if d["metadata"]["name"] == "modelroute"]
    ports = {p["name"] for p in deployment["spec"]["template"]["spec"]["containers"][0]["ports"]}
    assert webhook_svc["spec"]["ports"][0]["targetPort"] in ports
