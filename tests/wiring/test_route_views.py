"""`modelroute status` shows a ModelRoute's groups as written: the routes resolve derives
for LoRA adapters (issue 18) are part of their group, not groups of their own."""

from __future__ import annotations

from routing_engine import engine
from routing_engine.world import Target, World
from modelroute.route_views import route_views
from tests.resolve.build import route, server, to
from tests.resolve.test_inference import infer


def test_adapter_copies_of_a_group_are_not_shown_as_groups() -> None:
    objects = [infer("lora", ("sql", "chat")), infer("plain"), server("lora", "/v1/models/lora"),
               server("plain", "/v1/models/plain"),
               route("split", {"path": "/v1", "fallback": {"modelServerRef": {"name": "lora"}},
                               "routes": [to("lora", weight=70), to("plain", weight=30)]})]
    compiled = engine.compile(World(tuple(objects)), Target())
    assert any(r.derived_from for lst in compiled.gateway.listeners for r in lst.routes)  # type: ignore[union-attr]
    (view,) = route_views(compiled, objects)
    assert [g.match for g in view.groups] == ["path /v1/*", "/v1 (unmatched → fallback)"]
    assert [(s.destination, s.weight) for s in view.groups[0].splits] == [("default/lora", 70), ("default/plain", 30)]
