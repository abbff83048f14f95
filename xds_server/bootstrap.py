"""Render the Envoy bootstrap templates in `envoy/` (gateway and sidecar).

No model knowledge here: role, identity, where the control plane is, and free-form node
metadata (the engine reads `role` and `scope` from it to pick the node group).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Any, Literal

import yaml
from envoy.config.metrics.v3 import stats_pb2
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2

from xds_server.types import SECRET, type_url

TEMPLATES = Path(__file__).resolve().parents[1] / "envoy"

Role = Literal["gateway", "sidecar"]
_UPSTREAM_TLS = type_url(tls_pb2.UpstreamTlsContext)


@dataclass(frozen=True, slots=True)
class XdsTls:
    """PEM files Envoy uses for mTLS to the control plane: its client certificate and
    key, and the CA that signed the server's certificate."""

    cert: Path
    key: Path
    ca: Path
    server_name: str = ""

    def transport_socket(self) -> dict[str, Any]:
        context: dict[str, Any] = {
            "common_tls_context": {
                "tls_certificates": [{"certificate_chain": {"filename": str(self.cert)},
                                      "private_key": {"filename": str(self.key)}}],
                "validation_context": {"trusted_ca": {"filename": str(self.ca)}},
                "alpn_protocols": ["h2"],  # gRPC servers insist on ALPN h2
            },
            "@type": _UPSTREAM_TLS,
        }
        if self.server_name:
            context["sni"] = self.server_name
        return {"name": "envoy.transport_sockets.tls", "typed_config": context}


@dataclass(frozen=True, slots=True)
class MountedTls:
    """mTLS to the control plane with material from a mounted Kubernetes Secret
    (`tls.crt`, `tls.key`, `ca.crt` in `secret_dir`), read through file-based SDS: the two
    small SDS files (`sds_files()`, in `sds_dir`) point at the Secret's files, and Envoy
    re-reads them whenever the kubelet swaps the Secret (the watched directory), so a
    renewed certificate is used without a restart, and a Secret that appears after Envoy
    started (the control plane issues it) is picked up too. `server_names`: the DNS names
    the control plane's certificate must carry (any other certificate of the CA, such as
    another gateway's client certificate, is refused)."""

    secret_dir: str
    sds_dir: str
    server_names: tuple[str, ...]
    CLIENT = "modelroute-client"
    CA = "modelroute-ca"

    def _source(self, file: str) -> dict[str, Any]:
        return {"path_config_source": {"path": f"{self.sds_dir}/{file}",
                                       "watched_directory": {"path": self.secret_dir}},
                "resource_api_version": "V3"}

    def transport_socket(self, *, grpc: bool = True) -> dict[str, Any]:
        common: dict[str, Any] = {
            "tls_certificate_sds_secret_configs": [{"name": self.CLIENT, "sds_config": self._source("client.yaml")}],
            "combined_validation_context": {
                "default_validation_context": {"match_typed_subject_alt_names": [
                    {"san_type": "DNS", "matcher": {"exact": name}} for name in self.server_names]},
                "validation_context_sds_secret_config": {"name": self.CA, "sds_config": self._source("ca.yaml")}},
        }
        if grpc:
            common["alpn_protocols"] = ["h2"]  # gRPC servers insist on ALPN h2
        return {"name": "envoy.transport_sockets.tls", "typed_config": {
            "@type": _UPSTREAM_TLS,
            "common_tls_context": common}}

    def sds_files(self) -> dict[str, str]:
        """File name → content of the SDS files to put in `sds_dir`. They read the Secret
        through its `..data` directory: the kubelet swaps that symlink atomically (the
        event Envoy reloads on) and only then creates the top-level `tls.crt` links of a
        newly populated volume, so a reload reading `tls.crt` could find it missing and
        never try again (seen with a Secret issued after the gateway started)."""
        secret = SECRET
        data = f"{self.secret_dir}/..data"
        # Each secret watches the volume (it exists from the start, unlike `..data`).
        watched = {"path": self.secret_dir}
        client = {"resources": [{"@type": secret, "name": self.CLIENT, "tls_certificate": {
            "certificate_chain": {"filename": f"{data}/tls.crt"},
            "private_key": {"filename": f"{data}/tls.key"}, "watched_directory": watched}}]}
        ca = {"resources": [{"@type": secret, "name": self.CA, "validation_context": {
            "trusted_ca": {"filename": f"{data}/ca.crt"}, "watched_directory": watched}}]}
        return {"client.yaml": yaml.safe_dump(client, sort_keys=False), "ca.yaml": yaml.safe_dump(ca, sort_keys=False)}


@dataclass(frozen=True, slots=True)
class StatsSink:
    """Envoy pushes its stats to a statsd listener of the control plane (UDP): counters as
    deltas every `flush_interval_ms`, histogram samples (latencies) as they are recorded.
    Push rather than scrape: every Envoy rendered with it reports, wherever it runs, and
    nobody needs to know its admin address."""

    port: int
    host: str = "127.0.0.1"
    flush_interval_ms: int = 1000

    def block(self) -> str:
        sink = {"name": "envoy.stat_sinks.statsd", "typed_config": {
            "@type": type_url(stats_pb2.StatsdSink),
            "address": {"socket_address": {"protocol": "UDP", "address": self.host, "port_value": int(self.port)}}}}
        interval = f"{self.flush_interval_ms / 1000:.3f}s"
        return f"stats_sinks: {json.dumps([sink])}\nstats_flush_interval: {interval}"


def render(role: Role, *, node_id: str, cluster: str, xds_port: int, admin_port: int,
           xds_host: str = "127.0.0.1", delta: bool = True,
           metadata: Mapping[str, Any] | None = None, tls: XdsTls | MountedTls | None = None,
           stats_sink: StatsSink | None = None, ratelimit_host: str | None = None,
           ratelimit_port: int | None = None) -> str:
    """Bootstrap YAML for one Envoy. `delta`: incremental ADS (DELTA_GRPC), the default as
    in Envoy Gateway's bootstraps; False: state of the world (GRPC), which re-sends every
    cluster and scope when one is added (docs/decisions.md, "Delta ADS by default").

    Node metadata always carries `role`; `metadata` adds to it (e.g. `scope` for a
    sidecar limited to some namespaces). `stats_sink` adds the push of stats to the
    control plane (canary analysis). The `modelroute_ratelimit` cluster points to the
    rate-limit service at `ratelimit_host` (default: the control plane's host) and
    `ratelimit_port` (default: the xDS port + 1). `tls`: mTLS to the control plane on
    both (xDS and the rate-limit service).
    """
    if role not in ("gateway", "sidecar"):
        raise ValueError(f"bootstrap role must be gateway or sidecar, not {role!r}")
    template = Template((TEMPLATES / f"{role}.yaml").read_text())
    node_metadata = {"role": role, **(metadata or {})}
    return template.substitute(
        node_id=json.dumps(node_id), node_cluster=json.dumps(cluster),
        metadata=json.dumps(node_metadata, sort_keys=True), admin_port=int(admin_port),
        api_type="DELTA_GRPC" if delta else "GRPC", xds_host=json.dumps(xds_host), xds_port=int(xds_port),
        xds_transport_socket=f"transport_socket: {json.dumps(tls.transport_socket())}" if tls else "",
        ratelimit_transport_socket=f"transport_socket: {json.dumps(tls.transport_socket())}" if tls else "",
        stats_sinks=stats_sink.block() if stats_sink else "",
        ratelimit_host=json.dumps(ratelimit_host or xds_host),
        ratelimit_port=int(ratelimit_port if ratelimit_port is not None else int(xds_port) + 1))


def render_dict(role: Role, **kwargs: Any) -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load(render(role, **kwargs))
    return config
