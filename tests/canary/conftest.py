"""Canary suite settings: replicas are forked while gRPC threads run, so gRPC's fork
handlers are turned off before gRPC is first initialized (as in tests/e2e)."""

from __future__ import annotations

import os

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
