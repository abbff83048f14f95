"""OpenTelemetry tracing in Envoy (optional, off by default): every listener's
HttpConnectionManager traces with Envoy's OpenTelemetry tracer, which sends its spans
over OTLP/gRPC to a collector through the cluster `modelroute_otlp` (an extra resource
of this plugin, HTTP/2 to the collector's address). The access log's `trace_id` is then
the request's trace.

Not built in: the run modes add it when given a collector (`--otlp-endpoint`), with the
sampling percentage of new traces (`--trace-sampling`, default 100 as in Envoy Gateway;
requests that arrive with a sampled `traceparent` stay sampled).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from google.protobuf import duration_pb2

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.trace.v3 import http_tracer_pb2, opentelemetry_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.request_id.uuid.v3 import uuid_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from routing_engine import ir
from routing_engine.translate.plugin import RANKS, ExtraResource, Plugin
from routing_engine.translate.xds import CLUSTER, pack

OTLP_CLUSTER = "modelroute_otlp"
TRACER = "envoy.tracers.opentelemetry"


@dataclass(frozen=True, slots=True)
class TracingSettings:
    host: str  # the OTLP/gRPC collector
    port: int
    service_name: str = "modelroute-gateway"
    sampling_percent: float = 100.0


def otlp_cluster(settings: TracingSettings) -> cluster_pb2.Cluster:
    cluster = cluster_pb2.Cluster(name=OTLP_CLUSTER, type=cluster_pb2.Cluster.STRICT_DNS,
                                  connect_timeout=duration_pb2.Duration(seconds=1),
                                  dns_lookup_family=cluster_pb2.Cluster.V4_PREFERRED)
    options = http_protocol_options_pb2.HttpProtocolOptions()
    options.explicit_http_config.http2_protocol_options.SetInParent()
    cluster.typed_extension_protocol_options["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"].CopyFrom(
        pack(options))
    endpoint = cluster.load_assignment.endpoints.add().lb_endpoints.add().endpoint
    cluster.load_assignment.cluster_name = OTLP_CLUSTER
    endpoint.address.socket_address.address = settings.host
    endpoint.address.socket_address.port_value = settings.port
    return cluster


class TracingPlugin(Plugin):
    name = "tracing"
    rank = RANKS["tracing"]

    def __init__(self, settings: TracingSettings) -> None:
        self.settings = settings

    def listener_facet(self, route: ir.Route) -> None:
        return None  # the tracer is per listener, not per route

    def patch_hcm(self, listener: ir.Listener, hcm: hcm_pb2.HttpConnectionManager) -> None:
        config = opentelemetry_pb2.OpenTelemetryConfig(service_name=self.settings.service_name)
        config.grpc_service.envoy_grpc.cluster_name = OTLP_CLUSTER
        hcm.tracing.provider.CopyFrom(http_tracer_pb2.Tracing.Http(name=TRACER, typed_config=pack(config)))
        hcm.tracing.random_sampling.value = self.settings.sampling_percent
        # Sample at random, not from the x-request-id: a client's own (non-UUID) request id
        # would otherwise never be traced.
        request_id = uuid_pb2.UuidRequestIdConfig()
        request_id.use_request_id_for_trace_sampling.value = False
        hcm.request_id_extension.typed_config.CopyFrom(pack(request_id))

    def extra_resources(self, gateway: ir.Gateway) -> Iterable[ExtraResource]:
        return [ExtraResource(CLUSTER, OTLP_CLUSTER, otlp_cluster(self.settings))]
