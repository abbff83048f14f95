"""Kubernetes quantities and the API server's resource rules (routing_engine.api.quantities):
what it parses, what it compares equal, and which requests and limits it refuses. The
wording of each refusal, with its field path, is checked on whole manifests in
test_rejections.py."""

from __future__ import annotations

from fractions import Fraction

import pytest

from routing_engine.api.quantities import is_extended, parse_quantity, requirements_problem, resource_name_problem


@pytest.mark.parametrize("text, amount", [
    ("1", 1), ("+1", 1), ("-1", -1), ("0", 0), (".5", Fraction(1, 2)), ("5.", 5), ("1.5", Fraction(3, 2)),
    ("500m", Fraction(1, 2)), ("2k", 2000), ("1M", 10**6), ("1E", 10**18), ("3n", Fraction(3, 10**9)),
    ("1Ki", 1024), ("2Gi", 2 * 2**30), ("1Ei", 2**60), ("1.5Gi", 3 * 2**29),
    ("1e3", 1000), ("1E3", 1000), ("1e-3", Fraction(1, 1000)), ("5e+2", 500),
    ("0.1n", Fraction(1, 10**9)),  # rounded up to 1n, as the API server stores it
    ("1.0000000001", Fraction(1_000_000_001, 10**9)),
])
def test_quantities_parse_to_their_exact_amount(text: str, amount: Fraction | int) -> None:
    assert parse_quantity(text) == amount


@pytest.mark.parametrize("text", ["", "abc", "1K", "1kb", "1GB", "1e1.5", "1e", "1.2.3", "--1", "1 Gi", "Gi", "0x10"])
def test_what_is_no_quantity_is_refused(text: str) -> None:
    assert parse_quantity(text) == 'is not a quantity like 1, "500m" or "2Gi"'


def test_absurd_exponents_and_lengths_are_refused_without_computing_them() -> None:
    assert parse_quantity("1e999999999") == "has an exponent beyond ±100"
    assert parse_quantity("1" * 101) == "is longer than 100 characters"
    assert parse_quantity("1e100") == 10**100


@pytest.mark.parametrize("name, extended", [
    ("cpu", False), ("memory", False), ("hugepages-2Mi", False), ("kubernetes.io/foo", False),
    ("nvidia.com/gpu", True), ("example.com/dongle", True), ("requests.example.com/x", None),
])
def test_extended_resources_are_the_prefixed_names_outside_kubernetes_io(name: str, extended: bool | None) -> None:
    assert is_extended(name) is extended


@pytest.mark.parametrize("name", ["cpu", "memory", "ephemeral-storage", "hugepages-1Gi", "nvidia.com/gpu",
                                  "amd.com/gpu", "kubernetes.io/batteries"])
def test_container_resource_names(name: str) -> None:
    assert resource_name_problem(name) is None


@pytest.mark.parametrize("name", ["gpu", "memroy", "pods", "Nvidia.com/gpu", "nvidia.com/", "/gpu", "a/b/c",
                                  "requests.nvidia.com/gpu", "nvidia.com/-gpu", "x" * 64 + ".com/gpu/"])
def test_names_a_container_may_not_ask_for(name: str) -> None:
    assert resource_name_problem(name) is not None


@pytest.mark.parametrize("requests, limits", [
    ({}, {}),
    ({"cpu": "500m", "memory": "1Gi"}, {"cpu": "0.5", "memory": "1024Mi"}),  # equal amounts, other spellings
    ({"cpu": 1}, {}),  # cpu and memory may be overcommitted: no limit needed
    ({}, {"nvidia.com/gpu": 2}),  # a limit alone is also the request
    ({"nvidia.com/gpu": 1}, {}),  # a request alone becomes the limit too (workloads.merged_resources)
    ({"nvidia.com/gpu": "1"}, {"nvidia.com/gpu": "1000m"}),
    ({"hugepages-2Mi": "1Gi", "memory": "1Gi"}, {"hugepages-2Mi": "1Gi"}),
])
def test_what_the_api_server_accepts(requests: dict[str, str | int], limits: dict[str, str | int]) -> None:
    assert requirements_problem(requests, limits) is None


@pytest.mark.parametrize("requests, limits, where, rule", [
    ({}, {"nvidia.com/gpu": "1.5"}, ("limits", "nvidia.com/gpu"), "must be a whole number"),
    ({"nvidia.com/gpu": "1"}, {"nvidia.com/gpu": "2"}, ("requests", "nvidia.com/gpu"), "must equal the limit"),
    ({"hugepages-2Mi": "1Gi", "cpu": 1}, {}, ("requests", "hugepages-2Mi"), "needs a limit"),
    ({"memory": "2Gi"}, {"memory": "1Gi"}, ("requests", "memory"), "must not exceed the limit"),
    ({"cpu": "1.0000000001"}, {"cpu": 1}, ("requests", "cpu"), "must not exceed the limit"),
    ({"cpu": "-1"}, {}, ("requests", "cpu"), "must not be negative"),
    ({}, {"hugepages-2Mi": "1Gi"}, (), "hugepages need cpu or memory"),
    ({}, {"gpu": 1}, ("limits", "gpu"), "is not a container resource"),
])
def test_what_the_api_server_refuses(requests: dict[str, str | int], limits: dict[str, str | int],
                                     where: tuple[str, ...], rule: str) -> None:
    problem = requirements_problem(requests, limits)
    assert problem is not None and problem[0] == where and rule in problem[1]
