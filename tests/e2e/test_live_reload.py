"""Issue #5, "Done when": live reload under load — while a client sends a steady stream
of requests, the split is changed ten times by rewriting the ModelRoute's file; no request
fails and each new split is served within 1 s of the file write. And a broken file
(invalid YAML, or valid YAML that breaks the schema) disturbs no other route, while its
own last good version keeps serving."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio

from modelroute.embedded import Embedded
from tests.e2e.harness import (RATE, Client, SteadyLoad, dest, infer, route, running, server, served_by, wait_for,
                               write_file, write_manifests)
from tests.support import free_port

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

EDIT_TO_SERVED_LIMIT = 1.0  # seconds, SPEC 5 "edit → served"


@dataclass(frozen=True)
class Setup:
    app: Embedded
    client: Client
    directory: Path


def live_route(weights: dict[str, int]) -> list[dict]:
    return [route("live", path="/v1/models/live", routes=[dest(name, w) for name, w in weights.items()])]


def other_route(target: str) -> list[dict]:
    return [route("other", path="/v1/models/other", routes=[dest(target)])]


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def setup(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Setup]:
    directory = tmp_path_factory.mktemp("reload")
    port = free_port()
    write_manifests(directory / "backends.yaml", [
        *(infer(n) for n in ("a", "b", "c")),
        *(server(n, port=port, path=f"/v1/models/{n}") for n in ("a", "b", "c")),
    ])
    write_manifests(directory / "live.yaml", live_route({"a": 100, "b": 0}))
    write_manifests(directory / "other.yaml", other_route("c"))
    async with running(directory) as app, Client(port, limit=100) as client:
        yield Setup(app, client, directory)


async def test_split_changes_ten_times_under_load_no_failures_each_served_within_1s(setup: Setup) -> None:
    before = await served_by(setup.client, "/v1/models/live/infer", n=10)
    assert {(r.status, r.served_by) for r in before} == {(200, "a")}
    latencies: list[float] = []
    async with SteadyLoad(setup.client, "/v1/models/live/infer") as load:
        await asyncio.sleep(0.5)
        for change in range(10):
            target, old = ("b", "a") if change % 2 == 0 else ("a", "b")
            written = write_manifests(setup.directory / "live.yaml", live_route({target: 100, old: 0}))
            deadline = written + 5
            while (first := load.first_from(target, written)) is None:
                assert time.monotonic() < deadline, f"change {change}: {target} not served 5 s after the write"
                await asyncio.sleep(0.01)
            latencies.append(first - written)
            await asyncio.sleep(0.6)  # let the new split run under load
            # once served, the new split is the whole split: nothing sent later goes to the old target
            late = [s for s in load.samples if s.sent > first + 0.1 and s.served_by == old]
            assert not late, f"change {change}: {len(late)} requests still reached {old}"
    failures = load.failures()
    assert not failures, f"{len(failures)} of {len(load.samples)} requests failed, e.g. {failures[:3]}"
    assert len(load.samples) >= 10 * 0.6 * RATE
    print("edit → served (s):", [round(x, 3) for x in latencies])  # shown with -rP
    slowest = max(latencies)
    assert slowest < EDIT_TO_SERVED_LIMIT, f"edit → served per change (s): {[round(x, 3) for x in latencies]}"


async def wait_file_error(app: Embedded, name: str, *, present: bool) -> tuple[str, ...]:
    async def seen() -> bool:
        return any(Path(f).name == name for f in app.provider.errors) == present
    await wait_for(seen, timeout=5, what=f"the provider to {'report' if present else 'clear'} errors of {name}")
    return next((errs for f, errs in app.provider.errors.items() if Path(f).name == name), ())


async def assert_undisturbed(setup: Setup, load: SteadyLoad, *, other_target: str) -> None:
    other = await served_by(setup.client, "/v1/models/other/infer", n=10)
    assert {(r.status, r.served_by) for r in other} == {(200, other_target)}  # its last good version
    assert not load.failures(), load.failures()[:3]


async def test_a_broken_file_disturbs_no_other_route_and_its_last_good_version_keeps_serving(setup: Setup) -> None:
    other_file = setup.directory / "other.yaml"
    async with SteadyLoad(setup.client, "/v1/models/live/infer") as load:
        await asyncio.sleep(0.3)
        # 1. invalid YAML
        write_file(other_file, "apiVersion: networking.matrixinfer.ai/v1alpha1\nkind: ModelRoute\nspec: [unclosed\n")
        errors = await wait_file_error(setup.app, "other.yaml", present=True)
        assert errors
        await asyncio.sleep(0.5)
        await assert_undisturbed(setup, load, other_target="c")
        # 2. valid YAML, schema error (a weight over 100)
        broken = other_route("a")
        broken[0]["spec"]["routes"][0]["weight"] = 150
        write_manifests(other_file, broken)
        await asyncio.sleep(0.5)
        errors = await wait_file_error(setup.app, "other.yaml", present=True)
        assert any("weight" in e for e in errors), errors
        await assert_undisturbed(setup, load, other_target="c")
        # 3. a new file that was never good contributes nothing and breaks nothing
        write_file(setup.directory / "new.yaml", "kind: ModelRoute\n  metadata: {name: x\n")
        await wait_file_error(setup.app, "new.yaml", present=True)
        await asyncio.sleep(0.5)
        await assert_undisturbed(setup, load, other_target="c")
        # 4. fixing the file serves the fix
        write_manifests(other_file, other_route("b"))
        await wait_file_error(setup.app, "other.yaml", present=False)

        async def fixed() -> bool:
            replies = await served_by(setup.client, "/v1/models/other/infer", n=3)
            return {(r.status, r.served_by) for r in replies} == {(200, "b")}
        await wait_for(fixed, timeout=5, what="the fixed file to be served")
    assert not load.failures(), load.failures()[:3]
    assert Counter(s.status for s in load.samples)[200] == len(load.samples) > 50
