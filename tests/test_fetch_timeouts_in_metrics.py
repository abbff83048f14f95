"""The fetch-timeout check on an Envoy's Prometheus text (`tests.support`) finds a fired
timeout, and refuses text that carries no such counters (a check that found none there
would pass whatever happened)."""

from __future__ import annotations

import pytest

from tests.support import fetch_timeouts_in_metrics

TEXT = """# TYPE envoy_cluster_manager_cds_init_fetch_timeout counter
envoy_cluster_manager_cds_init_fetch_timeout{} 0
envoy_listener_manager_lds_init_fetch_timeout{} 1
"""


def test_a_fired_fetch_timeout_is_found_and_silent_ones_are_not() -> None:
    assert fetch_timeouts_in_metrics(TEXT) == {"envoy_listener_manager_lds_init_fetch_timeout{}": 1.0}
    assert fetch_timeouts_in_metrics(TEXT.replace("{} 1", "{} 0")) == {}


def test_text_without_the_counters_is_refused() -> None:
    with pytest.raises(AssertionError, match="no init_fetch_timeout counters"):
        fetch_timeouts_in_metrics("envoy_server_live{} 1\n")
