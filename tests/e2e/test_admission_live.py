"""Issue #17, validation as a running gateway sees it: each rule the loader now enforces
(all-zero weights, a canary without its two-destination group, a non-ASCII path, too many
replicas, an oversized manifest) is reported with its field path, and what was serving
keeps serving through the real Envoy, untouched."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio

from modelroute.embedded import Embedded
from routing_engine.api.loader import MAX_MANIFEST_BYTES
from tests.e2e.harness import Client, child_pids, dest, infer, route, running, served_by, server, wait_for, write_file
from tests.e2e.harness import write_manifests
from tests.support import free_port

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]


@dataclass(frozen=True)
class Setup:
    app: Embedded
    directory: Path
    port: int
    client: Client


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def setup(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Setup]:
    directory = tmp_path_factory.mktemp("admission")
    port = free_port()
    write_manifests(directory / "base.yaml", [infer("a"), infer("b"), server("a", port=port, path="/v1/models/a"),
                                              server("b", port=port, path="/v1/models/b")])
    write_manifests(directory / "split.yaml", [route("split", path="/v1/models/ab", routes=[dest("a", 50), dest("b", 50)])])
    async with running(directory) as app, Client(port) as client:
        yield Setup(app, directory, port, client)


async def reported(app: Embedded, name: str, rule: str) -> list[str]:
    """The errors of file `name`, once one of them is about `rule`."""
    def errors() -> list[str]:
        return [e for f, errs in app.provider.errors.items() if Path(f).name == name for e in errs]

    async def seen() -> bool:
        return any(rule in e for e in errors())
    await wait_for(seen, timeout=5, what=f"an error of {name} about {rule!r}")
    return errors()


async def still_serving(setup: Setup) -> None:
    await asyncio.sleep(0.5)  # time enough for a push, had there been one
    replies = await served_by(setup.client, "/v1/models/ab/infer", n=40)
    assert {r.status for r in replies} == {200} and {r.served_by for r in replies} == {"a", "b"}


async def test_all_zero_weights_and_a_canary_without_its_pair(setup: Setup) -> None:
    write_manifests(setup.directory / "split.yaml", [route("split", path="/v1/models/ab",
                                                           routes=[dest("a", 0), dest("b", 0)])])
    (error,) = await reported(setup.app, "split.yaml", "are all 0")
    assert error.endswith("ModelRoute default/split: spec.routes[0].weight: the weights of one group "
                          "(spec.routes[0], spec.routes[1]) are all 0; at least one must be positive"), error
    await still_serving(setup)
    write_manifests(setup.directory / "split.yaml", [route("split", path="/v1/models/ab", canary={"enabled": True},
                                                           routes=[dest("a"), dest("b"), dest("a")])])
    (error,) = await reported(setup.app, "split.yaml", "spec.canary")
    assert "ModelRoute default/split: spec.canary: canary needs exactly one group" in error and "found 0" in error
    await still_serving(setup)


async def test_a_non_ascii_path_says_what_to_write(setup: Setup) -> None:
    write_manifests(setup.directory / "cafe.yaml", [server("cafe", port=setup.port, path="/v1/models/café",
                                                           infer_name="a")])
    (error,) = await reported(setup.app, "cafe.yaml", "ASCII")
    assert error.endswith('spec.routing.path: "/v1/models/café" must be ASCII: write it percent-encoded, as clients '
                          "send it (/v1/models/caf%C3%A9)"), error
    await still_serving(setup)


async def test_too_many_replicas_start_nothing(setup: Setup) -> None:
    before = child_pids()
    write_manifests(setup.directory / "huge.yaml", [infer("huge", replicas=100_000)])
    (error,) = await reported(setup.app, "huge.yaml", "replicas")
    assert error.endswith("ModelInfer default/huge: spec.replicas: 100000 must be at most 1000"), error
    await still_serving(setup)
    assert child_pids() == before


async def test_an_oversized_manifest_is_refused_unread(setup: Setup) -> None:
    write_file(setup.directory / "big.yaml", "# " + "x" * MAX_MANIFEST_BYTES + "\n")
    (error,) = await reported(setup.app, "big.yaml", "at most")
    assert f"a manifest may be at most {MAX_MANIFEST_BYTES} bytes" in error
    await still_serving(setup)
