"""Suite-wide pytest options and settings.

Tests fork child processes (Envoy, replicas) while gRPC threads run; gRPC's fork handlers
can abort such a child (SIGABRT) and are not needed for fork+exec, so they are off for the
whole session, set before any test module imports gRPC (as `modelroute` itself does).
"""

from __future__ import annotations

import os

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

import pytest  # noqa: E402


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-golden",
        action="store_true",
        default=False,
        help="rewrite tests/golden/*/ expected outputs from the current engine (and remove stale ones)",
    )
