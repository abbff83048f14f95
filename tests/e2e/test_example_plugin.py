"""Pluggable, proved from the outside (issue #19): the example plugin
`examples/plugins/cors` is its own package, installed by pip into a venv of its own
stacked on the project's, found there through its `modelroute.plugins` entry point, and
exercised through a real Envoy started by `modelroute up` from that venv.

The venv: a venv made from a venv's interpreter sees the base interpreter's
site-packages, not the venv's, so `--system-site-packages` would not reach modelroute;
a `.pth` file that adds the project venv's site-packages does (and brings pip and
setuptools, so the build runs offline: `--no-index --no-build-isolation`). The project
venv itself is left as it was: discovery there finds no plugin.
"""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.e2e.test_cli import alive, descendants, read_until
from tests.support import REPO, VENV_BIN, free_port, stop_process

pytestmark = pytest.mark.slow

EXAMPLE = REPO / "examples" / "plugins" / "cors"
NET = "networking.matrixinfer.ai/v1alpha1"
ALLOWED = "https://app.example.com"
CORS = {"allowOrigins": [ALLOWED, "https://*.example.org"], "allowMethods": ["POST", "GET"],
        "allowHeaders": ["content-type", "x-api-key"], "maxAge": 600}


def run(python: Path, *args: str, timeout: float = 120, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(python), *args], capture_output=True, text=True, timeout=timeout,
                          env=_env(), **kwargs)  # type: ignore[call-overload, no-any-return]


def _env() -> dict[str, str]:
    """Envoy comes from the project venv (found on PATH when not beside the interpreter)."""
    return {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}", "PYTHONNOUSERSITE": "1"}


@pytest.fixture(scope="module")
def plugin_python(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The interpreter of a fresh venv with the example plugin installed by pip."""
    root = tmp_path_factory.mktemp("plugin-venv")
    source = root / "modelroute-cors"
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    python = venv / "bin" / "python"
    site = run(python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))").stdout.strip()
    project_site = sysconfig.get_path("purelib")
    Path(site, "modelroute-project.pth").write_text(f"import site; site.addsitedir({project_site!r})\n")
    installed = run(python, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
                    "--disable-pip-version-check", str(source))
    assert installed.returncode == 0, installed.stdout + installed.stderr
    assert Path(site, "modelroute_cors").is_dir()  # in the new venv, not the project's
    yield python


def test_discovery_finds_the_plugin_in_its_venv_only(plugin_python: Path) -> None:
    code = "from routing_engine import plugins; print([(p.name, p.rank) for p in plugins.discover()])"
    assert run(plugin_python, "-c", code).stdout.strip() == "[('cors', 250)]"
    assert run(Path(sys.executable), "-c", code).stdout.strip() == "[]"


def servers(port: int) -> list[dict]:  # type: ignore[type-arg]
    """`chat` (CORS, API key) and `plain` (neither) on one port; their ModelInfers; the keys."""
    def server(name: str, **spec: object) -> dict:  # type: ignore[type-arg]
        return {"apiVersion": NET, "kind": "ModelServer", "metadata": {"name": name},
                "spec": {"modelInferRef": {"name": name}, "service": {"port": port},
                         "routing": {"path": f"/v1/models/{name}"}, **spec}}

    infers = [{"apiVersion": "workload.matrixinfer.ai/v1alpha1", "kind": "ModelInfer", "metadata": {"name": n},
               "spec": {"modelRef": {"name": "llama"}, "replicas": 1}} for n in ("chat", "plain")]
    keys = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "keys"}, "stringData": {"alice": "k-alice"}}
    chat = server("chat", extensions={"cors": CORS},
                  authentication={"enabled": True, "type": "apiKey", "config": {"secretName": "keys"}})
    return [*infers, keys, chat, server("plain")]


def test_validate_names_resource_field_and_rule_for_a_bad_value(plugin_python: Path, tmp_path: Path) -> None:
    docs = servers(8080)
    docs[3]["spec"]["extensions"] = {"cors": {"allowOrigins": ["app.example.com"], "maxAge": "10m"}}
    manifest = tmp_path / "servers.yaml"
    manifest.write_text(yaml.safe_dump_all(docs))
    done = run(plugin_python, "-m", "modelroute.cli", "validate", "-f", str(manifest))
    assert done.returncode == 1, done
    assert done.stdout.splitlines() == [
        f'{manifest}#4: ModelServer default/chat: spec.extensions.cors.allowOrigins: "app.example.com" is not an '
        "origin: write scheme://host[:port] with no path (e.g. https://app.example.com, https://*.example.com), "
        'or "*"',
        f'{manifest}#4: ModelServer default/chat: spec.extensions.cors.maxAge: "10m" must be an integer',
    ]
    # Where the plugin is not installed, the key itself is refused.
    docs[3]["spec"]["extensions"] = {"cors": CORS}
    manifest.write_text(yaml.safe_dump_all(docs))
    assert run(plugin_python, "-m", "modelroute.cli", "validate", "-f", str(manifest)).returncode == 0
    without = run(VENV_BIN / "python", "-m", "modelroute.cli", "validate", "-f", str(manifest))
    assert without.returncode == 1 and without.stdout == (
        f"{manifest}#4: ModelServer default/chat: spec.extensions.cors: no installed plugin owns this key "
        "(no installed plugin reads spec.extensions)\n")


def test_compile_puts_the_filter_at_its_rank_and_envoy_accepts_it(plugin_python: Path, tmp_path: Path) -> None:
    manifest = tmp_path / "servers.yaml"
    manifest.write_text(yaml.safe_dump_all(servers(8080)))
    done = run(plugin_python, "-m", "modelroute.cli", "compile", "-f", str(manifest), "--validate")
    assert done.returncode == 0, done.stderr
    (listener,) = yaml.safe_load(done.stdout)["static_resources"]["listeners"]
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    names = [f["name"] for f in hcm["http_filters"]]
    assert names.index("modelroute.ready") < names.index("envoy.filters.http.cors")
    assert names.index("envoy.filters.http.cors") < names.index("envoy.filters.http.api_key_auth")


def request(port: int, method: str, path: str, headers: dict[str, str]) -> tuple[int, dict[str, str]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=b"{}" if method == "POST" else None, headers=headers)
        resp = conn.getresponse()
        resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}
    finally:
        conn.close()


def preflight(port: int, path: str, origin: str) -> tuple[int, dict[str, str]]:
    return request(port, "OPTIONS", path, {"Origin": origin, "Access-Control-Request-Method": "POST",
                                           "Access-Control-Request-Headers": "content-type,x-api-key"})


def cors_headers(headers: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k.startswith("access-control-")}


def test_a_real_envoy_answers_preflights_by_the_plugin_and_its_rank(plugin_python: Path, tmp_path: Path) -> None:
    port = free_port()
    directory = tmp_path / "site"
    directory.mkdir()
    (directory / "servers.yaml").write_text(yaml.safe_dump_all(servers(port)))
    proc = subprocess.Popen([str(plugin_python), "-m", "modelroute.cli", "up", str(directory), "--xds-port", "0",
                             "--admin-address", "127.0.0.1:0", "--log-level", "warning"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            cwd=tmp_path, env=_env(), start_new_session=True)
    children: set[int] = set()
    try:
        read_until(proc, "Ctrl-C to stop", timeout=60)
        children = descendants(proc.pid)
        chat = "/v1/models/chat/v1/chat/completions"
        status, headers = preflight(port, chat, ALLOWED)
        # Answered by Envoy before the API key is asked for (CORS 250 < API key 350).
        assert status == 200, (status, headers)
        assert cors_headers(headers) == {
            "access-control-allow-origin": ALLOWED, "access-control-allow-methods": "POST,GET",
            "access-control-allow-headers": "content-type,x-api-key", "access-control-max-age": "600"}
        status, headers = preflight(port, chat, "https://team.example.org")  # the wildcard subdomain
        assert status == 200 and headers["access-control-allow-origin"] == "https://team.example.org"
        for origin in ("https://evil.example.com", "https://example.org"):
            # Envoy answers it too (never forwarded to the model), without the one header
            # that lets a browser go on: Access-Control-Allow-Origin.
            status, headers = preflight(port, chat, origin)
            assert "access-control-allow-origin" not in headers, (origin, status, headers)
        status, headers = preflight(port, "/v1/models/plain/x", ALLOWED)  # no policy on that server
        assert not cors_headers(headers), (status, headers)
        # Actual requests: the key is still required; an allowed origin's answer carries its header.
        assert request(port, "POST", chat, {"Origin": ALLOWED, "content-type": "application/json"})[0] == 401
        status, headers = request(port, "POST", chat, {"Origin": ALLOWED, "content-type": "application/json",
                                                        "x-api-key": "k-alice"})
        assert status == 200 and headers["access-control-allow-origin"] == ALLOWED
        status, headers = request(port, "POST", chat, {"Origin": "https://evil.example.com",
                                                        "content-type": "application/json", "x-api-key": "k-alice"})
        assert status == 200 and not cors_headers(headers)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0
        deadline = time.monotonic() + 10
        while (left := {pid for pid in children if alive(pid)}) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not left, f"processes left after Ctrl-C: {sorted(left)}"
    finally:
        stop_process(proc)
        for pid in children:  # only if the test failed: never leave them running
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
