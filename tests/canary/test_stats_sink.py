"""The statsd listener: what it parses, how it windows, and that Envoy's bootstrap with
the sink is accepted by Envoy."""

from __future__ import annotations

import asyncio
import socket
import subprocess
from pathlib import Path

import pytest

from controller.canary.stats_sink import StatsCollector, StatsListener, StatsTcpListener, parse_line
from routing_engine.names import stat_name
from tests.support import envoy_binary
from xds_server.bootstrap import StatsSink, render, render_dict


def test_parse_keeps_response_classes_and_latency_per_cluster() -> None:
    assert parse_line("envoy.cluster.modelserver/default/a_b.upstream_rq_5xx:3|c") == \
        ("modelserver/default/a_b", "upstream_rq_5xx", 3.0)  # cluster a.b reports as a_b (alt_stat_name)
    assert parse_line("envoy.cluster.modelserver/ns/x.upstream_rq_time:12|ms") == \
        ("modelserver/ns/x", "upstream_rq_time", 12.0)
    # Sub-scopes repeat the same requests; other stats and malformed lines are ignored.
    assert parse_line("envoy.cluster.modelserver/ns/x.external.upstream_rq_2xx:3|c") is None
    assert parse_line("envoy.cluster.modelserver/ns/x.upstream_rq_200:3|c") is None
    assert parse_line("envoy.cluster.modelserver/ns/x.upstream_rq_time:12|c") is None
    assert parse_line("envoy.cluster.modelserver/ns/x.upstream_rq_2xx:nan|c") is None
    assert parse_line("envoy.http.x.downstream_rq_2xx:1|c") is None
    assert parse_line("garbage") is None
    # A failover pair's own cluster counts as its primary (a canary behind a fallback:
    # an acceptance probe found its rollout never moved, "0 requests").
    assert parse_line("envoy.cluster.failover/modelserver/d/a_b/modelserver/d/fb.upstream_rq_2xx:4|c") == \
        ("modelserver/d/a_b", "upstream_rq_2xx", 4.0)
    assert parse_line("envoy.cluster.failover/modelserver/d/a/modelserver/d/fb.upstream_rq_time:9|ms") == \
        ("modelserver/d/a", "upstream_rq_time", 9.0)


def test_a_cluster_named_like_a_sub_scope_keeps_its_stats() -> None:
    """Issue #17: servers named `x.canary`, `x.internal` or `x.external` lost their stats
    (read as Envoy's sub-scopes), so their rollout never moved."""
    stats = StatsCollector(clock=lambda: 10.0)
    lines = []
    for name in ("llama", "llama.canary", "llama.internal", "llama.external"):
        stat = stat_name(f"modelserver/default/{name}")
        lines += [f"envoy.cluster.{stat}.upstream_rq_2xx:4|c", f"envoy.cluster.{stat}.external.upstream_rq_2xx:4|c"]
    lines.append("envoy.cluster.modelserver/default/llama_canary.upstream_rq_5xx:1|c")
    stats.feed("\n".join(lines).encode())
    wanted = [f"modelserver/default/{n}" for n in ("llama", "llama.canary", "llama.internal", "llama.external")]
    windows = stats.window(wanted, since=0, until=20)
    assert {c: (w.requests, w.errors) for c, w in windows.items()} == {
        "modelserver/default/llama": (4, 0), "modelserver/default/llama.canary": (5, 1),
        "modelserver/default/llama.internal": (4, 0), "modelserver/default/llama.external": (4, 0)}


def test_windows_sum_deltas_from_several_envoys_and_never_count_twice() -> None:
    now = [100.2]
    stats = StatsCollector(clock=lambda: now[0])
    a = "envoy.cluster.modelserver/default/a"
    stats.feed(f"{a}.upstream_rq_2xx:8|c\n{a}.upstream_rq_5xx:2|c\n{a}.upstream_rq_time:10|ms".encode())
    stats.feed(f"{a}.upstream_rq_2xx:10|c\n{a}.upstream_rq_time:30|ms".encode())
    now[0] = 101.5
    stats.feed(f"{a}.upstream_rq_5xx:5|c\n{a}.upstream_rq_2xx:0|c".encode())
    first = stats.window(["modelserver/default/a", "modelserver/default/b"], since=99.0, until=101.0)
    second = stats.window(["modelserver/default/a"], since=101.0, until=102.0)
    w = first["modelserver/default/a"]
    assert (w.requests, w.errors, sorted(w.latencies_ms)) == (20, 2, [10.0, 30.0])
    assert w.success_rate == 90.0
    assert first["modelserver/default/b"].requests == 0 and first["modelserver/default/b"].success_rate is None
    assert (second["modelserver/default/a"].requests, second["modelserver/default/a"].errors) == (5, 5)


def test_per_request_codes_and_llm_samples_from_the_access_log_stats() -> None:
    assert parse_line("envoy.modelroute_variant.requests.cluster.modelserver/d/a_b.code.429:1|c") == \
        ("modelserver/d/a_b", "code/429", 1.0)
    assert parse_line("envoy.modelroute_variant.ttft.cluster.modelserver/d/a:31|ms") == ("modelserver/d/a", "ttft", 31.0)
    # A failover pair counts as its primary; no cluster ("-": no route) and unknown stats are dropped.
    assert parse_line("envoy.modelroute_variant.duration.cluster.failover/modelserver/d/a/modelserver/d/f:5|ms") == \
        ("modelserver/d/a", "duration", 5.0)
    assert parse_line("envoy.modelroute_variant.requests.cluster.-.code.404:1|c") is None
    assert parse_line("envoy.modelroute_variant.requests.cluster.modelserver/d/a.code.x:1|c") is None
    assert parse_line("envoy.modelroute_variant.other.cluster.modelserver/d/a:1|ms") is None
    assert parse_line("envoy.modelroute_variant.ttft.cluster.modelserver/d/a:1|c") is None

    stats = StatsCollector(clock=lambda: 10.0)
    v = "envoy.modelroute_variant"
    stats.feed("\n".join([f"{v}.requests.cluster.modelserver/d/a.code.200:3|c",
                          f"{v}.requests.cluster.modelserver/d/a.code.429:1|c",
                          f"{v}.requests.cluster.modelserver/d/a.code.503:1|c",
                          f"{v}.requests.cluster.modelserver/d/a.code.404:0|c",
                          f"{v}.ttft.cluster.modelserver/d/a:40|ms", f"{v}.ttft.cluster.modelserver/d/a:60|ms",
                          f"{v}.completion_tokens.cluster.modelserver/d/a:16|ms"]).encode())
    window = stats.window(["modelserver/d/a"], since=0, until=20)["modelserver/d/a"]
    assert window.completed == 5
    assert window.status_classes() == {"2xx": 3, "3xx": 0, "4xx": 0, "429": 1, "5xx": 1}
    assert window.values("ttft") == (40.0, 60.0) and window.values("completion_tokens") == (16.0,)
    total = stats.cumulative()["modelserver/d/a"]
    assert total.codes == {200: 3, 429: 1, 503: 1}
    ttft = total.histograms["ttft"]
    assert (ttft.count, ttft.total) == (2, 100.0)
    assert ttft.counts[ttft.bounds.index(50)] == 1 and ttft.counts[ttft.bounds.index(100)] == 1


def test_cumulative_numbers_outlive_the_windows() -> None:
    now = [1000.0]
    stats = StatsCollector(clock=lambda: now[0], retention_s=60)
    stats.feed(b"envoy.cluster.modelserver/d/a.upstream_rq_2xx:4|c")
    now[0] = 1100.0
    stats.feed(b"envoy.cluster.modelserver/d/a.upstream_rq_2xx:1|c")
    assert stats.cumulative()["modelserver/d/a"].responses == {"2xx": 5}


def test_old_seconds_expire() -> None:
    now = [1000.0]
    stats = StatsCollector(clock=lambda: now[0], retention_s=60)
    stats.feed(b"envoy.cluster.modelserver/d/a.upstream_rq_2xx:4|c")
    now[0] = 1100.0
    stats.feed(b"envoy.cluster.modelserver/d/a.upstream_rq_2xx:1|c")
    assert stats.window(["modelserver/d/a"], since=0, until=2000)["modelserver/d/a"].requests == 1


async def test_listener_receives_udp_datagrams() -> None:
    stats = StatsCollector()
    listener = StatsListener(stats)
    port = await listener.start()
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(b"envoy.cluster.modelserver/d/a.upstream_rq_2xx:7|c", ("127.0.0.1", port))
        for _ in range(100):
            if stats.datagrams:
                break
            await asyncio.sleep(0.01)
        assert stats.window(["modelserver/d/a"], since=0)["modelserver/d/a"].requests == 7
    finally:
        listener.close()


async def test_tcp_listener_joins_lines_split_across_reads() -> None:
    stats = StatsCollector()
    listener = StatsTcpListener(stats)
    port = await listener.start()
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"envoy.cluster.modelserver/d/a.upstream_rq_2xx:7|c\nenvoy.cluster.modelserver/d/a.upstr")
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(b"eam_rq_5xx:2|c\n")
        await writer.drain()
        for _ in range(100):
            if stats.window(["modelserver/d/a"], since=0)["modelserver/d/a"].requests == 9:
                break
            await asyncio.sleep(0.01)
        window = stats.window(["modelserver/d/a"], since=0)["modelserver/d/a"]
        assert (window.requests, window.errors) == (9, 2)
        writer.close()
    finally:
        await listener.close()


@pytest.mark.parametrize("role", ["gateway", "sidecar"])
def test_bootstrap_with_stats_sink_is_accepted_by_envoy(role: str, tmp_path: Path) -> None:
    kwargs = dict(node_id="n", cluster="c", xds_port=18000, admin_port=19901,
                  stats_sink=StatsSink(port=9125, flush_interval_ms=500))
    config = render_dict(role, **kwargs)  # type: ignore[arg-type]
    (sink,) = config["stats_sinks"]
    assert sink["typed_config"]["address"]["socket_address"] == {"protocol": "UDP", "address": "127.0.0.1",
                                                                  "port_value": 9125}
    assert config["stats_flush_interval"] == "0.500s"
    assert "stats_sinks" not in render_dict(role, node_id="n", cluster="c", xds_port=1, admin_port=2)
    path = tmp_path / "bootstrap.yaml"
    path.write_text(render(role, **kwargs))  # type: ignore[arg-type]
    result = subprocess.run([envoy_binary(), "--mode", "validate", "-c", str(path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]


async def test_over_mtls_only_a_gateway_certificate_is_heard() -> None:
    """Issue #14: 40 forged statsd datagrams moved a canary from 50% to 70%. In a cluster
    the stats listener takes TCP over mTLS only: a client without the gateways' certificate
    (or with one of another CA) is refused before a line is read."""
    import datetime
    import ssl
    import tempfile

    from controller.certs import pki
    from controller.certs.tls import ServingTls
    from xds_server.identity import GATEWAY_IDENTITY

    now = datetime.datetime.now(datetime.timezone.utc)
    ca, stranger_ca = pki.new_ca("xds-ca", now=now), pki.new_ca("other", now=now)
    server = pki.new_serving(ca, ["modelroute-stats.ns.svc"], now=now)
    tls = ServingTls(name="stats")
    tls.load(server, client_ca=ca.cert_pem)
    collector = StatsCollector()
    listener = StatsTcpListener(collector, tls=tls.context)
    port = await listener.start()
    cluster = "modelserver/default/llama-canary"
    line = f"envoy.cluster.{stat_name(cluster)}.upstream_rq_2xx:40|c\n".encode()

    def requests() -> int:
        return collector.window([cluster], since=0)[cluster].requests

    async def send(client: pki.KeyPair | None) -> bool:
        context = ssl.create_default_context(cadata=ca.cert_pem.decode())
        context.check_hostname = False
        if client is not None:
            with tempfile.TemporaryDirectory() as directory:
                Path(directory, "c").write_bytes(client.cert_pem)
                Path(directory, "k").write_bytes(client.key_pem)
                context.load_cert_chain(Path(directory, "c"), Path(directory, "k"))
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
            writer.write(line)
            await writer.drain()
            writer.close()
            await writer.wait_closed()
        except (OSError, ssl.SSLError):
            return False
        return True

    async def plaintext() -> None:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(line)
        await writer.drain()
        writer.close()

    try:
        await plaintext()
        await send(None)
        await send(pki.new_client(stranger_ca, GATEWAY_IDENTITY, now=now))
        await asyncio.sleep(0.2)
        assert requests() == 0
        assert await send(pki.new_client(ca, GATEWAY_IDENTITY, now=now))
        for _ in range(50):
            if requests():
                break
            await asyncio.sleep(0.02)
        assert requests() == 40
    finally:
        await listener.close()
