"""The install (`kubectl kustomize deploy/base` and every overlay): well-formed, the gateway
bootstrap in sync with the template and accepted by the real Envoy, RBAC granting every
call the controller makes, webhooks pointing at the routes the webhook server has and
covering every CRD, ports and probes consistent across the control plane, the gateway
and their Services, and every pod within the `restricted` Pod Security Standard."""

from __future__ import annotations

import os
import re
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from controller.kubernetes import resources as r
from controller.kubernetes.webhook_server import make_app
from tests.kubernetes.rendered import OVERLAYS, arg, by_kind, container, named, rendered
from tests.support import REPO, envoy_binary
from controller.kubernetes.runtime import LEADER_LABEL
from modelroute.canary_wiring import merge_stats_sink, tcp_stats_sink
from modelroute.kubernetes_mode import GATEWAY_ADMIN_PORT
from controller.kubernetes.xds_certs import CA_SECRET, GATEWAY_SECRET
from modelroute import gateway_bootstrap

NS = "matrixinfer-system"
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "ValidatingWebhookConfiguration",
                  "MutatingWebhookConfiguration"}


def docs() -> list[dict[str, Any]]:
    return rendered()


def test_every_object_is_well_formed_and_in_the_system_namespace() -> None:
    assert len(docs()) >= 15
    names = set()
    for d in docs():
        assert d["apiVersion"] and d["kind"] and d["metadata"]["name"]
        if d["kind"] not in CLUSTER_SCOPED:
            assert d["metadata"].get("namespace") == NS, d["metadata"]["name"]
        names.add((d["kind"], d["metadata"]["name"]))
    assert len(names) == len(docs())  # no duplicates


def test_gateway_bootstrap_is_generated_and_current() -> None:
    """deploy/base/gateway-bootstrap.yaml is what `scripts/render_gateway_bootstrap.py`
    writes from the renderers the tests start Envoys with (rerun it after a change)."""
    assert (REPO / "deploy" / "base" / "gateway-bootstrap.yaml").read_text() == gateway_bootstrap.manifest(NS)
    (config_map,) = by_kind("ConfigMap")
    assert config_map["data"] == gateway_bootstrap.config_map(NS)["data"]
    xds = next(s for s in by_kind("Service") if s["metadata"]["name"] == "modelroute-xds")
    assert xds["spec"]["ports"][0]["port"] == 18000


def test_gateways_reach_the_control_plane_over_mtls_with_the_certificate_it_issues() -> None:
    """Every channel of the gateway to the control plane (xDS, rate limits, stats) uses the
    client certificate of Secret modelroute-gateway-xds (mounted where the SDS files of the
    bootstrap say, optional: the leader issues it), checked against the control plane's
    Service names; the control plane requires it (--xds-tls auto)."""
    (config_map,) = by_kind("ConfigMap")
    bootstrap = yaml.safe_load(config_map["data"]["envoy.yaml"])
    clusters = {c["name"]: c for c in bootstrap["static_resources"]["clusters"]}
    for name in ("modelroute_xds", "modelroute_ratelimit", "modelroute_stats"):
        common = clusters[name]["transport_socket"]["typed_config"]["common_tls_context"]
        assert common["tls_certificate_sds_secret_configs"][0]["sds_config"]["path_config_source"]["path"] == \
            f"{gateway_bootstrap.SDS_DIR}/client.yaml", name
        sans = {m["matcher"]["exact"] for m in
                common["combined_validation_context"]["default_validation_context"]["match_typed_subject_alt_names"]}
        host = clusters[name]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
        assert host["socket_address"]["address"] in sans, name
    gateway = container("modelroute-gateway")
    mounts = {m["name"]: m["mountPath"] for m in gateway["volumeMounts"]}
    (deployment,) = [d for d in by_kind("Deployment") if d["metadata"]["name"] == "modelroute-gateway"]
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    secret_volume = next(n for n, v in volumes.items() if "secret" in v)
    assert volumes[secret_volume]["secret"] == {"secretName": GATEWAY_SECRET, "optional": True}
    assert mounts[secret_volume] == gateway_bootstrap.SECRET_DIR
    assert arg(container("modelroute"), "--xds-tls") == "auto"
    for name in (CA_SECRET, GATEWAY_SECRET):  # the leader writes them, every replica reads the CA
        for verb in ("get", "watch", "update"):
            assert granted(rules_of("Role", "modelroute-system"), "", "secrets", verb, name), (name, verb)


def _control_plane_container() -> dict[str, Any]:
    return container("modelroute")


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
    secret = tmp_path / "xds-client"  # an optional Secret not issued yet: the kubelet mounts it empty
    secret.mkdir()
    for key, text in config_map["data"].items():  # mounted as the pod mounts them
        text = text.replace(gateway_bootstrap.SDS_DIR, str(tmp_path)).replace(gateway_bootstrap.SECRET_DIR, str(secret))
        (tmp_path / key).write_text(text)
    bootstrap = tmp_path / "envoy.yaml"
    done = subprocess.run([envoy_binary(), "--mode", "validate", "-c", str(bootstrap), "--service-node", "pod-1"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]


def granted(rules: list[dict[str, Any]], group: str, resource: str, verb: str, name: str | None = None) -> bool:
    """Whether some rule allows `verb` on `resource` (on the object `name` when given;
    a rule with resourceNames allows nothing without a name)."""
    return any(group in rule["apiGroups"] and resource in rule["resources"]
               and (verb in rule["verbs"] or "*" in rule["verbs"])
               and (not rule.get("resourceNames") or name in rule["resourceNames"]) for rule in rules)


def rules_of(kind: str, name: str, path: str = "base") -> list[dict[str, Any]]:
    return list(named(kind, name, path)["rules"])


def bound(kind: str, role: str, path: str = "base") -> bool:
    """The control plane's ServiceAccount is bound to `role` (a ClusterRole or Role)."""
    binding_kind = "ClusterRoleBinding" if kind == "ClusterRole" else "RoleBinding"
    return any(b["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": role}
               and {"kind": "ServiceAccount", "name": "modelroute", "namespace": NS} in b["subjects"]
               for b in by_kind(binding_kind, path))


# What the controller calls, by resource: informers list+watch, writers as used.
NEEDED = {
    **{t: ("get", "list", "watch") for t in r.ENGINE_KINDS.values() if t != r.SECRET},
    r.DEPLOYMENT: ("get", "list", "watch", "create", "update", "delete"),
    r.SERVICE: ("get", "list", "create", "update", "delete"),
    r.HPA: ("get", "list", "watch", "create", "update", "delete"),
    r.ENDPOINT_SLICE: ("list", "watch"),
    r.EVENT: ("create", "patch"),
}


def test_cluster_role_grants_every_call_the_controller_makes() -> None:
    rules = rules_of("ClusterRole", "modelroute-controller")
    assert bound("ClusterRole", "modelroute-controller")
    for rtype, verbs in NEEDED.items():
        for verb in verbs:
            assert granted(rules, rtype.group, rtype.plural, verb), f"{verb} {rtype}"
        if rtype.status_subresource and rtype.group.endswith("matrixinfer.ai"):
            assert granted(rules, rtype.group, f"{rtype.plural}/status", "patch"), f"status of {rtype}"
    # The spec is the user's: the controller cannot rewrite it.
    assert not granted(rules, r.MODEL_ROUTE.group, "modelroutes", "update")
    # Its own webhook configurations' caBundle, and no one else's.
    for rtype in (r.VALIDATING_WEBHOOK, r.MUTATING_WEBHOOK):
        for name in ("modelroute-validate", "modelroute-defaults"):
            assert granted(rules, rtype.group, rtype.plural, "get", name)
            assert granted(rules, rtype.group, rtype.plural, "update", name)
        assert not granted(rules, rtype.group, rtype.plural, "update", "someone-elses-webhook")
    # Secrets: not in the controller's role; a role of their own the overlay can unbind.
    assert not granted(rules, "", "secrets", "get", "any")
    assert bound("ClusterRole", "modelroute-secrets")
    for verb in ("get", "list", "watch"):
        assert granted(rules_of("ClusterRole", "modelroute-secrets"), "", "secrets", verb, "any")
    system = rules_of("Role", "modelroute-system")
    assert bound("Role", "modelroute-system")
    for verb in ("get", "create", "update"):
        assert granted(system, r.LEASE.group, r.LEASE.plural, verb, "modelroute")
    # The webhook certificate: created, then read, watched and renewed by name only.
    assert granted(system, "", "secrets", "create")
    for verb in ("get", "list", "watch", "update"):
        assert granted(system, "", "secrets", verb, "modelroute-webhook-cert")
        assert not granted(system, "", "secrets", verb, "another-secret")


def test_namespaced_secrets_overlay_unbinds_cluster_wide_secret_reads() -> None:
    path = "overlays/namespaced-secrets"
    assert not bound("ClusterRole", "modelroute-secrets", path)
    assert named("ClusterRole", "modelroute-secrets", path)  # still there, to bind per namespace
    assert bound("ClusterRole", "modelroute-controller", path) and bound("Role", "modelroute-system", path)
    example = yaml.safe_load((REPO / "deploy" / "overlays" / "namespaced-secrets" /
                              "tenant-rolebinding.example.yaml").read_text())
    assert example["roleRef"]["name"] == "modelroute-secrets"
    assert example["subjects"] == [{"kind": "ServiceAccount", "name": "modelroute", "namespace": NS}]


def test_cert_manager_overlay_mounts_the_certificate_and_injects_the_ca() -> None:
    path = "overlays/cert-manager"
    cp = container("modelroute", path)
    cert_dir = arg(cp, "--webhook-cert-dir")
    (mount,) = [m for m in cp["volumeMounts"] if m["mountPath"] == cert_dir]
    pod = named("Deployment", "modelroute", path)["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    certificate = named("Certificate", "modelroute-webhook", path)
    assert volume["secret"]["secretName"] == certificate["spec"]["secretName"]
    service = named("Service", "modelroute-webhook", path)["metadata"]
    assert f"{service['name']}.{service['namespace']}.svc" in certificate["spec"]["dnsNames"]
    for kind in ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration"):
        (config,) = by_kind(kind, path)
        assert config["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == f"{NS}/modelroute-webhook"
    assert "--webhook-cert-dir" not in (container("modelroute")["args"])  # the base issues its own


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_overlay_renders_the_whole_install(overlay: str) -> None:
    kinds = {(d["kind"], d["metadata"]["name"]) for d in rendered(f"overlays/{overlay}")}
    assert {(d["kind"], d["metadata"]["name"]) for d in rendered()} - kinds <= {("ClusterRoleBinding",
                                                                              "modelroute-secrets")}


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
    assert served == {(address["port_value"], "TCP")}  # over mTLS; no UDP (it cannot be authenticated)
    assert container["args"][container["args"].index("--stats-address") + 1] == f"0.0.0.0:{address['port_value']}"
    assert granted(rules_of("Role", "modelroute-system"), "", "pods", "patch", "any")  # the leader labels its pod


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


def _ports(container_: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {p["name"]: p for p in container_.get("ports") or ()}


def test_control_plane_binds_every_port_it_declares_and_probes_name_them() -> None:
    cp = container("modelroute")
    declared = {(p["containerPort"], p.get("protocol", "TCP")) for p in cp["ports"]}
    flags = {"--xds-address": "xds", "--ratelimit-address": "ratelimit", "--stats-address": "stats",
             "--admin-address": "admin", "--webhook-address": "webhook"}
    by_name = _ports(cp)
    for flag, port_name in flags.items():  # all interfaces: kubelet probes and Services reach the pod IP
        assert arg(cp, flag) == f"0.0.0.0:{by_name[port_name]['containerPort']}", flag
    assert {(by_name[n]["containerPort"], by_name[n].get("protocol", "TCP")) for n in flags.values()} == declared
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        assert cp[probe]["httpGet"] == {"path": path, "port": "admin"}
    for service in by_kind("Service"):
        selector = service["spec"]["selector"]
        if selector.get("app.kubernetes.io/name") == "modelroute":
            for port in service["spec"]["ports"]:
                assert port["targetPort"] in by_name, (service["metadata"]["name"], port)


def test_gateway_readiness_and_drain_fit_together() -> None:
    cp, gw = container("modelroute"), container("modelroute-gateway")
    ready = _ports(gw)["ready"]["containerPort"]
    assert int(arg(cp, "--gateway-readiness-port")) == ready  # the listener the control plane pushes
    assert gw["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "ready"}
    bootstrap = yaml.safe_load(named("ConfigMap", "modelroute-gateway-bootstrap")["data"]["envoy.yaml"])
    admin = bootstrap["admin"]["address"]["socket_address"]
    assert (admin["address"], admin["port_value"]) == ("127.0.0.1", GATEWAY_ADMIN_PORT)  # reserved from listeners
    pre_stop = gw["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[:2] == ["modelroute", "drain"]
    assert arg({"args": pre_stop}, "--admin-address") == f"127.0.0.1:{GATEWAY_ADMIN_PORT}"
    pod = named("Deployment", "modelroute-gateway")["spec"]["template"]["spec"]
    # The hook's whole wait, and then Envoy's exit, fit in the grace period.
    assert pod["terminationGracePeriodSeconds"] > float(arg({"args": pre_stop}, "--timeout-s")) + 10
    assert float(arg(gw, "--drain-time-s")) > float(arg({"args": pre_stop}, "--min-drain-s"))
    assert arg(gw, "--drain-strategy") == "immediate" and "--disable-hot-restart" in gw["args"]
    assert arg(cp, "--privileged-port-offset") == "10000"  # no capability to bind ports below 1024


@pytest.mark.parametrize("deployment", ["modelroute", "modelroute-gateway"])
def test_pods_meet_the_restricted_pod_security_standard_and_spread(deployment: str) -> None:
    spec = named("Deployment", deployment)["spec"]
    pod = spec["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert not any(pod.get(k) for k in ("hostNetwork", "hostPID", "hostIPC"))
    assert not any("hostPath" in v for v in pod.get("volumes") or ())
    for c in pod["containers"]:
        security = c["securityContext"]
        assert security["allowPrivilegeEscalation"] is False and security["readOnlyRootFilesystem"] is True
        assert security["capabilities"] == {"drop": ["ALL"]}
        assert not any("hostPort" in p for p in c.get("ports") or ())
    labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= labels.items()
    assert all(t["labelSelector"]["matchLabels"].items() <= labels.items() for t in pod["topologySpreadConstraints"])
    assert "kubernetes.io/hostname" in {t["topologyKey"] for t in pod["topologySpreadConstraints"]}
    (budget,) = [b for b in by_kind("PodDisruptionBudget") if b["spec"]["selector"]["matchLabels"].items() <= labels.items()]
    assert budget["spec"]["maxUnavailable"] == 1 and spec["replicas"] >= 2
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0  # a rollout never lowers capacity
    namespace = named("Namespace", NS)["metadata"]["labels"]
    assert namespace["pod-security.kubernetes.io/enforce"] == "restricted"


def test_the_readmes_own_overlay_sets_the_image_of_both_deployments(tmp_path: Path) -> None:
    """deploy/README.md, install step 2, as a platform team copies it."""
    readme = (REPO / "deploy" / "README.md").read_text()
    (body,) = re.findall(r"cat > my-install/kustomization\.yaml <<'EOF'\n(.*?)\n\s*EOF\n", readme, flags=re.DOTALL)
    overlay = tmp_path / "my-install"
    overlay.mkdir()
    text = textwrap.dedent(body).replace("../deploy/base", os.path.relpath(REPO / "deploy" / "base", overlay))
    (overlay / "kustomization.yaml").write_text(text)
    done = subprocess.run(["kubectl", "kustomize", str(overlay)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    mine = [d for d in yaml.safe_load_all(done.stdout) if d]
    images = {d["metadata"]["name"]: d["spec"]["template"]["spec"]["containers"][0]["image"]
              for d in mine if d["kind"] == "Deployment"}
    assert images == {"modelroute": "registry.example.com/matrixinfer/modelroute:0.1.0",
                      "modelroute-gateway": "registry.example.com/matrixinfer/modelroute:0.1.0"}
    assert len(mine) == len(rendered())
