"""The auto-rollback decision (the canary against the stable version) and shadow-diff accounting."""

from __future__ import annotations

import pytest

from services.deployer.domain.canary import CanaryThresholds, ShadowDiffStats, WindowSnapshot, judge_canary

THRESHOLDS = CanaryThresholds(max_error_rate=0.05, max_p95_latency_ms=200.0, min_requests=50)


def test_too_few_requests_are_not_judged_even_if_all_failed():
    verdict = judge_canary(WindowSnapshot(request_count=49, error_count=49, p95_latency_ms=5000), None, THRESHOLDS)

    assert verdict.decision == "insufficient_data"
    assert not verdict.should_roll_back


def test_healthy_canary_is_kept():
    verdict = judge_canary(WindowSnapshot(request_count=200, error_count=10, p95_latency_ms=200.0), None, THRESHOLDS)

    assert verdict.decision == "healthy"
    assert verdict.reasons == ()


def test_error_rate_over_threshold_rolls_back_with_the_numbers():
    verdict = judge_canary(WindowSnapshot(request_count=200, error_count=30, p95_latency_ms=50.0), None, THRESHOLDS)

    assert verdict.should_roll_back
    assert verdict.reasons == ("error rate 15.0% (30/200 requests) exceeds it by more than 5.0%",)


def test_latency_and_errors_both_reported():
    verdict = judge_canary(WindowSnapshot(request_count=100, error_count=50, p95_latency_ms=350.0), None, THRESHOLDS)

    assert verdict.should_roll_back
    assert len(verdict.reasons) == 2
    assert "p95 latency 350.0 ms exceeds 200 ms" in verdict.reasons[1]


def test_latency_is_not_judged_without_a_latency_threshold():
    thresholds = CanaryThresholds(max_error_rate=0.5, max_p95_latency_ms=None, min_requests=1)

    verdict = judge_canary(WindowSnapshot(request_count=10, error_count=0, p95_latency_ms=1e6), None, thresholds)

    assert verdict.decision == "healthy"


def test_errors_the_stable_version_shares_are_not_the_canarys():
    # 1 request in 8 breaks both versions (inputs bad for every model): 12.5 % errors on each side.
    stable = WindowSnapshot(request_count=800, error_count=100, p95_latency_ms=20.0)
    canary = WindowSnapshot(request_count=200, error_count=25, p95_latency_ms=20.0)

    assert judge_canary(canary, stable, THRESHOLDS).decision == "healthy"
    assert judge_canary(canary, None, THRESHOLDS).should_roll_back  # judged alone it would have gone


def test_a_canary_worse_than_stable_on_the_same_traffic_is_rolled_back_with_both_figures():
    stable = WindowSnapshot(request_count=800, error_count=100, p95_latency_ms=20.0)
    canary = WindowSnapshot(request_count=200, error_count=60, p95_latency_ms=20.0)

    verdict = judge_canary(canary, stable, THRESHOLDS)

    assert verdict.reasons == (
        "error rate 30.0% (60/200 requests) against 12.5% for the stable version (100/800) "
        "exceeds it by more than 5.0%",
    )


def test_a_difference_the_split_can_make_by_chance_is_not_a_verdict():
    # 20 % against 10 % on ~120 requests each: within what a random split of shared bad input produces.
    stable = WindowSnapshot(request_count=133, error_count=13, p95_latency_ms=20.0)
    canary = WindowSnapshot(request_count=120, error_count=24, p95_latency_ms=20.0)
    thresholds = CanaryThresholds(max_error_rate=0.1, min_requests=10)

    assert judge_canary(canary, stable, thresholds).decision == "healthy"
    assert judge_canary(WindowSnapshot(10, 10, 5.0), WindowSnapshot(10, 0, 5.0), thresholds).should_roll_back


def test_latency_relative_to_the_stable_version():
    thresholds = CanaryThresholds(max_p95_latency_ratio=1.5, min_requests=10)
    stable = WindowSnapshot(request_count=100, error_count=0, p95_latency_ms=40.0)

    slow = judge_canary(WindowSnapshot(request_count=100, error_count=0, p95_latency_ms=70.0), stable, thresholds)
    fine = judge_canary(WindowSnapshot(request_count=100, error_count=0, p95_latency_ms=55.0), stable, thresholds)

    assert slow.reasons == ("p95 latency 70.0 ms is more than 1.5x the stable version's 40.0 ms",)
    assert fine.decision == "healthy"


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
