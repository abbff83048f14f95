"""Rollout commands from route annotations (`AnnotationCommands`): the runner polls ten
times a second, so the routes are read again only when their version moved or a command
claimed is still unanswered; and no command is lost or answered twice by skipping."""

from __future__ import annotations

from typing import Any

from controller.canary.commands import RolloutCommand
from controller.kubernetes.canary import COMMAND_ANNOTATION, AnnotationCommands
from tests.kubernetes.helpers import route


def _annotated(name: str, value: str) -> dict[str, Any]:
    doc = route(name)
    doc["metadata"]["annotations"] = {COMMAND_ANNOTATION: value}
    return doc


class Routes:
    def __init__(self, *docs: dict[str, Any]) -> None:
        self.docs = list(docs)
        self.version = 1
        self.reads = 0

    def __call__(self) -> list[dict[str, Any]]:
        self.reads += 1
        return self.docs


def test_routes_are_read_again_only_when_they_changed_or_a_claim_is_open() -> None:
    routes = Routes(route("plain"), _annotated("r", "promote@n1"))
    commands = AnnotationCommands(routes, version=lambda: routes.version)

    first = list(commands.claim_all())
    assert first == [RolloutCommand(id="n1", route="default/r", command="promote")] and routes.reads == 1
    assert list(commands.claim_all()) == [RolloutCommand(id="n1", route="default/r", command="promote")]
    assert routes.reads == 2  # claimed, not answered yet: read again (and offered again)

    commands.answer("n1", ok=True, message="promoted")
    assert list(commands.claim_all()) == [] and routes.reads == 2  # answered, same version: not read
    routes.version = 2  # e.g. the ack written into the status
    assert list(commands.claim_all()) == [] and routes.reads == 3  # read: acknowledged, not offered again

    routes.docs.append(_annotated("s", "abort@n2"))
    routes.version = 3
    assert [c.id for c in commands.claim_all() if isinstance(c, RolloutCommand)] == ["n2"]
    assert routes.reads == 4


def test_without_a_version_the_routes_are_read_at_every_poll() -> None:
    routes = Routes(route("plain"))
    commands = AnnotationCommands(routes)
    for _ in range(3):
        assert list(commands.claim_all()) == []
    assert routes.reads == 3
