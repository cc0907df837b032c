"""The shared rollout state on both stores (Redis, and the database for installations without it): counts of
several processes add up, windows are read over the same seconds for canary and stable, shadow sums and maxima."""

from __future__ import annotations

import uuid

import pytest

from services.deployer.domain.canary import ShadowDiffStats
from services.deployer.domain.rollout_state import (
    TRAFFIC_TTL_S,
    DatabaseCounterStore,
    PendingCounts,
    RedisCounterStore,
    WindowSpec,
    percentile,
    read_windows,
    shadow_increments,
    shadow_key,
    shadow_snapshot,
)
from tests.conftest import REDIS_URL


@pytest.fixture(params=["redis", "database"])
def store(request, db_session):
    if request.param == "redis":
        return RedisCounterStore(REDIS_URL, f"tessera-test-{uuid.uuid4().hex}:")
    return DatabaseCounterStore(db_session.info["tx_db"].session_scope)


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def share(store, counts: PendingCounts) -> None:
    traffic = counts.drain()
    store.add(traffic, {}, dict.fromkeys(traffic, TRAFFIC_TTL_S))


NOW = 1_900_000_000.0
DEPLOYMENT, STABLE, CANARY = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()


def test_the_counts_of_two_processes_make_one_window(store):
    clock = Clock(NOW - 5)
    first, second = PendingCounts(clock), PendingCounts(clock)
    for index in range(30):
        first.record(DEPLOYMENT, CANARY, 4.0, "error" if index % 3 == 0 else "ok")
        second.record(DEPLOYMENT, CANARY, 40.0, "ok")
        first.record(DEPLOYMENT, STABLE, 4.0, "ok")
        # Bad input: the request's fault, counted against no version.
        second.record(DEPLOYMENT, CANARY, 1.0, "rejected")
    share(store, first)
    share(store, second)

    canary, stable = read_windows(store, DEPLOYMENT, CANARY, STABLE, WindowSpec(60, None), NOW)

    assert (canary.request_count, canary.error_count) == (60, 10)
    assert (stable.request_count, stable.error_count) == (30, 0)
    # Half the canary's requests took 40 ms: its p95 is in the 30-50 ms bucket, the stable's in 3-5 ms.
    assert 30 < canary.p95_latency_ms <= 50 and 3 < stable.p95_latency_ms <= 5


def test_a_request_count_window_keeps_the_newest_seconds_for_both_versions(store):
    clock = Clock(NOW - 30)
    counts = PendingCounts(clock)
    for _ in range(50):  # old and failing
        counts.record(DEPLOYMENT, CANARY, 5.0, "error")
        counts.record(DEPLOYMENT, STABLE, 5.0, "error")
    clock.now = NOW - 2
    for _ in range(50):
        counts.record(DEPLOYMENT, CANARY, 5.0, "ok")
        counts.record(DEPLOYMENT, STABLE, 5.0, "ok")
    share(store, counts)

    canary, stable = read_windows(store, DEPLOYMENT, CANARY, STABLE, WindowSpec(60, 50), NOW)
    since_start, _ = read_windows(store, DEPLOYMENT, CANARY, STABLE, WindowSpec(60, None, since=NOW - 10), NOW)
    everything, _ = read_windows(store, DEPLOYMENT, CANARY, None, WindowSpec(60, None), NOW)

    assert (canary.request_count, canary.error_count, stable.error_count) == (50, 0, 0)
    assert (since_start.request_count, since_start.error_count) == (50, 0)
    assert (everything.request_count, everything.error_count) == (100, 50)


def test_shadow_sums_add_up_and_the_maximum_is_kept(store):
    key = shadow_key(DEPLOYMENT, CANARY)
    for stable, shadow in (([1.0, 2.0], [1.0, 2.5]), ([1.0, 2.0], [3.0, 2.0]), ([1.0], [1.0])):
        stats = ShadowDiffStats()
        stats.record(stable, shadow)
        increments, maxima = shadow_increments(stats.snapshot(), stats.abs_diff_sum)
        store.add({key: increments}, {key: maxima} if maxima else {}, {key: 60})

    snapshot = shadow_snapshot(store.read([key])[key])

    assert (snapshot.compared_count, snapshot.exact_match_count, snapshot.numeric_value_count) == (3, 1, 5)
    assert snapshot.mean_abs_diff == pytest.approx(2.5 / 5)
    assert snapshot.max_abs_diff == pytest.approx(2.0)


def test_percentile_interpolates_within_a_bucket():
    assert percentile([0] * 22, 0.95) is None
    # 100 requests all in the (1, 2] ms bucket: the p95 is 95 % of the way through it.
    assert percentile([0, 100] + [0] * 20, 0.95) == pytest.approx(1.95)
