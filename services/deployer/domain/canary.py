"""Judging a canary: sliding-window request stats per version, the auto-rollback decision, shadow diffs."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from shared.core.errors import InvalidParameter


@dataclass(frozen=True)
class WindowSnapshot:
    request_count: int
    error_count: int
    p95_latency_ms: float | None

    @property
    def error_rate(self) -> float:
        return self.error_count / self.request_count if self.request_count else 0.0


class SlidingWindowStats:
    """Requests of one version over the last `window_seconds` and/or the last `max_requests` requests.

    Kept in memory by whoever sees the traffic (the gateway); one instance per version.
    """

    def __init__(
        self,
        *,
        window_seconds: float | None = None,
        max_requests: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if window_seconds is None and max_requests is None:
            raise InvalidParameter("a window needs window_seconds, max_requests or both")
        self.window_seconds = window_seconds
        self.clock = clock
        # (timestamp, latency_ms, is_error); maxlen does the count-based eviction for free.
        self._samples: deque[tuple[float, float, bool]] = deque(maxlen=max_requests)

    def record(self, latency_ms: float, *, error: bool) -> None:
        self._samples.append((self.clock(), latency_ms, error))
        self._evict_expired()

    def snapshot(self) -> WindowSnapshot:
        self._evict_expired()
        if not self._samples:
            return WindowSnapshot(request_count=0, error_count=0, p95_latency_ms=None)
        latencies = np.fromiter((sample[1] for sample in self._samples), dtype=np.float64)
        return WindowSnapshot(
            request_count=len(self._samples),
            error_count=sum(1 for sample in self._samples if sample[2]),
            p95_latency_ms=float(np.percentile(latencies, 95)),
        )

    def _evict_expired(self) -> None:
        if self.window_seconds is None:
            return
        horizon = self.clock() - self.window_seconds
        while self._samples and self._samples[0][0] < horizon:
            self._samples.popleft()


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
    max_error_rate: float = 0.05
    max_p95_latency_ms: float | None = None
    min_requests: int = 50


@dataclass(frozen=True)
class CanaryVerdict:
    decision: Literal["rollback", "healthy", "insufficient_data"]
    reasons: tuple[str, ...] = ()

    @property
    def should_roll_back(self) -> bool:
        return self.decision == "rollback"


def judge_canary(canary: WindowSnapshot, thresholds: CanaryThresholds) -> CanaryVerdict:
    """Roll back when the canary breaches any threshold, but only once it has seen enough requests to judge."""
    if canary.request_count < thresholds.min_requests:
        return CanaryVerdict(
            "insufficient_data", (f"{canary.request_count} of {thresholds.min_requests} requests needed",)
        )
    reasons = []
    if canary.error_rate > thresholds.max_error_rate:
        reasons.append(
            f"error rate {canary.error_rate:.1%} exceeds {thresholds.max_error_rate:.1%} "
            f"({canary.error_count}/{canary.request_count} requests)"
        )
    if (
        thresholds.max_p95_latency_ms is not None
        and canary.p95_latency_ms is not None
        and canary.p95_latency_ms > thresholds.max_p95_latency_ms
    ):
        reasons.append(f"p95 latency {canary.p95_latency_ms:.1f} ms exceeds {thresholds.max_p95_latency_ms:g} ms")
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
