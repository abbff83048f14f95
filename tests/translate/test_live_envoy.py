"""Real traffic through a real Envoy running the static bootstrap of a translation:
the features do what SPEC 3 says, not only pass `--mode validate`."""

from __future__ import annotations

import http.server
import json
import subprocess
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from routing_engine import engine, ir
from routing_engine.translate import translate
from tests.support import envoy_binary, free_port, stop_process, wait_until
from tests.translate.builders import JWKS, route, server_key

pytestmark = pytest.mark.slow


class _Echo(http.server.BaseHTTPRequestHandler):
    """Answers every request with its own port, so tests see which backend served."""

    def _answer(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        self.rfile.read(length)
        body = str(self.server.server_address[1]).encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *args: object) -> None:
        return None


@pytest.fixture(scope="module")
def backends() -> Iterator[dict[str, int]]:
    servers = {name: http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Echo) for name in ("a", "b")}
    for server in servers.values():
        threading.Thread(target=server.serve_forever, daemon=True).start()
    yield {name: s.server_address[1] for name, s in servers.items()}
    for server in servers.values():
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def envoy(backends: dict[str, int], tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, int]]:
    main, second, admin = free_port(), free_port(), free_port()
    model = ir.RouteMatch(ir.PathMatch("segment_prefix", "/v1/chat"), model="big")
    routes = (
        route("model", "b", match=model),
        route("chat", "a", path="/v1/chat"),
        route("limited", "b", path="/limited"),
        route("keyed", "a", path="/keyed", auth=(ir.ApiKeyAuth("default/a", "x-api-key", ("s3cret",)),)),
        route("jwt", "a", path="/jwt", auth=(ir.JwtProvider("default/a", "https://issuer", jwks_inline=JWKS),)),
        route("failover", ir.WeightedBackend("dead", 1, failover_to="a"), path="/failover"),
        route("split", ir.WeightedBackend("a", 100), ir.WeightedBackend("b", 0), path="/split"),
    )
    gateway = ir.Gateway(
        listeners=(
            ir.Listener("main", "127.0.0.1", main, routes, ready_backends=("a",), rate_limits=(("b", ir.RateLimit(1, 2)),)),
            ir.Listener("second", "127.0.0.1", second, (route("s", "b", path="/b"), route("r", "dead", path="/")),
                        ready_backends=("b", "dead")),
        ),
        backends=(
            ir.Backend("a", server_key("a"), (ir.Endpoint("127.0.0.1", backends["a"]),)),
            ir.Backend("b", server_key("b"), (ir.Endpoint("127.0.0.1", backends["b"]),)),
            ir.Backend("dead", server_key("dead"), (ir.Endpoint("127.0.0.1", free_port(), healthy=False),)),
        ),
    )
    config = Path(tmp_path_factory.mktemp("envoy")) / "bootstrap.json"
    config.write_text(json.dumps(engine.static_bootstrap(translate(gateway).resources, admin_port=admin)))
    proc = subprocess.Popen(
        [envoy_binary(), "-c", str(config), "--disable-hot-restart", "-l", "error"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        wait_until(lambda: _get(main, "/health")[0] == 200, timeout=20, what="envoy /health")
        yield main, second
    finally:
        stop_process(proc)


def _get(port: int, path: str, body: bytes | None = None, headers: dict[str, str] | None = None) -> tuple[int, str, dict[str, str]]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body,
                                     headers={"content-type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read().decode(), dict(response.headers)
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode(), dict(err.headers)
    except (urllib.error.URLError, ConnectionError):
        return 0, "", {}


def test_health_ready_and_metrics(envoy: tuple[int, int], backends: dict[str, int]) -> None:
    main, second = envoy
    assert _get(main, "/health")[0] == 200
    assert _get(main, "/ready")[0] == 200
    assert _get(second, "/ready")[0] == 503  # backend dead's only endpoint is UNHEALTHY
    # Per server: the healthy one is ready although its port's other server is not.
    assert _get(second, "/ready?server=b")[0] == 200
    assert _get(second, "/ready?server=dead")[0] == 503
    # The checks answer their exact paths only: a readiness query none answers is a 404,
    # and a `server` parameter elsewhere is routed as usual.
    assert _get(second, "/ready?server=nobody")[0] == 404
    assert _get(second, "/ready?server=b&x=1")[0] == 404
    assert _get(second, "/b?server=b")[1] == str(backends["b"])
    status, text, _ = _get(second, "/metrics")
    assert status == 200 and "# TYPE envoy_" in text
    # Routes on `main` need an API key or a JWT: Envoy's stats are not handed out there.
    status, text, _ = _get(main, "/metrics")
    assert status == 404 and "envoy_" not in text


def test_model_in_the_body_picks_the_route(envoy: tuple[int, int], backends: dict[str, int]) -> None:
    main, _ = envoy
    assert _get(main, "/v1/chat/completions", b'{"model": "big", "messages": []}')[1] == str(backends["b"])
    assert _get(main, "/v1/chat/completions", b'{"model": "small"}')[1] == str(backends["a"])


def test_rate_limit_is_one_bucket_per_backend_with_429_headers(envoy: tuple[int, int]) -> None:
    main, _ = envoy
    answers = [_get(main, "/limited") for _ in range(4)]  # burst 2, 1/s: at most 3 pass
    assert answers[0][0] == 200 or answers[0][2].get("x-ratelimit-limit") == "2"
    assert answers[-1][0] == 429
    assert answers[-1][2].get("x-ratelimit-limit") == "2"
    # The model route sends to the same backend, so it draws from the same, empty bucket.
    assert _get(main, "/v1/chat/completions", b'{"model": "big"}')[0] == 429
    assert _get(main, "/v1/chat/completions", b'{"model": "small"}')[0] == 200  # backend a: no limit


def test_api_key_and_jwt_refuse_without_credentials(envoy: tuple[int, int], backends: dict[str, int]) -> None:
    main, _ = envoy
    assert _get(main, "/keyed")[0] == 401
    assert _get(main, "/keyed", headers={"x-api-key": "wrong"})[0] == 401
    assert _get(main, "/keyed", headers={"x-api-key": "s3cret"})[1] == str(backends["a"])
    assert _get(main, "/jwt")[0] == 401
    assert _get(main, "/jwt", headers={"authorization": "Bearer not.a.jwt"})[0] == 401


def test_failover_and_zero_weight(envoy: tuple[int, int], backends: dict[str, int]) -> None:
    main, _ = envoy
    assert _get(main, "/failover")[1] == str(backends["a"])
    assert {_get(main, "/split")[1] for _ in range(5)} == {str(backends["a"])}
