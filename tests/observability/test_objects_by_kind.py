"""`modelroute_objects{kind}` is counted when scraped, from the objects the control loop
was last handed: every kind the world has, a kind whose last object went away at 0."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from modelroute.control_loop import ControlLoop
from modelroute.metrics import ControlPlaneMetrics
from modelroute.targets import Placement
from routing_engine.api.resources import ModelInfer, ModelServer, Resource


def infer(name: str) -> ModelInfer:
    return ModelInfer.model_validate({"apiVersion": "workload.matrixinfer.ai/v1alpha1", "kind": "ModelInfer",
                                      "metadata": {"name": name}, "spec": {"modelRef": {"name": "m"}}})


def server(name: str) -> ModelServer:
    return ModelServer.model_validate({"apiVersion": "networking.matrixinfer.ai/v1alpha1", "kind": "ModelServer",
                                       "metadata": {"name": name},
                                       "spec": {"modelInferRef": {"name": name}, "service": {"port": 8080},
                                                "routing": {"path": f"/v1/models/{name}"}}})


def gauge(registry: CollectorRegistry) -> dict[str, float]:
    text = generate_latest(registry).decode()
    return {line.split('"')[1]: float(line.split()[-1]) for line in text.splitlines()
            if line.startswith("modelroute_objects{")}


async def test_objects_are_counted_by_kind_when_scraped() -> None:
    registry = CollectorRegistry()
    loop = ControlLoop(placement=Placement(), metrics=ControlPlaneMetrics(registry))
    try:
        assert gauge(registry) == {}
        world: list[Resource] = [infer("a"), infer("b"), server("a")]
        loop.set_objects(world)
        assert gauge(registry) == {"ModelInfer": 2.0, "ModelServer": 1.0}
        loop.set_objects([infer("a")])
        assert gauge(registry) == {"ModelInfer": 1.0, "ModelServer": 0.0}
        loop.set_objects([])
        assert gauge(registry) == {"ModelInfer": 0.0, "ModelServer": 0.0}
    finally:
        await loop.close()
