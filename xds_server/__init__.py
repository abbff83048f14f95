"""xDS control plane: snapshot cache + ADS/per-type protocol (SotW and delta) over grpc.aio.

Knows the xDS protocol, not models (never imports `routing_engine`). Typical wiring:

    plane = await start_control_plane(xds_address="0.0.0.0:18000", on_ack=..., on_nack=...)
    plane.cache.set_snapshot("gateway", Snapshot.build(compiled.resources))
"""

from xds_server.app import ControlPlane, start_control_plane
from xds_server.cache import Snapshot, SnapshotCache, check_consistency
from xds_server.hooks import Hooks, StatusHooks, StreamInfo
from xds_server.types import XdsResource

__all__ = ["ControlPlane", "Hooks", "Snapshot", "SnapshotCache", "StatusHooks", "StreamInfo", "XdsResource",
           "check_consistency", "start_control_plane"]
