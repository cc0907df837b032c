"""What a training loop writes — a run's start and end, its metric points, params and tags — each as one
PostgreSQL statement.

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
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection
from psycopg.errors import UniqueViolation

from services.tracking.domain import metrics
from services.tracking.domain.metrics import MetricPoint
from shared.core.audit import SUCCESS_ROW_CTE

_PROJECTS_MAX = 100_000
_run_projects: dict[uuid.UUID, uuid.UUID] = {}
_experiment_projects: dict[uuid.UUID, uuid.UUID] = {}

_RUN_PROJECT = "SELECT e.project_id FROM experiment_runs r JOIN experiments e ON e.id = r.experiment_id WHERE r.id = %s"

_EXPERIMENT_PROJECT = "SELECT project_id FROM experiments WHERE id = %s"

_CREATE_RUN = f"""
WITH experiment AS (SELECT id, artifact_location FROM experiments WHERE id = %(experiment)s AND deleted_at IS NULL),
run AS (
    INSERT INTO experiment_runs (id, experiment_id, name, status, start_time, user_name, artifact_uri, created_by,
                                 created_at, updated_at)
    SELECT %(run)s, id, %(name)s, 'RUNNING', %(start)s, %(user)s,
           artifact_location || '/' || %(run_hex)s::text || '/artifacts', %(created_by)s, now(), now()
    FROM experiment
    RETURNING artifact_uri
),
tags AS (
    INSERT INTO run_tags (run_id, key, value)
    SELECT %(run)s, t.key, t.value FROM run, unnest(%(keys)s::text[], %(values)s::text[]) AS t (key, value)
),
{SUCCESS_ROW_CTE.format(source="run")}
SELECT artifact_uri FROM run
"""

_UPDATE_RUN = f"""
WITH run AS (
    UPDATE experiment_runs
    SET status = coalesce(%(status)s, status), end_time = coalesce(%(end_time)s, end_time), updated_at = now()
    WHERE id = %(run)s AND deleted_at IS NULL
    RETURNING experiment_id, name, user_name, status, start_time, end_time, artifact_uri
),
{SUCCESS_ROW_CTE.format(source="run")}
SELECT * FROM run
"""

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

# A batch's latest values, one row per key (metrics.latest_points), as four arrays; the points themselves
# follow with COPY, PostgreSQL's cheapest way in (an INSERT .. SELECT over unnest cost it 60 % more CPU).
_LOG_LATEST = f"""
WITH {_LIVE_RUN},
latest AS (
    INSERT INTO run_latest_metrics (run_id, key, value, is_nan, step, timestamp)
    SELECT live.id, p.key, NULLIF(p.value, 'NaN'::float8), p.value = 'NaN'::float8, p.step, p.timestamp
    FROM live, unnest(%(keys)s::text[], %(values)s::float8[], %(steps)s::int8[], %(timestamps)s::int8[])
         AS p (key, value, step, timestamp)
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


async def _project(
    conn: AsyncConnection, remembered: dict[uuid.UUID, uuid.UUID], statement: str, object_id: uuid.UUID
) -> uuid.UUID | None:
    project_id = remembered.get(object_id)
    if project_id is None:
        row = await (await conn.execute(statement, (object_id,))).fetchone()
        if row is None:
            return None
        project_id = row[0]
        if len(remembered) >= _PROJECTS_MAX:
            remembered.clear()
        remembered[object_id] = project_id
    return project_id


async def run_project(conn: AsyncConnection, run_id: uuid.UUID) -> uuid.UUID | None:
    """The project of a run, None if there is no such run."""
    return await _project(conn, _run_projects, _RUN_PROJECT, run_id)


async def experiment_project(conn: AsyncConnection, experiment_id: uuid.UUID) -> uuid.UUID | None:
    """The project of an experiment, None if there is no such experiment."""
    return await _project(conn, _experiment_projects, _EXPERIMENT_PROJECT, experiment_id)


@dataclass(frozen=True, slots=True)
class RunRow:
    """A run as written (the attributes render.run_info reads)."""

    id: uuid.UUID
    experiment_id: uuid.UUID
    name: str | None
    user_name: str | None
    status: str
    start_time: int | None
    end_time: int | None
    artifact_uri: str | None
    deleted_at: datetime | None = None


async def create_run(
    conn: AsyncConnection,
    experiment_id: uuid.UUID,
    *,
    name: str,
    start_time: int,
    user_name: str,
    created_by: uuid.UUID,
    tags: dict[str, str],
    audit: dict[str, Any],
) -> RunRow | None:
    """A RUNNING run of an active experiment with its tags and the request's audit row; None (nothing
    written) when the experiment is missing or deleted."""
    run_id = uuid.uuid4()
    params = {
        "run": run_id,
        "run_hex": run_id.hex,
        "experiment": experiment_id,
        "name": name,
        "start": start_time,
        "user": user_name,
        "created_by": created_by,
        "keys": list(tags),
        "values": list(tags.values()),
        **audit,
    }
    row = await (await conn.execute(_CREATE_RUN, params)).fetchone()
    if row is None:
        return None
    project_id = _experiment_projects.get(experiment_id)
    if project_id is not None and len(_run_projects) < _PROJECTS_MAX:
        # The run's first log calls, if this process serves them, need not look its project up.
        _run_projects[run_id] = project_id
    return RunRow(run_id, experiment_id, name, user_name, "RUNNING", start_time, None, row[0])


async def update_run(
    conn: AsyncConnection, run_id: uuid.UUID, *, status: str | None, end_time: int | None, audit: dict[str, Any]
) -> RunRow | None:
    """A live run's new status and end time, with the request's audit row; None (nothing written) when the
    run is missing or deleted."""
    params = {"run": run_id, "status": status, "end_time": end_time, **audit}
    row = await (await conn.execute(_UPDATE_RUN, params)).fetchone()
    return RunRow(run_id, *row) if row is not None else None


async def _single(conn: AsyncConnection, statement: str, params: dict) -> tuple:
    row = await (await conn.execute(statement, params)).fetchone()
    assert row is not None  # each statement ends with a SELECT of one row
    return row


async def log_metric(conn: AsyncConnection, run_id: uuid.UUID, point: MetricPoint) -> bool:
    params = {"run": run_id, "key": point.key, "value": point.value, "step": point.step, "timestamp": point.timestamp}
    return (await _single(conn, _LOG_METRIC, params))[0]


class _NotWritten(Exception):
    """Rolls back a batch's transaction."""


async def log_metrics(conn: AsyncConnection, run_id: uuid.UUID, points: list[MetricPoint]) -> bool:
    """A batch of points in one transaction: the latest values, then the points with COPY. False (nothing
    written) also when the batch repeats a stored point: COPY cannot skip it, the usual path does."""
    latest = metrics.latest_points(points)
    params = {
        "run": run_id,
        "keys": [p.key for p in latest],
        "values": [p.value for p in latest],
        "steps": [p.step for p in latest],
        "timestamps": [p.timestamp for p in latest],
    }
    try:
        async with conn.transaction():
            if not (await _single(conn, _LOG_LATEST, params))[0]:
                raise _NotWritten
            async with conn.cursor().copy(metrics.COPY_POINTS) as copy:
                await copy.write(metrics.copy_rows(run_id, points))
    except (_NotWritten, UniqueViolation):
        return False
    return True


async def log_param(conn: AsyncConnection, run_id: uuid.UUID, key: str, value: str) -> bool:
    """True when the param is now logged with this value; False when the run cannot take it (missing,
    deleted, or the param already has another value)."""
    live, inserted, stored = await _single(conn, _LOG_PARAM, {"run": run_id, "key": key, "value": value})
    return live and (inserted or stored == value)


async def set_tag(conn: AsyncConnection, run_id: uuid.UUID, key: str, value: str) -> bool:
    return (await _single(conn, _SET_TAG, {"run": run_id, "key": key, "value": value}))[0]
