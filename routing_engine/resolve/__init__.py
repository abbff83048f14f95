"""Manifests → what to serve: references followed, conflicts decided, conditions per
object, and the IR `translate` compiles to Envoy. See `pipeline` for the phases and each
module's docstring for the rules it decides."""

from routing_engine.resolve.pipeline import Resolution, resolve

__all__ = ["Resolution", "resolve"]
