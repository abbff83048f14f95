"""Cross-namespace references (SPEC 3.7), one rule for the engine and the controllers.

A reference into another namespace is allowed only if the referenced object itself
carries the annotation `networking.matrixinfer.ai/allow-from` listing the referring
namespace (comma separated, spaces ignored) or `*`. The annotation sits on the referenced
object, not on a Namespace object, because the engine sees only manifests: the owner of
the referenced object grants access, and a test can show it.
"""

from __future__ import annotations

from routing_engine.api.resources import Resource

ALLOW_FROM_ANNOTATION = "networking.matrixinfer.ai/allow-from"


def allows_from(target: Resource, namespace: str) -> bool:
    """May an object in `namespace` refer to `target`? (Same namespace: always.)"""
    if target.metadata.namespace == namespace:
        return True
    allowed = target.metadata.annotations.get(ALLOW_FROM_ANNOTATION, "")
    entries = {entry.strip() for entry in allowed.split(",")}
    return "*" in entries or namespace in entries
