"""Thousands of Envoys connecting at once (a control-plane restart, a fleet rollout):
every ADS stream is taken, served and acknowledged (issue #15: gRPC core failed calls
waiting to be taken past 3,000, "Internal error from Core" on the client)."""

from __future__ import annotations

import pytest

from bench import xds_fanout

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("delta", [pytest.param(True, id="delta"), pytest.param(False, id="sotw")])
async def test_3500_ads_streams_opened_at_once_are_all_served_and_acknowledged(delta: bool) -> None:
    # The clients run in a child process (bench/xds_fanout.py): it fails unless every
    # stream received its route table, and `run` waits for every ACK of a change.
    result = await xds_fanout.run(3_500, delta=delta)
    assert result["streams"] == 3_500 and result["all_acked_s"] > 0 and result["ads"] == ("delta" if delta else "sotw")
