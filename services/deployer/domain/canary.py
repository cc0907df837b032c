"""Judging a canary against the stable version on the same traffic, and shadow diffs.

The windows themselves are counted in the shared rollout state (rollout_state.py), so every gateway process
judges the same numbers.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np


@dataclass(frozen=True)
class WindowSnapshot:
    request_count: int
    error_count: int
    p95_latency_ms: float | None

    @property
    def error_rate(self) -> float:
        return self.error_count / self.request_count if self.request_count else 0.0


@dataclass(frozen=True)
class TrafficSnapshot:
    requests: int
    errors: int
    mean_latency_ms: float | None
    p95_latency_ms: float | None


class TrafficTally:
    """Every request one version served in one role since this process started, for people to watch
    (the console's traffic split); the p95 is over the last RECENT requests."""

    RECENT = 1000

    def __init__(self) -> None:
        self.requests = 0
        self.errors = 0
        self.latency_ms_total = 0.0
        self.recent_ms: deque[float] = deque(maxlen=self.RECENT)

    def record(self, latency_ms: float, *, error: bool) -> None:
        self.requests += 1
        self.errors += error
        self.latency_ms_total += latency_ms
        self.recent_ms.append(latency_ms)

    def snapshot(self) -> TrafficSnapshot:
        if not self.requests:
            return TrafficSnapshot(0, 0, None, None)
        p95 = float(np.percentile(np.fromiter(self.recent_ms, dtype=np.float64), 95))
        return TrafficSnapshot(self.requests, self.errors, self.latency_ms_total / self.requests, p95)


@dataclass(frozen=True)
class CanaryThresholds:
    # How far the canary's error rate may exceed the stable version's over the same seconds.
    max_error_rate: float = 0.05
    # A ceiling on the canary's p95, whatever the stable version does.
    max_p95_latency_ms: float | None = None
    # How many times the stable version's p95 the canary's may be.
    max_p95_latency_ratio: float | None = None
    min_requests: int = 50


@dataclass(frozen=True)
class CanaryVerdict:
    decision: Literal["rollback", "healthy", "insufficient_data"]
    reasons: tuple[str, ...] = ()

    @property
    def should_roll_back(self) -> bool:
        return self.decision == "rollback"


# One-sided 99 % normal quantile: how sure the judge must be that the canary's error rate is worse.
_Z_99 = 2.326


def judge_canary(canary: WindowSnapshot, stable: WindowSnapshot | None, thresholds: CanaryThresholds) -> CanaryVerdict:
    """Roll back when the canary does worse than the stable version on the same traffic, once it has seen
    enough requests to judge. Failures the stable version shares (inputs bad for every version) are not the
    canary's: only its error rate above the stable's counts, and only when the window's counts show it with
    99 % confidence (a random split puts more of a shared bad input on one side now and then; judged at every
    flush, a bare difference would roll healthy canaries back). Without a stable window, the stable's rate is 0.
    """
    if canary.request_count < thresholds.min_requests:
        return CanaryVerdict(
            "insufficient_data", (f"{canary.request_count} of {thresholds.min_requests} requests needed",)
        )
    baseline = stable if stable is not None and stable.request_count else None
    stable_rate = baseline.error_rate if baseline is not None else 0.0
    variance = canary.error_rate * (1 - canary.error_rate) / canary.request_count
    if baseline is not None:
        variance += stable_rate * (1 - stable_rate) / baseline.request_count
    reasons = []
    if canary.error_rate - stable_rate - _Z_99 * math.sqrt(variance) > thresholds.max_error_rate:
        against = (
            f" against {stable_rate:.1%} for the stable version ({baseline.error_count}/{baseline.request_count})"
            if baseline is not None
            else ""
        )
        reasons.append(
            f"error rate {canary.error_rate:.1%} ({canary.error_count}/{canary.request_count} requests){against} "
            f"exceeds it by more than {thresholds.max_error_rate:.1%}"
        )
    if (
        thresholds.max_p95_latency_ms is not None
        and canary.p95_latency_ms is not None
        and canary.p95_latency_ms > thresholds.max_p95_latency_ms
    ):
        reasons.append(f"p95 latency {canary.p95_latency_ms:.1f} ms exceeds {thresholds.max_p95_latency_ms:g} ms")
    if (
        thresholds.max_p95_latency_ratio is not None
        and canary.p95_latency_ms is not None
        and baseline is not None
        and baseline.p95_latency_ms
        and canary.p95_latency_ms > thresholds.max_p95_latency_ratio * baseline.p95_latency_ms
    ):
        reasons.append(
            f"p95 latency {canary.p95_latency_ms:.1f} ms is more than {thresholds.max_p95_latency_ratio:g}x "
            f"the stable version's {baseline.p95_latency_ms:.1f} ms"
        )
    return CanaryVerdict("rollback", tuple(reasons)) if reasons else CanaryVerdict("healthy")


@dataclass(frozen=True)
class ShadowDiffSnapshot:
    compared_count: int
    exact_match_count: int
    numeric_value_count: int
    mean_abs_diff: float | None
    max_abs_diff: float | None

    @property
    def exact_match_rate(self) -> float | None:
        return self.exact_match_count / self.compared_count if self.compared_count else None


class ShadowDiffStats:
    """How often, and for numbers how far, the shadow's predictions differ from the stable's.

    Running sums only, so it stays O(1) in memory however long the shadow runs.
    """

    def __init__(self) -> None:
        self._compared = 0
        self._exact_matches = 0
        self._numeric_values = 0
        self._abs_diff_sum = 0.0
        self._max_abs_diff: float | None = None

    def record(self, stable_predictions: Any, shadow_predictions: Any) -> None:
        """Compare one request's two prediction payloads (the `predictions` lists of both responses)."""
        self._compared += 1
        stable, shadow = _as_array(stable_predictions), _as_array(shadow_predictions)
        if stable is None or shadow is None:
            # Ragged payloads (lists of unequal lists) have no elementwise view; equality is all we can say.
            self._exact_matches += int(stable_predictions == shadow_predictions)
            return
        if stable.shape != shadow.shape:
            return
        if stable.dtype.kind in "biuf" and shadow.dtype.kind in "biuf":
            diff = np.abs(stable.astype(np.float64) - shadow.astype(np.float64))
            if diff.size:
                self._numeric_values += diff.size
                self._abs_diff_sum += float(diff.sum())
                largest = float(diff.max())
                self._max_abs_diff = largest if self._max_abs_diff is None else max(self._max_abs_diff, largest)
            self._exact_matches += int(not diff.any())
        else:
            self._exact_matches += int(np.array_equal(stable, shadow))

    @property
    def abs_diff_sum(self) -> float:
        return self._abs_diff_sum

    def snapshot(self) -> ShadowDiffSnapshot:
        return ShadowDiffSnapshot(
            compared_count=self._compared,
            exact_match_count=self._exact_matches,
            numeric_value_count=self._numeric_values,
            mean_abs_diff=self._abs_diff_sum / self._numeric_values if self._numeric_values else None,
            max_abs_diff=self._max_abs_diff,
        )


def _as_array(predictions: Any) -> np.ndarray | None:
    try:
        return np.asarray(predictions)
    except ValueError:
        return None
