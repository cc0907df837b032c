"""The hot side of a training loop's write calls (log-metric, log-batch, log-parameter, set-tag): what
`shared.core.hot_routes` runs before the usual endpoints in mlflow_tracking.py.

Each handler validates with the domain's own rules, checks the caller may write to the run's project from
memory, and writes in one statement; it returns None (the usual endpoint answers) for anything else:
bad input, a run it cannot see or that is deleted, a param already logged with another value, a batch
with params or tags, points naming a logged model, a `mlflow.runName` tag (it renames the run).

No audit row: these add data to a run (points, params, tags), they do not change what exists or who may
do what; creating, ending, deleting and restoring runs are audited by their usual endpoints.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

from psycopg import AsyncConnection

from services.tracking.api.common import EMPTY, as_list, run_id_of
from services.tracking.domain import experiments, metrics, run_writes, runs
from services.tracking.domain.ids import parse_uuid
from services.tracking.domain.validation import validate_batch_sizes
from shared.core.auth import remembered_project_permission
from shared.core.errors import TesseraError
from shared.core.hot_routes import HotRequest


async def _write(
    request: HotRequest, run_id: uuid.UUID, write: Callable[[AsyncConnection], Awaitable[bool]], *, points: bool
) -> bytes | None:
    async with request.connection() as conn:
        project_id = await run_writes.run_project(conn, run_id)
        if project_id is None or not remembered_project_permission(request.principal, project_id, experiments.WRITE):
            return None
        if points and request.state.settings.tracking_async_metric_commit:
            async with conn.transaction():
                await conn.execute("SET LOCAL synchronous_commit = off")
                written = await write(conn)
        else:
            written = await write(conn)
    return EMPTY if written else None


async def log_metric(request: HotRequest) -> bytes | None:
    try:
        run_id = parse_uuid(run_id_of(request.params), "run_id")
        point = metrics.parse_metric(request.params)
    except TesseraError:
        return None
    if point.model_id is not None:
        return None
    return await _write(request, run_id, lambda conn: run_writes.log_metric(conn, run_id, point), points=True)


async def log_batch(request: HotRequest) -> bytes | None:
    body = request.params
    try:
        run_id = parse_uuid(run_id_of(body), "run_id")
        if as_list(body.get("params"), "params") or as_list(body.get("tags"), "tags"):
            return None
        items = as_list(body.get("metrics"), "metrics")
        validate_batch_sizes(len(items), 0, 0)
        points = metrics.parse_metrics(items)
    except TesseraError:
        return None
    if not points:
        return None
    if any(p.model_id is not None for p in points):
        return None
    return await _write(request, run_id, lambda conn: run_writes.log_metrics(conn, run_id, points), points=True)


async def log_param(request: HotRequest) -> bytes | None:
    body = request.params
    try:
        run_id = parse_uuid(run_id_of(body), "run_id")
        ((key, value),) = runs.validate_params([(body.get("key"), body.get("value"))]).items()
    except TesseraError:
        return None
    return await _write(request, run_id, lambda conn: run_writes.log_param(conn, run_id, key, value), points=False)


async def set_tag(request: HotRequest) -> bytes | None:
    body = request.params
    try:
        run_id = parse_uuid(run_id_of(body), "run_id")
        ((key, value),) = runs.validate_tags([(body.get("key"), body.get("value"))]).items()
    except TesseraError:
        return None
    if key == runs.RUN_NAME_TAG:
        return None
    return await _write(request, run_id, lambda conn: run_writes.set_tag(conn, run_id, key, value), points=False)
