"""Rollout state every gateway process shares: request, error and latency counts per deployment, version and
second, and shadow comparison sums — in Redis when the platform has one, else in the database.

A gateway process tallies its traffic in memory (the request path does no I/O) and adds the tally to the shared
store every flush, a fraction of a second; a canary is judged on the sum of every process's counts over its
window, read back from the store. A restarted process forgets nothing but the tally of its last fraction of
a second. Decisions (an automatic rollback) live in the database, where one conditional update makes sure
only one process carries a decision out (`deployments.auto_rollback`).
"""

from __future__ import annotations

import bisect
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal, Protocol

from sqlalchemy import case, delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from services.deployer.domain.canary import ShadowDiffSnapshot, WindowSnapshot
from shared.db.base import utcnow
from shared.db.models import RolloutCounter

# Upper bounds (ms) of the latency histogram kept per version and second; p95 is read from it. The last
# bucket is open-ended.
LATENCY_BOUNDS_MS = (1, 2, 3, 5, 7.5, 10, 15, 20, 30, 50, 75, 100, 150, 200, 300, 500, 750, 1000, 2000, 5000, 10000)
# How far back a window without a time bound (only `max_requests`) looks.
MAX_LOOKBACK_S = 600
TRAFFIC_TTL_S = MAX_LOOKBACK_S + 60
# Shadow comparisons are kept while the shadow runs, and a week after its last comparison.
SHADOW_TTL_S = 7 * 24 * 3600

Outcome = Literal["ok", "error", "rejected"]
Counters = dict[str, dict[str, float]]


class CounterStore(Protocol):
    """Hashes of numeric fields under string keys, shared by every gateway process."""

    def add(
        self,
        increments: Mapping[str, Mapping[str, float]],
        maxima: Mapping[str, Mapping[str, float]],
        ttl_s: Mapping[str, int],
    ) -> None:
        """Add `increments` to fields, raise fields to `maxima`; each key lives `ttl_s[key]` after its last write."""

    def read(self, keys: Sequence[str]) -> Counters:
        """The fields of each key that exists."""


# --- keys -------------------------------------------------------------------------------------------------


def traffic_key(deployment_id: uuid.UUID, version_id: uuid.UUID, second: int, phase: int = 0) -> str:
    """`phase`: a rollout plan's step, so each step is judged on its own requests even within one second."""
    return f"traffic:{deployment_id.hex}:{version_id.hex}:{phase}:{second}"


def shadow_key(deployment_id: uuid.UUID, version_id: uuid.UUID) -> str:
    return f"shadow:{deployment_id.hex}:{version_id.hex}"


# --- what one process tallies between flushes --------------------------------------------------------------


class PendingCounts:
    """Requests per deployment, version and second since the last flush: a few dict updates per request."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._pending: Counters = defaultdict(lambda: defaultdict(float))

    def record(
        self, deployment_id: uuid.UUID, version_id: uuid.UUID, latency_ms: float, outcome: Outcome, phase: int = 0
    ) -> None:
        fields = self._pending[traffic_key(deployment_id, version_id, int(self.clock()), phase)]
        if outcome == "rejected":
            # The request's own fault (4xx): not held against the version, nor part of its latency.
            fields["rejected"] += 1
            return
        fields["requests"] += 1
        if outcome == "error":
            fields["errors"] += 1
        fields[f"l{bisect.bisect_left(LATENCY_BOUNDS_MS, latency_ms)}"] += 1

    def drain(self) -> Counters:
        pending, self._pending = self._pending, defaultdict(lambda: defaultdict(float))
        return {key: dict(fields) for key, fields in pending.items()}


def shadow_increments(snapshot: ShadowDiffSnapshot, abs_diff_sum: float) -> tuple[dict[str, float], dict[str, float]]:
    """One flush's comparisons as counter increments and maxima."""
    increments = {
        "compared": snapshot.compared_count,
        "exact": snapshot.exact_match_count,
        "numeric": snapshot.numeric_value_count,
        "abs_sum": abs_diff_sum,
    }
    maxima = {"max_abs": snapshot.max_abs_diff} if snapshot.max_abs_diff is not None else {}
    return increments, maxima


def shadow_snapshot(fields: Mapping[str, float]) -> ShadowDiffSnapshot:
    numeric = int(fields.get("numeric", 0))
    return ShadowDiffSnapshot(
        compared_count=int(fields.get("compared", 0)),
        exact_match_count=int(fields.get("exact", 0)),
        numeric_value_count=numeric,
        mean_abs_diff=fields.get("abs_sum", 0.0) / numeric if numeric else None,
        max_abs_diff=fields.get("max_abs"),
    )


# --- reading a window ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WindowSpec:
    seconds: float | None
    max_requests: int | None
    # Nothing older counts: the canary's server started then (a version canaried again starts afresh), or
    # the plan's step began.
    since: float | None = None
    # The plan's step the requests were served in (0 without a plan).
    phase: int = 0


def read_windows(
    store: CounterStore,
    deployment_id: uuid.UUID,
    canary_id: uuid.UUID,
    stable_id: uuid.UUID | None,
    spec: WindowSpec,
    now: float,
) -> tuple[WindowSnapshot, WindowSnapshot | None]:
    """The canary's window and the stable version's over the very same seconds (the same traffic)."""
    end = int(now)
    start = end - int(min(spec.seconds or MAX_LOOKBACK_S, MAX_LOOKBACK_S))
    if spec.since is not None:
        start = max(start, int(spec.since))
    seconds = list(range(end, start - 1, -1))  # newest first: a request-count window keeps the newest
    versions = [canary_id] + ([stable_id] if stable_id is not None else [])
    keys = [traffic_key(deployment_id, version, second, spec.phase) for version in versions for second in seconds]
    stored = store.read(keys)
    per_second = {
        version: [stored.get(traffic_key(deployment_id, version, s, spec.phase), {}) for s in seconds]
        for version in versions
    }
    if spec.max_requests is not None:
        taken, count = 0, 0
        for fields in per_second[canary_id]:
            if count >= spec.max_requests:
                break
            count += int(fields.get("requests", 0))
            taken += 1
        per_second = {version: buckets[:taken] for version, buckets in per_second.items()}
    canary = _snapshot(per_second[canary_id])
    return canary, (_snapshot(per_second[stable_id]) if stable_id is not None else None)


def _snapshot(buckets: Iterable[Mapping[str, float]]) -> WindowSnapshot:
    requests = errors = 0
    histogram = [0] * (len(LATENCY_BOUNDS_MS) + 1)
    for fields in buckets:
        requests += int(fields.get("requests", 0))
        errors += int(fields.get("errors", 0))
        for index in range(len(histogram)):
            histogram[index] += int(fields.get(f"l{index}", 0))
    return WindowSnapshot(request_count=requests, error_count=errors, p95_latency_ms=percentile(histogram, 0.95))


def percentile(histogram: Sequence[int], quantile: float) -> float | None:
    """The quantile of a LATENCY_BOUNDS_MS histogram, interpolated within its bucket."""
    total = sum(histogram)
    if not total:
        return None
    target, seen = quantile * total, 0
    for index, count in enumerate(histogram):
        if count and seen + count >= target:
            if index >= len(LATENCY_BOUNDS_MS):
                return float(LATENCY_BOUNDS_MS[-1])
            lower = LATENCY_BOUNDS_MS[index - 1] if index else 0.0
            return lower + (LATENCY_BOUNDS_MS[index] - lower) * (target - seen) / count
        seen += count
    return float(LATENCY_BOUNDS_MS[-1])


# --- the stores ----------------------------------------------------------------------------------------------

# Raises a hash field to a value, atomically (Redis has no HMAX).
_RAISE_TO = """
local current = redis.call('HGET', KEYS[1], ARGV[1])
if (not current) or tonumber(current) < tonumber(ARGV[2]) then redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) end
return 0
"""


class RedisCounterStore:
    """Counters as Redis hashes (HINCRBYFLOAT), one pipeline per flush or read."""

    def __init__(self, url: str, key_prefix: str = "") -> None:
        import redis

        self.redis = redis.Redis.from_url(url)
        self.prefix = f"{key_prefix}tessera:rollout:"
        self._raise_to = self.redis.register_script(_RAISE_TO)

    def add(
        self,
        increments: Mapping[str, Mapping[str, float]],
        maxima: Mapping[str, Mapping[str, float]],
        ttl_s: Mapping[str, int],
    ) -> None:
        pipe = self.redis.pipeline(transaction=False)
        for key, fields in increments.items():
            for name, value in fields.items():
                # Float increments throughout: a field (a sum of differences) may hold a fraction.
                pipe.hincrbyfloat(self.prefix + key, name, value)
        for key, fields in maxima.items():
            for name, value in fields.items():
                self._raise_to(keys=[self.prefix + key], args=[name, value], client=pipe)
        for key in {*increments, *maxima}:
            pipe.expire(self.prefix + key, ttl_s[key])
        pipe.execute()

    def read(self, keys: Sequence[str]) -> Counters:
        pipe = self.redis.pipeline(transaction=False)
        for key in keys:
            pipe.hgetall(self.prefix + key)
        return {
            key: {name.decode(): float(value) for name, value in fields.items()}
            for key, fields in zip(keys, pipe.execute(), strict=True)
            if fields
        }


class DatabaseCounterStore:
    """The same counters as rows of `rollout_counters` (one upsert per flush), for installations without
    Redis: `tessera up`'s SQLite, or PostgreSQL alone. Expired rows are deleted now and then."""

    PRUNE_EVERY_S = 60.0

    def __init__(self, session_scope: Callable[[], AbstractContextManager[Session]]) -> None:
        self.session_scope = session_scope
        self._pruned_at = 0.0

    def add(
        self,
        increments: Mapping[str, Mapping[str, float]],
        maxima: Mapping[str, Mapping[str, float]],
        ttl_s: Mapping[str, int],
    ) -> None:
        now = utcnow()

        def rows(counters: Mapping[str, Mapping[str, float]]) -> list[dict]:
            # Sorted, so concurrent writers lock rows in one order and never deadlock.
            return sorted(
                (
                    {
                        "key": key,
                        "field": name,
                        "value": float(value),
                        "expires_at": now + timedelta(seconds=ttl_s[key]),
                    }
                    for key, fields in counters.items()
                    for name, value in fields.items()
                ),
                key=lambda row: (row["key"], row["field"]),
            )

        with self.session_scope() as session:
            insert = _dialect_insert(session)
            for counters, combine in ((increments, "add"), (maxima, "max")):
                values = rows(counters)
                if not values:
                    continue
                statement = insert(RolloutCounter).values(values)
                table = RolloutCounter.__table__.c
                new_value = (
                    table.value + statement.excluded.value
                    if combine == "add"
                    else case((statement.excluded.value > table.value, statement.excluded.value), else_=table.value)
                )
                session.execute(
                    statement.on_conflict_do_update(
                        index_elements=["key", "field"],
                        set_={"value": new_value, "expires_at": statement.excluded.expires_at},
                    )
                )
            if time.monotonic() - self._pruned_at > self.PRUNE_EVERY_S:
                self._pruned_at = time.monotonic()
                session.execute(delete(RolloutCounter).where(RolloutCounter.expires_at < now))

    def read(self, keys: Sequence[str]) -> Counters:
        counters: Counters = defaultdict(dict)
        with self.session_scope() as session:
            for start in range(0, len(keys), 500):
                rows = session.execute(
                    select(RolloutCounter.key, RolloutCounter.field, RolloutCounter.value).where(
                        RolloutCounter.key.in_(keys[start : start + 500]), RolloutCounter.expires_at > utcnow()
                    )
                )
                for key, name, value in rows:
                    counters[key][name] = value
        return dict(counters)


def _dialect_insert(session: Session) -> Callable[[Any], Any]:
    """The dialect's INSERT, which has ON CONFLICT (both PostgreSQL's and SQLite's spell it the same)."""
    if session.get_bind().dialect.name == "postgresql":
        return postgresql.insert
    return sqlite.insert
