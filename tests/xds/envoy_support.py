"""Hand-built Envoy resources, a tiny upstream HTTP server and an Envoy process, for the
real-Envoy integration tests and the benchmarks."""

from __future__ import annotations

import hashlib
import json
import subprocess
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from google.protobuf.message import Message

from tests.support import envoy_binary, free_port, stop_process, wait_until
from xds_server.bootstrap import XdsTls, render
from xds_server.types import CLUSTER, ENDPOINT, LISTENER, ROUTE


@dataclass(frozen=True, slots=True)
class ProtoResource:
    """What the engine hands the server: serialized body, version = content hash."""

    type_url: str
    name: str
    body: bytes
    version: str

    @classmethod
    def of(cls, type_url: str, name: str, message: Message) -> ProtoResource:
        body = message.SerializeToString(deterministic=True)
        return cls(type_url, name, body, hashlib.sha256(body).hexdigest()[:16])


def listener(name: str, port: int, route_config: str) -> ProtoResource:
    hcm = hcm_pb2.HttpConnectionManager(stat_prefix=name)
    hcm.rds.route_config_name = route_config
    hcm.rds.config_source.ads.SetInParent()
    hcm.rds.config_source.resource_api_version = 2  # V3
    router = hcm.http_filters.add(name="envoy.filters.http.router")
    router.typed_config.Pack(router_pb2.Router())
    message = listener_pb2.Listener(name=name)
    message.address.socket_address.address = "127.0.0.1"
    message.address.socket_address.port_value = port
    network_filter = message.filter_chains.add().filters.add(name="envoy.filters.network.http_connection_manager")
    network_filter.typed_config.Pack(hcm)
    return ProtoResource.of(LISTENER, name, message)


def route_config(name: str, *, cluster: str, direct: dict[str, str] | None = None,
                 extra_routes: int = 0) -> ProtoResource:
    """`direct`: path prefix → body answered by Envoy itself; `extra_routes` pads the
    table with exact-path routes (to measure big RouteConfigurations)."""
    message = route_pb2.RouteConfiguration(name=name)
    vhost = message.virtual_hosts.add(name="all", domains=["*"])
    for prefix, body in sorted((direct or {}).items()):
        r = vhost.routes.add()
        r.match.prefix = prefix
        r.direct_response.status = 200
        r.direct_response.body.inline_string = body
    for i in range(extra_routes):
        r = vhost.routes.add()
        r.match.path = f"/pad/{i}"
        r.direct_response.status = 200
        r.direct_response.body.inline_string = f"pad-{i}"
    r = vhost.routes.add()
    r.match.prefix = "/"
    r.route.cluster = cluster
    return ProtoResource.of(ROUTE, name, message)


def eds_cluster(name: str) -> ProtoResource:
    message = cluster_pb2.Cluster(name=name, type=cluster_pb2.Cluster.EDS)
    message.connect_timeout.FromMilliseconds(1000)
    message.eds_cluster_config.eds_config.ads.SetInParent()
    message.eds_cluster_config.eds_config.resource_api_version = 2  # V3
    return ProtoResource.of(CLUSTER, name, message)


def endpoints(cluster: str, port: int) -> ProtoResource:
    message = endpoint_pb2.ClusterLoadAssignment(cluster_name=cluster)
    address = message.endpoints.add().lb_endpoints.add().endpoint.address.socket_address
    address.address, address.port_value = "127.0.0.1", port
    return ProtoResource.of(ENDPOINT, cluster, message)


class Upstream:
    """A threaded HTTP server on 127.0.0.1 answering every GET with its name."""

    def __init__(self, name: str) -> None:
        body = name.encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self.server.server_address[1])
        self._thread = threading.Thread(target=self.server.serve_forever, name=f"upstream-{name}", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)


def http_get(url: str, timeout: float = 2.0) -> tuple[int, str]:
    """(status, body); status 0 when the connection failed."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode(errors="replace")
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return 0, ""


def make_certs(workdir: Path) -> dict[str, Path]:
    """A throwaway CA, a server certificate for 127.0.0.1 and a client certificate."""
    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=workdir, check=True, capture_output=True, timeout=60)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=modelroute-test-ca")
    (workdir / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:modelroute-xds\n")
    for name in ("server", "client"):
        run("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN=modelroute-{name}")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", f"{name}.crt", "-days", "2", "-extfile", "san.ext")
    return {n: workdir / n for n in ("ca.crt", "server.crt", "server.key", "client.crt", "client.key")}


class EnvoyProcess:
    """Envoy bootstrapped against our server; stopped by PID in `stop()`."""

    def __init__(self, workdir: Path, *, xds_port: int, delta: bool, node_id: str = "envoy-test",
                 cluster: str = "gateway", tls: XdsTls | None = None) -> None:
        self.admin_port = free_port()
        bootstrap = workdir / f"{node_id}.yaml"
        bootstrap.write_text(render("gateway", node_id=node_id, cluster=cluster, xds_port=xds_port,
                                    admin_port=self.admin_port, delta=delta, tls=tls))
        self.log_path = workdir / f"{node_id}.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [envoy_binary(), "-c", str(bootstrap), "--concurrency", "1", "--disable-hot-restart",
             "--log-level", "warn", "--drain-time-s", "1"],
            stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_until(lambda: self.proc.poll() is not None or http_get(self.admin("/ready"))[0] == 200,
                   timeout=30, what="envoy admin /ready")
        assert self.proc.poll() is None, self.log_path.read_text()[-3000:]

    def admin(self, path: str) -> str:
        return f"http://127.0.0.1:{self.admin_port}{path}"

    def stats(self) -> dict[str, int]:
        """Counters and gauges from the admin /stats endpoint."""
        _, body = http_get(self.admin("/stats?format=json"))
        out: dict[str, int] = {}
        for stat in json.loads(body).get("stats", []):
            if "name" in stat and isinstance(stat.get("value"), int):
                out[stat["name"]] = stat["value"]
        return out

    def stop(self) -> None:
        stop_process(self.proc)
        self._log.close()
