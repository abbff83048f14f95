"""What each request did, from Envoy itself: a JSON access log line on stdout, and the
per-variant statistics the control plane's LLM metrics and A/B report are made of.

Every listener's HttpConnectionManager gets two access loggers (`patch_hcm`):

- **stdout, JSON** (`ACCESS_LOG_FIELDS`): route, variant (the destination cluster,
  `modelserver/<ns>/<name>` or a failover pair), the model the answer names, status and
  response flags, tokens (`usage_source` says whether the engine reported them or they
  were estimated), duration and time to first byte of the answer's body, request id and
  trace id. One object per line, so `kubectl logs` / `.modelroute/gateway.stdout` can be
  read by any log pipeline. Query strings are logged as sent (JWTs are read from the
  Authorization header only, API keys from their header).
- **Envoy's stats access logger** (`envoy.access_loggers.stats`), under `STAT_PREFIX`,
  tagged by the destination cluster's stat name (dot-free, `names.stat_name`): a
  `requests` counter per status code, and per-request histogram samples of the duration,
  the time to first token (first body byte of the answer: for a streamed answer its first
  chunk, for a JSON one the whole answer) and the prompt/completion tokens (from
  `translate.usage`). They reach the control plane with every other stat through the
  statsd sink it already receives (`controller.canary.stats_sink`), so per-request LLM metrics
  need no second transport. Tag values are bounded: clusters come from the config,
  status codes from HTTP.

  Envoy 1.40 marks this logger work-in-progress and `stat_prefix` deprecated in favour of
  a `stats_scope` the xds-protos release we build with does not have yet; it logs that
  deprecation once per listener load. Measured alternatives: the gRPC access-log service
  (a second authenticated stream into the control plane per Envoy) and parsing stdout
  (impossible in a cluster).

Adds no HTTP filter (rank only for the order of hooks).
"""

from __future__ import annotations

from google.protobuf import struct_pb2

from envoy.config.accesslog.v3 import accesslog_pb2
from envoy.extensions.access_loggers.stats.v3 import stats_pb2
from envoy.extensions.access_loggers.stream.v3 import stream_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from routing_engine import ir
from routing_engine import names
from routing_engine.translate import usage
from routing_engine.translate.plugin import RANKS, Plugin
from routing_engine.translate.xds import pack

STDOUT_LOGGER = "envoy.access_loggers.stdout"
STATS_LOGGER = "envoy.access_loggers.stats"
STAT_PREFIX = "modelroute_variant"  # statsd lines: envoy.modelroute_variant.<stat>.cluster.<c>[.code.<n>]
CLUSTER_TAG = "cluster"
CODE_TAG = "code"
DURATION = "%DURATION%"
TIME_TO_FIRST_TOKEN = "%COMMON_DURATION(DS_RX_BEG:US_RX_BODY_BEG:ms)%"

ACCESS_LOG_FIELDS: dict[str, str] = {
    "start_time": "%START_TIME%",
    "method": "%REQ(:METHOD)%",
    "path": "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
    "authority": "%REQ(:AUTHORITY)%",
    "protocol": "%PROTOCOL%",
    "status": "%RESPONSE_CODE%",
    "flags": "%RESPONSE_FLAGS%",
    "route": "%ROUTE_NAME%",
    "variant": "%UPSTREAM_CLUSTER_RAW%",
    "upstream_host": "%UPSTREAM_HOST%",
    "model": usage.metadata(usage.MODEL),
    "requested_model": f"%DYNAMIC_METADATA({names.MODEL_METADATA_NAMESPACE}:{names.MODEL_METADATA_KEY})%",
    "prompt_tokens": usage.metadata(usage.PROMPT_TOKENS),
    "completion_tokens": usage.metadata(usage.COMPLETION_TOKENS),
    "usage_source": usage.metadata(usage.SOURCE),
    "duration_ms": DURATION,
    "ttft_ms": TIME_TO_FIRST_TOKEN,
    "bytes_received": "%BYTES_RECEIVED%",
    "bytes_sent": "%BYTES_SENT%",
    "request_id": "%REQ(X-REQUEST-ID)%",
    "trace_id": "%TRACE_ID%",
    "client": "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%",
    "user_agent": "%REQ(USER-AGENT)%",
}

# (stat name, value, unit) of the per-request histograms.
HISTOGRAMS: tuple[tuple[str, str, int], ...] = (
    ("duration", DURATION, stats_pb2.Config.Histogram.Milliseconds),
    ("ttft", TIME_TO_FIRST_TOKEN, stats_pb2.Config.Histogram.Milliseconds),
    ("prompt_tokens", usage.metadata(usage.PROMPT_TOKENS), stats_pb2.Config.Histogram.Unspecified),
    ("completion_tokens", usage.metadata(usage.COMPLETION_TOKENS), stats_pb2.Config.Histogram.Unspecified),
)
REQUESTS = "requests"


def json_logger(listener: ir.Listener) -> accesslog_pb2.AccessLog:
    fields = struct_pb2.Struct()
    fields.update({"listener": listener.name, **ACCESS_LOG_FIELDS})
    config = stream_pb2.StdoutAccessLog()
    config.log_format.json_format.CopyFrom(fields)
    return accesslog_pb2.AccessLog(name=STDOUT_LOGGER, typed_config=pack(config))


def stats_logger() -> accesslog_pb2.AccessLog:
    config = stats_pb2.Config(stat_prefix=STAT_PREFIX)
    cluster = stats_pb2.Config.Tag(name=CLUSTER_TAG, value_format="%UPSTREAM_CLUSTER%")  # the dot-free stat name
    for name, value, unit in HISTOGRAMS:
        config.histograms.add(stat=stats_pb2.Config.Stat(name=name, tags=[cluster]), unit=unit, value_format=value)
    counter = config.counters.add(stat=stats_pb2.Config.Stat(
        name=REQUESTS, tags=[cluster, stats_pb2.Config.Tag(name=CODE_TAG, value_format="%RESPONSE_CODE%")]))
    counter.value_fixed.value = 1
    return accesslog_pb2.AccessLog(name=STATS_LOGGER, typed_config=pack(config))


class AccessLogPlugin(Plugin):
    name = "access_log"
    rank = RANKS["access_log"]

    def listener_facet(self, route: ir.Route) -> None:
        return None  # the listener's loggers read no route

    def patch_hcm(self, listener: ir.Listener, hcm: hcm_pb2.HttpConnectionManager) -> None:
        hcm.access_log.extend([json_logger(listener), stats_logger()])
