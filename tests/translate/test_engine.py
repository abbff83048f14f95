"""engine.compile = resolve + translate: memoization across compiles of edited worlds,
translate errors in statuses."""

from __future__ import annotations

from routing_engine import engine
from routing_engine.api.loader import load_text
from routing_engine.api.resources import ObjectKey
from routing_engine.incremental import Translator
from routing_engine.translate import TranslateError
from routing_engine.translate.xds import ROUTE
from routing_engine.world import ConditionView, ObjectStatus, Target, World
from tests.translate.builders import table_name

SERVERS = "\n---\n".join(
    f"""apiVersion: networking.matrixinfer.ai/v1alpha1
kind: ModelServer
metadata: {{name: s{i}}}
spec:
  modelInferRef: {{name: s{i}}}
  service: {{port: {8080 + i % 2}}}
  routing: {{path: /v1/models/s{i}}}
"""
    for i in range(6)
)


def route_doc(name: str, path: str, weight: int) -> str:
    return f"""apiVersion: networking.matrixinfer.ai/v1alpha1
kind: ModelRoute
metadata: {{name: {name}}}
spec:
  path: {path}
  routes:
  - destination: {{modelServerRef: {{name: s0}}}}
    weight: {weight}
  - destination: {{modelServerRef: {{name: s2}}}}
    weight: {100 - weight}
"""


def world(weight_of_r1: int) -> World:
    text = "\n---\n".join([SERVERS, route_doc("r1", "/v1/models/s0", weight_of_r1), route_doc("r2", "/v1/models/s2", 50)])
    objects, errors = load_text(text, "test.yaml")
    assert not errors
    return World(objects=tuple(objects))


def test_editing_one_model_route_rebuilds_only_its_routes() -> None:
    translator = Translator()
    before = engine.compile(world(80), Target(), translator=translator)
    after = engine.compile(world(60), Target(), translator=translator)
    stats = translator.last_stats
    assert stats.misses["route"] == 1, stats  # r1's single group; every other route reused
    assert stats.hits["route"] >= 7 and not stats.misses["backend"]
    changed = {
        (t, n) for t, by_name in after.resources.items() for n, r in by_name.items() if before.resources[t][n].version != r.version
    }
    table = table_name(after.resources, "listener/8080")
    assert changed == {(ROUTE, table)}  # s0's port; the 8081 listener is untouched
    assert ObjectKey("ModelRoute", "default", "r1") in after.owners[(ROUTE, table)]


def test_translate_errors_mark_their_owner_not_accepted() -> None:
    owner = ObjectKey("ModelRoute", "default", "r")
    other = ObjectKey("ModelServer", "default", "s")
    statuses = {
        owner: ObjectStatus("Active", (ConditionView("Accepted", "True", "Accepted"), ConditionView("Shadowed", "False", "NotShadowed"))),
        other: ObjectStatus("Ready", (ConditionView("Accepted", "True", "Accepted"),)),
    }
    merged = engine.with_translate_errors(statuses, (TranslateError(owner, "route x: JWT provider p: inline JWKS has no keys"),))
    accepted = {c.type: c for c in merged[owner].conditions}["Accepted"]
    assert (accepted.status, accepted.reason) == ("False", "ValidationFailed")
    assert "no keys" in accepted.message
    assert {c.type for c in merged[owner].conditions} == {"Accepted", "Shadowed"}
    assert merged[other] == statuses[other]
