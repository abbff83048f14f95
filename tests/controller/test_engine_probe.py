"""Issue #18: what the engines report becomes endpoint facts — loaded LoRA adapters from
`/v1/models`, loadAware weights from `/metrics` (`controller.engines.load`)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import pytest

from controller.engines.load import (
    DEAD_BAND,
    LEVELS,
    MAX_WEIGHT,
    EngineLoad,
    parse_metrics,
    quantized,
    weights,
)
from controller.engines.probe import EngineProbe, adapters_of, needs_of
from routing_engine.api.resources import KIND_BY_NAME, ModelInfer, ObjectKey, Resource
from routing_engine.world import BackendEndpoint

INFER = ObjectKey("ModelInfer", "default", "llama")
OTHER = ObjectKey("ModelInfer", "default", "plain")


def metrics(tpot_sum: float, tpot_count: float, waiting: float = 0, running: float = 1, kv: float = 0.1) -> str:
    return "\n".join([
        "# TYPE vllm:time_per_output_token_seconds histogram",
        f'vllm:time_per_output_token_seconds_sum{{model_name="m"}} {tpot_sum}',
        f'vllm:time_per_output_token_seconds_count{{model_name="m"}} {tpot_count}',
        f'vllm:num_requests_waiting{{model_name="m"}} {waiting}',
        f'vllm:num_requests_running{{model_name="m"}} {running}',
        f'vllm:kv_cache_usage_perc{{model_name="m"}} {kv}', ""])


def polled(*bodies: str, start: float = 0.0) -> EngineLoad:
    load = EngineLoad()
    for i, body in enumerate(bodies):
        load = load.updated(parse_metrics(body), start + i)
    return load


def test_parse_sums_label_sets_and_skips_what_is_not_a_sample() -> None:
    text = ('# HELP x\nvllm:num_requests_waiting{model_name="a"} 2\nvllm:num_requests_waiting{model_name="b, }"} 3\n'
            "plain_metric 1.5 1700000000\nbroken{x=\"1\"} nan-ish\n")
    assert parse_metrics(text) == {"vllm:num_requests_waiting": 5.0, "plain_metric": 1.5}


def test_speed_is_the_least_recent_time_per_token() -> None:
    load = polled(metrics(0, 0), metrics(0.5, 10), metrics(0.8, 20), metrics(1.8, 30))  # 50, 30, 100 ms per token
    assert load.tpot_s() == pytest.approx(0.03)
    assert polled(metrics(0, 0), metrics(0.01, 2)).tpot_s() is None  # too few tokens to measure
    aged = load.updated(parse_metrics(metrics(1.8, 30)), 100.0)  # nothing new, and the window passed
    assert aged.tpot_s() is None


def test_load_factor_falls_with_a_full_kv_cache_and_a_queue() -> None:
    assert polled(metrics(0, 0, kv=0.5)).load_factor() == 1.0
    assert polled(metrics(0, 0, kv=1.0)).load_factor() == pytest.approx(0.25)
    assert polled(metrics(0, 0, kv=0.9)).load_factor() == pytest.approx(0.625)
    queued = polled(metrics(0, 0, kv=0.5, waiting=4, running=4)).load_factor()
    assert queued == pytest.approx(0.5)


def test_weights_single_out_a_slow_replica_and_leave_equals_alone() -> None:
    fast = polled(metrics(0, 0), metrics(0.2, 10))  # 20 ms a token
    alike = polled(metrics(0, 0), metrics(0.25, 10))  # 25 ms: within the dead band
    slow = polled(metrics(0, 0), metrics(0.6, 10))  # 60 ms: 3x slower
    assert 0.2 / 0.25 >= DEAD_BAND
    assert weights({"a": fast, "b": alike}) is None  # equal: plain least request, no EDS weights
    found = weights({"a": fast, "b": alike, "c": slow, "new": EngineLoad()})
    assert found is not None and found["a"] == found["b"] == found["new"] == MAX_WEIGHT
    assert found["c"] == quantized(MAX_WEIGHT * (1 / 3) ** 4) == 1
    full = polled(metrics(0, 0), metrics(0.2, 10, kv=1.0))
    assert weights({"a": fast, "full": full}) == {"a": 100, "full": 25}
    assert weights({"x": EngineLoad(), "y": EngineLoad()}) is None  # nothing measured yet


def test_weights_move_between_a_few_levels_only() -> None:
    assert [quantized(w) for w in (100, 80, 40, 20, 9, 4, 2, 1.4, 0.01)] == [100, 100, 50, 25, 12, 3, 3, 1, 1]
    assert set(LEVELS) >= {quantized(x / 10) for x in range(1, 1200)}


def test_adapters_of_a_models_answer() -> None:
    body = ('{"object": "list", "data": [{"id": "m", "parent": null}, {"id": "sql", "parent": "m"},'
            ' {"id": "chat", "root": "/x", "parent": "m"}]}')
    assert adapters_of(body) == ("chat", "sql")
    assert adapters_of('{"data": [{"id": "m"}]}') == ()
    assert adapters_of("not json") is None and adapters_of('{"data": 3}') is None


def objects(adapters: list[str], balancing: str | None) -> list[Resource]:
    infer = {"apiVersion": "workload.matrixinfer.ai/v1alpha1", "kind": "ModelInfer", "metadata": {"name": "llama"},
             "spec": {"modelRef": {"name": "m"}, "adapters": [{"name": a} for a in adapters]}}
    plain = {"apiVersion": "workload.matrixinfer.ai/v1alpha1", "kind": "ModelInfer", "metadata": {"name": "plain"},
             "spec": {"modelRef": {"name": "m"}}}
    server: dict = {"apiVersion": "networking.matrixinfer.ai/v1alpha1", "kind": "ModelServer",
                    "metadata": {"name": "s"}, "spec": {"modelInferRef": {"name": "llama"}, "service": {"port": 80},
                                                        "routing": {"path": "/a"}}}
    if balancing:
        server["spec"]["loadBalancing"] = balancing
    return [KIND_BY_NAME[d["kind"]].model_validate(d) for d in (infer, plain, server)]


def test_only_modelinfers_that_need_it_are_polled() -> None:
    assert needs_of(objects([], None)) == {}
    assert {k: (n.adapters, n.load) for k, n in needs_of(objects(["sql"], "loadAware")).items()} == {INFER: (True, True)}
    assert {k: (n.adapters, n.load) for k, n in needs_of(objects([], "loadAware")).items()} == {INFER: (False, True)}
    assert {k: (n.adapters, n.load) for k, n in needs_of(objects(["a"], "prefixAffinity")).items()} == {INFER: (True, False)}


def test_the_same_objects_again_are_not_read_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """An edit elsewhere hands the probe the very same ModelInfers (10,000 of them in a
    large cluster): compared by identity, not read again by `needs_of`."""
    import controller.engines.probe as probe

    reads: list[int] = []
    monkeypatch.setattr(probe, "needs_of", lambda objs: reads.append(len(objs)) or needs_of(objs))
    engine = EngineProbe(lambda endpoints: None)
    first = objects(["sql"], "loadAware")
    engine.set_objects(first)
    engine.set_objects(list(first))  # the same objects, in a new sequence
    assert reads == [len(first)]
    engine.set_objects(objects(["sql", "chat"], "loadAware"))  # a ModelInfer changed
    assert len(reads) == 2


class FakeEngines:
    """Answers per (address, port) and path; None: the probe fails."""

    def __init__(self) -> None:
        self.answers: dict[tuple[tuple[str, int], str], str | None] = {}
        self.calls: list[tuple[tuple[str, int], str]] = []

    async def __call__(self, address: tuple[str, int], path: str) -> str | None:
        self.calls.append((address, path))
        return self.answers.get((address, path))

    def models(self, port: int, *adapters: str) -> None:
        data = [{"id": "m", "parent": None}, *({"id": a, "parent": "m"} for a in adapters)]
        self.answers[(("10.0.0.1", port), "/v1/models")] = '{"data": %s}' % str(data).replace("'", '"').replace(
            "None", "null")


def published_adapters(published: list[Mapping[ObjectKey, tuple[BackendEndpoint, ...]]]) -> dict[int | None, object]:
    return {e.port: e.adapters for e in published[-1][INFER]}


async def test_probe_reports_adapters_keeps_them_on_failure_and_passes_others_through() -> None:
    engines = FakeEngines()
    published: list[Mapping[ObjectKey, tuple[BackendEndpoint, ...]]] = []
    probe = EngineProbe(published.append, fetch=engines)
    probe.set_objects(objects(["sql", "chat"], None))
    endpoints = {INFER: (BackendEndpoint("10.0.0.1", 1), BackendEndpoint("10.0.0.1", 2)),
                 OTHER: (BackendEndpoint("10.0.0.9", 3),)}
    probe.set_endpoints(endpoints)
    assert published_adapters(published) == {1: None, 2: None}  # passed on at once, adapters unknown
    assert published[-1][OTHER] == endpoints[OTHER]
    engines.models(1, "sql", "chat")
    engines.models(2, "sql", "undeclared")
    await probe.poll()
    assert published_adapters(published) == {1: ("chat", "sql"), 2: ("sql", "undeclared")}
    assert all(address[0] == "10.0.0.1" for address, _ in engines.calls)  # the plain ModelInfer is not polled
    count = len(published)
    engines.answers[(("10.0.0.1", 1), "/v1/models")] = None  # a failed probe keeps what was known
    await probe.poll()
    assert len(published) == count and published_adapters(published)[1] == ("chat", "sql")
    engines.models(1, "chat")
    await probe.poll()
    assert published_adapters(published)[1] == ("chat",)
    probe.set_endpoints({INFER: (BackendEndpoint("10.0.0.1", 2),)})  # replica 1 gone: forgotten
    probe.set_endpoints({INFER: (BackendEndpoint("10.0.0.1", 1), BackendEndpoint("10.0.0.1", 2))})
    assert published_adapters(published) == {1: None, 2: ("sql", "undeclared")}


async def test_probe_weighs_loadaware_endpoints_and_runs_at_once_for_new_ones() -> None:
    engines = FakeEngines()
    published: list[Mapping[ObjectKey, tuple[BackendEndpoint, ...]]] = []
    probe = EngineProbe(published.append, fetch=engines, interval=30.0)
    probe.set_objects(objects([], "loadAware"))
    probe.set_endpoints({INFER: tuple(BackendEndpoint("10.0.0.1", p) for p in (1, 2, 3))})
    for port in (1, 2, 3):
        engines.answers[(("10.0.0.1", port), "/metrics")] = metrics(0, 0)
    runner = asyncio.create_task(probe.run())
    try:
        await asyncio.sleep(0.05)  # the first round ran at once (new endpoints), not after 30 s
        assert engines.calls
        for port, tpot in ((1, 0.02), (2, 0.021), (3, 0.07)):
            engines.answers[(("10.0.0.1", port), "/metrics")] = metrics(tpot * 10, 10)
        await probe.poll()
        assert {e.port: e.weight for e in published[-1][INFER]} == {1: 100, 2: 100, 3: 1}
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
        await probe.close()
