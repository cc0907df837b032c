"""What a training loop writes to its run — metric points, params, tags — each as one PostgreSQL statement.

For the hot routes (shared.core.hot_routes): each function takes an autocommit psycopg connection, so one
statement is one transaction, and returns False, having written nothing, when the run is missing or
deleted; the caller then leaves the request to the usual path, which answers with MLflow's error. The
statements are fixed texts, so psycopg prepares them on each connection after a few runs.

A run's project never changes (a run stays in its experiment, an experiment in its project), so which
project a run belongs to is remembered per process: authorizing a write costs no query once the caller's
roles are remembered too (shared.core.auth).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from psycopg import AsyncConnection

from services.tracking.domain.metrics import MetricPoint

_RUN_PROJECTS_MAX = 100_000
_run_projects: dict[uuid.UUID, uuid.UUID] = {}

_RUN_PROJECT = "SELECT e.project_id FROM experiment_runs r JOIN experiments e ON e.id = r.experiment_id WHERE r.id = %s"

# The run, if it can be written to: every statement below writes from it, so nothing is written otherwise.
_LIVE_RUN = "live AS (SELECT id FROM experiment_runs WHERE id = %(run)s AND deleted_at IS NULL)"

# A new latest value wins at a higher (step, timestamp), as in MLflow's store.
_LATEST_CONFLICT = """
ON CONFLICT (run_id, key) DO UPDATE
SET value = excluded.value, is_nan = excluded.is_nan, step = excluded.step, timestamp = excluded.timestamp
WHERE (excluded.step, excluded.timestamp) >= (run_latest_metrics.step, run_latest_metrics.timestamp)
"""

# Data-modifying CTEs run to completion whether or not the final SELECT reads them.
_LOG_METRIC = f"""
WITH {_LIVE_RUN},
point AS (
    INSERT INTO run_metrics (run_id, key, value, is_nan, step, timestamp)
    SELECT id, %(key)s, %(value)s, %(value)s = 'NaN'::float8, %(step)s, %(timestamp)s FROM live
    ON CONFLICT DO NOTHING
),
latest AS (
    INSERT INTO run_latest_metrics (run_id, key, value, is_nan, step, timestamp)
    SELECT id, %(key)s, NULLIF(%(value)s, 'NaN'::float8), %(value)s = 'NaN'::float8, %(step)s, %(timestamp)s
    FROM live
    {_LATEST_CONFLICT}
)
SELECT EXISTS (SELECT FROM live)
"""

# A batch arrives as four arrays; each key's latest point is its highest (step, timestamp), the later one
# in the batch on a tie. The same point sent twice is stored once (the unique index on a point).
_LOG_METRICS = f"""
WITH {_LIVE_RUN},
points AS (
    SELECT * FROM unnest(%(keys)s::text[], %(values)s::float8[], %(steps)s::int8[], %(timestamps)s::int8[])
    WITH ORDINALITY AS p (key, value, step, timestamp, position)
),
stored AS (
    INSERT INTO run_metrics (run_id, key, value, is_nan, step, timestamp)
    SELECT live.id, p.key, p.value, p.value = 'NaN'::float8, p.step, p.timestamp FROM live, points p
    ON CONFLICT DO NOTHING
),
latest AS (
    INSERT INTO run_latest_metrics (run_id, key, value, is_nan, step, timestamp)
    SELECT DISTINCT ON (p.key) live.id, p.key, NULLIF(p.value, 'NaN'::float8), p.value = 'NaN'::float8, p.step,
           p.timestamp
    FROM live, points p
    ORDER BY p.key, p.step DESC, p.timestamp DESC, p.position DESC
    {_LATEST_CONFLICT}
)
SELECT EXISTS (SELECT FROM live)
"""

# A param is logged once: the same value again is a no-op, another value is refused (by the usual path).
# The last column is the value stored before this statement, if any (the statement's own snapshot).
_LOG_PARAM = f"""
WITH {_LIVE_RUN},
new AS (
    INSERT INTO run_params (run_id, key, value) SELECT id, %(key)s, %(value)s FROM live
    ON CONFLICT (run_id, key) DO NOTHING
    RETURNING 1
)
SELECT EXISTS (SELECT FROM live), EXISTS (SELECT FROM new),
       (SELECT value FROM run_params WHERE run_id = %(run)s AND key = %(key)s)
"""

_SET_TAG = f"""
WITH {_LIVE_RUN},
tag AS (
    INSERT INTO run_tags (run_id, key, value) SELECT id, %(key)s, %(value)s FROM live
    ON CONFLICT (run_id, key) DO UPDATE SET value = excluded.value
)
SELECT EXISTS (SELECT FROM live)
"""


async def run_project(conn: AsyncConnection, run_id: uuid.UUID) -> uuid.UUID | None:
    """The project of a run, None if there is no such run."""
    project_id = _run_projects.get(run_id)
    if project_id is None:
        row = await (await conn.execute(_RUN_PROJECT, (run_id,))).fetchone()
        if row is None:
            return None
        project_id = row[0]
        if len(_run_projects) >= _RUN_PROJECTS_MAX:
            _run_projects.clear()
        _run_projects[run_id] = project_id
    return project_id


async def _single(conn: AsyncConnection, statement: str, params: dict) -> tuple:
    row = await (await conn.execute(statement, params)).fetchone()
    assert row is not None  # each statement ends with a SELECT of one row
    return row


async def log_metric(conn: AsyncConnection, run_id: uuid.UUID, point: MetricPoint) -> bool:
    params = {"run": run_id, "key": point.key, "value": point.value, "step": point.step, "timestamp": point.timestamp}
    return (await _single(conn, _LOG_METRIC, params))[0]


async def log_metrics(conn: AsyncConnection, run_id: uuid.UUID, points: Sequence[MetricPoint]) -> bool:
    params = {
        "run": run_id,
        "keys": [p.key for p in points],
        "values": [p.value for p in points],
        "steps": [p.step for p in points],
        "timestamps": [p.timestamp for p in points],
    }
    return (await _single(conn, _LOG_METRICS, params))[0]


async def log_param(conn: AsyncConnection, run_id: uuid.UUID, key: str, value: str) -> bool:
    """True when the param is now logged with this value; False when the run cannot take it (missing,
    deleted, or the param already has another value)."""
    live, inserted, stored = await _single(conn, _LOG_PARAM, {"run": run_id, "key": key, "value": value})
    return live and (inserted or stored == value)


async def set_tag(conn: AsyncConnection, run_id: uuid.UUID, key: str, value: str) -> bool:
    return (await _single(conn, _SET_TAG, {"run": run_id, "key": key, "value": value}))[0]
