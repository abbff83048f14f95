"""The least static Envoy bootstrap that proxies: one HTTP listener on 127.0.0.1, the
given HTTP filters before the router, one route (prefix `/`) to one static upstream. The
data-plane bench's bare Envoy (`bench/dataplane.py`) and tests of a single filter against
the real Envoy (`tests/observability/test_usage_reader.py`) start it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
ROUTER = {"name": "envoy.filters.http.router",
          "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}


def _address(port: int) -> dict[str, Any]:
    return {"socket_address": {"address": "127.0.0.1", "port_value": port}}


def proxy_bootstrap(port: int, upstream: int, *, admin_port: int = 0, http_filters: Sequence[dict[str, Any]] = (),
                    access_log: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    """Proto3-JSON bootstrap: listener on `port` → upstream 127.0.0.1:`upstream`; no
    retries, timeouts or loggers beyond `access_log`."""
    hcm: dict[str, Any] = {"@type": HCM, "stat_prefix": "proxy", "http_filters": [*http_filters, ROUTER],
                           "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
                               {"match": {"prefix": "/"}, "route": {"cluster": "upstream"}}]}]}}
    if access_log:
        hcm["access_log"] = list(access_log)
    return {"admin": {"address": _address(admin_port)},
            "static_resources": {
                "listeners": [{"name": "proxy", "address": _address(port), "filter_chains": [
                    {"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}]}],
                "clusters": [{"name": "upstream", "type": "STATIC", "load_assignment": {
                    "cluster_name": "upstream", "endpoints": [{"lb_endpoints": [{"endpoint": {
                        "address": _address(upstream)}}]}]}}]}}
