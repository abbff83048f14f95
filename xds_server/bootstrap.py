"""Render the Envoy bootstrap templates in `envoy/` (gateway and sidecar).

No model knowledge here: role, identity, where the control plane is, and free-form node
metadata (the engine reads `role` and `scope` from it to pick the node group).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from string import Template
from typing import Any, Literal

import yaml

TEMPLATES = Path(__file__).resolve().parents[1] / "envoy"

Role = Literal["gateway", "sidecar"]


def render(role: Role, *, node_id: str, cluster: str, xds_port: int, admin_port: int,
           xds_host: str = "127.0.0.1", delta: bool = False,
           metadata: Mapping[str, Any] | None = None) -> str:
    """Bootstrap YAML for one Envoy. `delta` selects DELTA_GRPC (incremental) ADS.

    Node metadata always carries `role`; `metadata` adds to it (e.g. `scope` for a
    sidecar limited to some namespaces).
    """
    if role not in ("gateway", "sidecar"):
        raise ValueError(f"bootstrap role must be gateway or sidecar, not {role!r}")
    template = Template((TEMPLATES / f"{role}.yaml").read_text())
    node_metadata = {"role": role, **(metadata or {})}
    return template.substitute(
        node_id=json.dumps(node_id), node_cluster=json.dumps(cluster),
        metadata=json.dumps(node_metadata, sort_keys=True), admin_port=int(admin_port),
        api_type="DELTA_GRPC" if delta else "GRPC", xds_host=json.dumps(xds_host), xds_port=int(xds_port))


def render_dict(role: Role, **kwargs: Any) -> dict[str, Any]:
    return yaml.safe_load(render(role, **kwargs))
