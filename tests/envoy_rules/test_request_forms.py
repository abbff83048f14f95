"""What validate accepts, Envoy matches: route paths and query parameters against the
real Envoy, with our listeners' connection manager (path normalization and slash merging).

Every printable character and every `%XX` (both cases) in a path segment, and the dot
segment forms, are loaded as a ModelServer's `routing.path`. A path the loader accepts
gets an exact route of its own and must be the one its request reaches: Envoy leaves it
as it is. A path it refuses must name the form to write, and that form is where Envoy
sends the request the user wrote (or Envoy answers 400). Query parameter names and
values likewise: accepted ones match the request that carries them as written; refused
ones match no request a client sends, and the form the error asks for does.
"""

from __future__ import annotations

import functools
import json
import re
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from envoy.config.bootstrap.v3 import bootstrap_pb2
from routing_engine import ir, serialize
from routing_engine.api.loader import load_text
from routing_engine.translate.listener import HCM_FILTER, http_connection_manager
from routing_engine.translate.route import route_match
from routing_engine.translate.xds import pack
from tests.support import envoy_binary, free_port, stop_process, wait_until

pytestmark = pytest.mark.slow

NETWORKING = "networking.matrixinfer.ai/v1alpha1"
_PRINTABLE = [chr(c) for c in range(0x21, 0x7F) if chr(c) not in "?#*"]  # "*": a glob, not a routing.path
PATHS = sorted({f"/a/x{c}y" for c in _PRINTABLE} | {f"/a/x%{n:02{case}}y" for n in range(256) for case in "Xx"} | {
    "/a/./b", "/a/../b", "/a/..", "/a/.", "/..", "/a/%2e/b", "/a/.%2E/b", "/a/%2e%2e", "/a;b/../c", "/a/.b", "/a/..b",
    "/a/...", "/a%%41", "/a%2", "/a/x%C3%A9", "/a/x%c3%a9", "/healthz", "/a/health"})
QUERY_NAMES = ["user tier", "user%20tier", "user+tier", "a=b", "a%3Db", "café", "caf%C3%A9", "x&y", "x#", "x'y",
               "x;y", "x?y", "x/y", "{x}", "x%zz"]
QUERY_VALUES = ["v2 beta", "v2%20beta", "v2+beta", "a&b", "a%26b", "a=b", "café", "caf%c3%a9", "#x", 'a"b', "<a>",
                "x\x01", "{a|b}", "100%", "a?b", "a%2Fb"]
_SUGGESTED_PATH = re.compile(r"\((?:write )?(/\S*)\)$")
_SUGGESTED_QUERY = re.compile(r"as clients send it: (\S*)[; ]")


def _refusal(doc: dict[str, Any]) -> str | None:
    errors = load_text(yaml.safe_dump(doc, allow_unicode=True), "forms.yaml")[1]
    return "; ".join(e.rule for e in errors) or None


@functools.cache
def _path_verdict(path: str) -> str | None:
    """None when `routing.path: <path>` is accepted, else the rule broken."""
    return _refusal({"apiVersion": NETWORKING, "kind": "ModelServer", "metadata": {"name": "s"},
                     "spec": {"modelInferRef": {"name": "i"}, "service": {"port": 8080}, "routing": {"path": path}}})


@functools.cache
def _query_verdict(name: str, value: str) -> str | None:
    return _refusal({"apiVersion": NETWORKING, "kind": "ModelRoute", "metadata": {"name": "r"}, "spec": {
        "path": "/q", "routes": [{"match": {"queryParams": {name: value}}, "destination": {"modelServerRef": {"name": "s"}}}]}})


def _client_form(text: str, verdict: str | None) -> str:
    """What a client sends: `text` as written when validate accepts it, else the form
    its error asks for."""
    if verdict is None:
        return text
    suggested = _SUGGESTED_QUERY.search(verdict)
    assert suggested, verdict
    return suggested[1]


def _sent(name: str, value: str) -> tuple[str, str]:
    return _client_form(name, _query_verdict(name, "1")), _client_form(value, _query_verdict("n", value))


QUERIES = [(name, "1") for name in QUERY_NAMES] + [("n", value) for value in QUERY_VALUES]


def _table() -> list[tuple[str, ir.RouteMatch]]:
    """An exact route for every path form to expect, and one for every query parameter
    as written and as a client sends it, each on a path of its own."""
    expected = {path for p in PATHS if (path := _expected_path(p)) is not None}
    table = [(f"path {path}", ir.RouteMatch(ir.PathMatch("exact", path))) for path in sorted(expected)]
    for i, (name, value) in enumerate(QUERIES):
        for form, (n, v) in (("written", (name, value)), ("sent", _sent(name, value))):
            table.append((f"query {i} {form}", ir.RouteMatch(ir.PathMatch("exact", f"/q/{i}/{form}"),
                                                             query_params=((n, ir.StringMatch("exact", v)),))))
    return table


def _bootstrap(port: int, admin: int, table: list[tuple[str, ir.RouteMatch]]) -> dict[str, Any]:
    """Our listener's connection manager (no plugins) serving `table` statically, each
    route answering with its index, then a catch-all 404: no route matched."""
    hcm = http_connection_manager(ir.Listener("forms", "127.0.0.1", port, ()), ())
    hcm.ClearField("rds")
    routes = hcm.route_config.virtual_hosts.add(name="all", domains=["*"]).routes
    for index, (_, match) in enumerate(table):
        route = routes.add(match=route_match(match))
        route.direct_response.status = 200
        header = route.response_headers_to_add.add().header
        header.key, header.value = "x-route", str(index)
    catch_all = routes.add()
    catch_all.match.prefix = "/"
    catch_all.direct_response.status = 404
    bootstrap = bootstrap_pb2.Bootstrap()
    bootstrap.admin.address.socket_address.address = "127.0.0.1"
    bootstrap.admin.address.socket_address.port_value = admin
    listener = bootstrap.static_resources.listeners.add(name="forms")
    listener.address.socket_address.address = "127.0.0.1"
    listener.address.socket_address.port_value = port
    listener.filter_chains.add().filters.add(name=HCM_FILTER, typed_config=pack(hcm))
    return serialize.to_dict(bootstrap)


def _expected_path(path: str) -> str | None:
    """Where the request for `path` must arrive: itself when accepted, else the form the
    error asks for (None: Envoy must refuse the request)."""
    verdict = _path_verdict(path)
    if verdict is None:
        return path
    suggested = _SUGGESTED_PATH.search(verdict)
    return suggested[1] if suggested else None


@dataclass(frozen=True)
class Envoy:
    port: int
    table: list[tuple[str, ir.RouteMatch]]

    def get(self, target: bytes) -> tuple[int, str | None]:
        """Status and matched route of a GET sent byte for byte (no client library
        rewrites it). Read up to the end of the head only: waiting for Envoy to close
        costs its delayed-close timeout (1 s) per request."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as conn:
            conn.sendall(b"GET " + target + b" HTTP/1.1\r\nhost: forms\r\n\r\n")
            reply = b""
            while b"\r\n\r\n" not in reply and (chunk := conn.recv(65536)):
                reply += chunk
        head = reply.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
        index = [line.split(":", 1)[1].strip() for line in head[1:] if line.lower().startswith("x-route:")]
        return int(head[0].split()[1]), (self.table[int(index[0])][0] if index else None)


@pytest.fixture(scope="module")
def envoy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Envoy]:
    port, admin = free_port(), free_port()
    table = _table()
    config = Path(tmp_path_factory.mktemp("forms")) / "bootstrap.json"
    config.write_text(json.dumps(_bootstrap(port, admin, table)))
    proc = subprocess.Popen([envoy_binary(), "-c", str(config), "--disable-hot-restart", "-l", "error"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    envoy = Envoy(port, table)

    def listening() -> bool:
        try:
            return envoy.get(b"/no-route")[0] == 404
        except OSError:
            return False

    try:
        wait_until(listening, timeout=20, what="envoy listening")
        yield envoy
    finally:
        stop_process(proc)


def test_an_accepted_path_is_matched_as_written_and_a_refused_one_where_its_error_says(envoy: Envoy) -> None:
    wrong = []
    for path in PATHS:
        expected = _expected_path(path)
        status, route = envoy.get(path.encode())
        got = route.removeprefix("path ") if route else f"status {status}"
        if got != (expected or "status 400"):
            wrong.append(f"{path!r}: validate {_path_verdict(path) or 'accepts'}; Envoy matched {got}")
    assert not wrong, "\n".join(wrong)
    accepted = [p for p in PATHS if _path_verdict(p) is None]
    assert "/a/x%2Fy" in accepted and "/a/x%2fy" in accepted and "/a/x[y" in accepted and "/healthz" in accepted
    assert len(accepted) > 400 and len(PATHS) - len(accepted) > 100


def test_query_parameters_match_as_clients_send_them(envoy: Envoy) -> None:
    wrong = []
    for i, (name, value) in enumerate(QUERIES):
        verdict = _query_verdict(name, value)
        n, v = _sent(name, value)
        sent = f"{n}={v}".encode()
        _, written = envoy.get(f"/q/{i}/written?".encode() + sent)
        _, as_sent = envoy.get(f"/q/{i}/sent?".encode() + sent)
        if as_sent != f"query {i} sent":
            wrong.append(f"{name}={value!r}: the form a client sends ({sent!r}) is not matched")
        if (written == f"query {i} written") != (verdict is None):
            wrong.append(f"{name}={value!r}: validate {verdict or 'accepts'}; as written it matched {written}")
    assert not wrong, "\n".join(wrong)
    # "+" and "%20" are different bytes to Envoy (docs/decisions.md): a form's space matches "+" only
    plus = QUERIES.index(("n", "v2+beta"))
    assert envoy.get(f"/q/{plus}/written?n=v2%20beta".encode())[1] is None
    assert envoy.get(f"/q/{plus}/written?n=v2+beta".encode())[1] == f"query {plus} written"
