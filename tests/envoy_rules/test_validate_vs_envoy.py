"""Issue #12: what `validate` accepts, Envoy accepts. Hypothesis draws manifests full of
hostile regexes, globs, URIs, PEMs and JWKS (tests/envoy_rules/hostile.py); each set
either fails validate with an error naming its object and field, or the real Envoy
accepts its compiled config. 15 batches of 20 sets here (300 sets, one Envoy run per
batch); `python -m bench.fuzz_validate` runs thousands."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.envoy_rules.check import check_batch
from tests.envoy_rules.hostile import manifest_set

BATCH = 20


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Attribute's length:UserWarning")  # cryptography reading an empty CN, refused by validate
@settings(max_examples=15, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.tuples(*(manifest_set(i) for i in range(BATCH))))
def test_validate_refuses_with_a_field_path_or_envoy_accepts(sets) -> None:  # type: ignore[no-untyped-def]
    outcome = check_batch(sets)
    assert not outcome.problems, "\n\n".join(outcome.problems)
