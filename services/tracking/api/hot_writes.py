"""The hot side of a training loop's write calls (runs/create, runs/update, log-metric, log-batch,
log-parameter, set-tag): what `shared.core.hot_routes` runs before the usual endpoints in mlflow_tracking.py.

Each handler validates with the domain's own rules, checks the caller may write to the run's project from
memory, and writes in one statement; it returns None (the usual endpoint answers) for anything else:
bad input, a run it cannot see or that is deleted, a param already logged with another value, a batch
with params or tags, points naming a logged model, a `mlflow.runName` tag (it renames the run).

Creating and ending a run leave the request's audit row, written by the same statement; logging points,
params and tags leaves none: they add data to a run, they do not change what exists or who may do what.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable
from typing import cast

import orjson
from psycopg import AsyncConnection

from services.tracking.api import render
from services.tracking.api.common import EMPTY, as_list, key_value_pairs, run_id_of
from services.tracking.domain import experiments, metrics, run_writes, runs
from services.tracking.domain.ids import parse_uuid
from services.tracking.domain.validation import parse_int64, validate_batch_sizes
from shared.core import audit
from shared.core.auth import remembered_project_permission
from shared.core.errors import TesseraError
from shared.core.hot_routes import HotRequest
from shared.db.models import ExperimentRun
from shared.db.models.tracking import RUN_STATUSES


async def _write(
    request: HotRequest, run_id: uuid.UUID, write: Callable[[AsyncConnection], Awaitable[bool]], *, points: bool
) -> bytes | None:
    async with request.connection() as conn:
        if not _authorized(request, await run_writes.run_project(conn, run_id)):
            return None
        if points and request.state.settings.tracking_async_metric_commit:
            async with conn.transaction():
                await conn.execute("SET LOCAL synchronous_commit = off")
                written = await write(conn)
        else:
            written = await write(conn)
    return EMPTY if written else None


def _authorized(request: HotRequest, project_id: uuid.UUID | None) -> bool:
    return project_id is not None and bool(
        remembered_project_permission(request.principal, project_id, experiments.WRITE)
    )


async def create_run(request: HotRequest) -> bytes | None:
    body = request.params
    try:
        if body.get("experiment_id") == experiments.DEFAULT_EXPERIMENT_ID:
            return None
        experiment_id = parse_uuid(body.get("experiment_id"), "experiment_id")
        tags = runs.validate_tags(key_value_pairs(body.get("tags"), "tags"))
        run_name, tagged_name = body.get("run_name"), tags.get(runs.RUN_NAME_TAG)
        if run_name and tagged_name and run_name != tagged_name:
            return None
        start_time = parse_int64(body.get("start_time"), "start_time", default=int(time.time() * 1000))
    except TesseraError:
        return None
    name = run_name or tagged_name or runs.random_run_name()
    tags[runs.RUN_NAME_TAG] = name
    principal = request.principal
    async with request.connection() as conn:
        if not _authorized(request, await run_writes.experiment_project(conn, experiment_id)):
            return None
        run = await run_writes.create_run(
            conn,
            experiment_id,
            name=name,
            start_time=start_time,
            user_name=body.get("user_id") or principal.email,
            created_by=principal.user_id,
            tags=tags,
            audit=audit.success_row_params(principal, request.context),
        )
    if run is None:
        return None
    return orjson.dumps({"run": render.run(runs.RunView(cast(ExperimentRun, run), tags=list(tags.items())))})


async def update_run(request: HotRequest) -> bytes | None:
    body = request.params
    status, end_time = body.get("status"), body.get("end_time")
    try:
        run_id = parse_uuid(run_id_of(body), "run_id")
        if body.get("run_name") or (status is not None and status not in RUN_STATUSES):
            return None
        end_time = parse_int64(end_time, "end_time") if end_time is not None else None
    except TesseraError:
        return None
    async with request.connection() as conn:
        if not _authorized(request, await run_writes.run_project(conn, run_id)):
            return None
        audit_row = audit.success_row_params(request.principal, request.context)
        run = await run_writes.update_run(conn, run_id, status=status, end_time=end_time, audit=audit_row)
    return orjson.dumps({"run_info": render.run_info(cast(ExperimentRun, run))}) if run is not None else None


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
