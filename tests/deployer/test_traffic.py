"""Stable/canary split and shadow mirroring decisions."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from services.deployer.domain.traffic import TrafficPolicy, TrafficSplitter
from shared.core.errors import InvalidParameter


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_twenty_percent_canary_gets_twenty_percent_of_a_thousand_requests(seed):
    splitter = TrafficSplitter(TrafficPolicy(canary_percent=20), rng=random.Random(seed))

    targets = Counter(splitter.choose_target() for _ in range(1000))

    assert 160 <= targets["canary"] <= 240
    assert targets["stable"] == 1000 - targets["canary"]


@pytest.mark.parametrize(("percent", "expected"), [(0, "stable"), (100, "canary")])
def test_zero_and_hundred_percent_are_absolute(percent, expected):
    splitter = TrafficSplitter(TrafficPolicy(canary_percent=percent), rng=random.Random(9))

    assert {splitter.choose_target() for _ in range(500)} == {expected}


def test_shadow_mirroring_is_independent_of_the_split():
    splitter = TrafficSplitter(TrafficPolicy(canary_percent=50, shadow_percent=30), rng=random.Random(5))

    routes = [splitter.route() for _ in range(2000)]
    mirrored_canary = sum(r.mirror_to_shadow for r in routes if r.target == "canary")
    mirrored_stable = sum(r.mirror_to_shadow for r in routes if r.target == "stable")

    assert 0.25 <= sum(r.mirror_to_shadow for r in routes) / 2000 <= 0.35
    assert abs(mirrored_canary - mirrored_stable) < 80


def test_no_shadow_means_never_mirror():
    splitter = TrafficSplitter(TrafficPolicy(canary_percent=10))

    assert not any(splitter.route().mirror_to_shadow for _ in range(200))


@pytest.mark.parametrize("policy", [{"canary_percent": 101}, {"canary_percent": -1}, {"shadow_percent": 150}])
def test_percentages_outside_0_to_100_are_rejected(policy):
    with pytest.raises(InvalidParameter):
        TrafficPolicy(**policy)
