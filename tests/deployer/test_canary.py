"""Sliding-window stats, the auto-rollback decision and shadow-diff accounting."""

from __future__ import annotations

import numpy as np
import pytest

from services.deployer.domain.canary import (
    CanaryThresholds,
    ShadowDiffStats,
    SlidingWindowStats,
    WindowSnapshot,
    judge_canary,
)
from shared.core.errors import InvalidParameter


class FakeClock:
    """Time we move by hand, so window expiry is tested without sleeping."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_window_counts_errors_and_computes_p95_with_numpy():
    stats = SlidingWindowStats(max_requests=1000)
    latencies = list(range(1, 101))
    for latency in latencies:
        stats.record(float(latency), error=latency % 10 == 0)

    snapshot = stats.snapshot()

    assert snapshot.request_count == 100
    assert snapshot.error_count == 10
    assert snapshot.error_rate == pytest.approx(0.1)
    assert snapshot.p95_latency_ms == pytest.approx(np.percentile(latencies, 95))


def test_count_window_keeps_only_the_last_n_requests():
    stats = SlidingWindowStats(max_requests=3)
    for latency, error in [(500.0, True), (1.0, False), (2.0, False), (3.0, False)]:
        stats.record(latency, error=error)

    snapshot = stats.snapshot()

    assert (snapshot.request_count, snapshot.error_count) == (3, 0)
    assert snapshot.p95_latency_ms < 500


def test_time_window_forgets_old_requests():
    clock = FakeClock()
    stats = SlidingWindowStats(window_seconds=60, clock=clock)
    stats.record(900.0, error=True)
    clock.now += 30
    stats.record(10.0, error=False)

    assert stats.snapshot().request_count == 2
    clock.now += 31
    assert stats.snapshot() == WindowSnapshot(request_count=1, error_count=0, p95_latency_ms=10.0)
    clock.now += 60
    assert stats.snapshot() == WindowSnapshot(request_count=0, error_count=0, p95_latency_ms=None)


def test_a_window_needs_a_bound():
    with pytest.raises(InvalidParameter):
        SlidingWindowStats()


THRESHOLDS = CanaryThresholds(max_error_rate=0.05, max_p95_latency_ms=200.0, min_requests=50)


def test_too_few_requests_are_not_judged_even_if_all_failed():
    verdict = judge_canary(WindowSnapshot(request_count=49, error_count=49, p95_latency_ms=5000), THRESHOLDS)

    assert verdict.decision == "insufficient_data"
    assert not verdict.should_roll_back


def test_healthy_canary_is_kept():
    verdict = judge_canary(WindowSnapshot(request_count=200, error_count=10, p95_latency_ms=200.0), THRESHOLDS)

    assert verdict.decision == "healthy"
    assert verdict.reasons == ()


def test_error_rate_over_threshold_rolls_back_with_the_numbers():
    verdict = judge_canary(WindowSnapshot(request_count=200, error_count=11, p95_latency_ms=50.0), THRESHOLDS)

    assert verdict.should_roll_back
    assert verdict.reasons == ("error rate 5.5% exceeds 5.0% (11/200 requests)",)


def test_latency_and_errors_both_reported():
    verdict = judge_canary(WindowSnapshot(request_count=100, error_count=50, p95_latency_ms=350.0), THRESHOLDS)

    assert verdict.should_roll_back
    assert len(verdict.reasons) == 2
    assert "p95 latency 350.0 ms exceeds 200 ms" in verdict.reasons[1]


def test_latency_is_not_judged_without_a_latency_threshold():
    thresholds = CanaryThresholds(max_error_rate=0.5, max_p95_latency_ms=None, min_requests=1)

    verdict = judge_canary(WindowSnapshot(request_count=10, error_count=0, p95_latency_ms=1e6), thresholds)

    assert verdict.decision == "healthy"


def test_window_feeds_the_decision():
    stats = SlidingWindowStats(max_requests=100)
    for index in range(100):
        stats.record(20.0, error=index < 8)

    assert judge_canary(stats.snapshot(), THRESHOLDS).should_roll_back


def test_shadow_diff_exact_matches_and_mean_absolute_difference():
    diffs = ShadowDiffStats()
    diffs.record([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])
    diffs.record([1.0, 2.0, 3.0], [1.5, 2.0, 2.0])
    diffs.record([[0, 1]], [[0, 1]])

    snapshot = diffs.snapshot()

    assert snapshot.compared_count == 3
    assert snapshot.exact_match_rate == pytest.approx(2 / 3)
    assert snapshot.numeric_value_count == 8
    assert snapshot.mean_abs_diff == pytest.approx(1.5 / 8)
    assert snapshot.max_abs_diff == pytest.approx(1.0)


def test_shadow_diff_non_numeric_and_mismatched_outputs():
    diffs = ShadowDiffStats()
    diffs.record(["cat", "dog"], ["cat", "dog"])
    diffs.record(["cat", "dog"], ["cat", "cow"])
    diffs.record([1, 2], [1, 2, 3])
    diffs.record([[1], [2, 3]], [[1], [2, 3]])

    snapshot = diffs.snapshot()

    assert snapshot.compared_count == 4
    assert snapshot.exact_match_count == 2
    assert snapshot.mean_abs_diff is None
    assert ShadowDiffStats().snapshot().exact_match_rate is None
