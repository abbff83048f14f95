"""End-to-end suite settings.

The replicas are forked from this process while gRPC threads (the xDS server) run. As
`modelroute` main() does, gRPC's fork handlers are turned off: with them a child could
abort in gRPC's poller between fork and exec (seen as a replica exiting with -6).
This must happen before gRPC is first initialized, hence at conftest import.
"""

from __future__ import annotations

import os

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
