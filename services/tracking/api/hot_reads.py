"""The hot side of the read calls a UI page and a script make most (get-run, search, the experiment
reads): what `shared.core.hot_routes` runs before the usual endpoints in mlflow_tracking.py.

Each handler finds what it serves with the statements of the PostgreSQL path (the run or experiment
rendered by the database, see run_json and experiment_json), checks that the caller may read it as the
usual endpoint does (a role from memory, or the caller's projects inside the statement, as
Access.readable_project_ids gives them), and sends the text PostgreSQL rendered. It returns None (the
usual endpoint answers) for anything else: bad input, the default experiment "0" (found by project), a
run or experiment it cannot see or that does not exist, a name found in several projects, a caller or
role not remembered.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import lru_cache

from psycopg import AsyncConnection
from sqlalchemy import Uuid, bindparam, select
from sqlalchemy.dialects.postgresql.psycopg import dialect as psycopg_dialect

from services.tracking.api.common import as_list, rendered_body, run_id_of
from services.tracking.domain import experiment_json, experiments, run_json, runs, search
from services.tracking.domain.ids import parse_uuid
from shared.core.auth import Principal, remembered_project_permission
from shared.core.errors import TesseraError
from shared.core.hot_routes import HotRequest
from shared.db.models import ExperimentRun

_DIALECT = psycopg_dialect()
_EXPERIMENT_PROJECTS = "SELECT id, project_id FROM experiments WHERE id = ANY(%(ids)s)"


@lru_cache(maxsize=1)
def _get_run_sql() -> str:
    query = runs.with_project(select(run_json.run_json()).select_from(ExperimentRun))
    statement = query.where(ExperimentRun.id == bindparam("run_id", type_=Uuid))
    return str(statement.compile(dialect=_DIALECT))


def _readable(principal: Principal, project_id: uuid.UUID) -> bool:
    return remembered_project_permission(principal, project_id, experiments.READ) is True


async def get_run(request: HotRequest) -> bytes | None:
    try:
        run_id = parse_uuid(run_id_of(request.params), "run_id")
    except TesseraError:
        return None
    async with request.connection() as conn:
        row = await (await conn.execute(_get_run_sql(), {"run_id": run_id})).fetchone()
    if row is None or not _readable(request.principal, row[1]):
        return None
    return rendered_body("run", row[0])


def _wanted(experiment_ids: list) -> list[uuid.UUID] | None:
    try:
        return list(dict.fromkeys(uuid.UUID(str(experiment_id)) for experiment_id in experiment_ids))
    except ValueError:
        return None  # "0" (the default experiment) or a malformed id


@asynccontextmanager
async def _without_sort(conn: AsyncConnection, no_sort: bool) -> AsyncIterator[None]:
    """A transaction in which PostgreSQL does not sort, when the page is read in an index's order."""
    if not no_sort:
        yield
        return
    async with conn.transaction():
        await conn.execute("SET LOCAL enable_sort = off")
        yield


async def search_runs(request: HotRequest) -> bytes | None:
    """The experiments' projects and the page in one round trip (a pipeline): the page is sent only when
    the caller may read every experiment asked for, all of which exist."""
    body = request.params
    try:
        view_type, limit, offset = search.checked(
            body.get("run_view_type"), body.get("max_results"), body.get("page_token")
        )
        scope = _wanted(as_list(body.get("experiment_ids"), "experiment_ids"))
        filter_string, order_by = body.get("filter") or "", tuple(as_list(body.get("order_by"), "order_by"))
        if not scope or not isinstance(filter_string, str) or not all(isinstance(key, str) for key in order_by):
            return None
        statement = search.page_statement(_DIALECT, filter_string, order_by, view_type, len(scope))
    except TesseraError:
        return None
    async with request.connection() as conn, conn.pipeline():
        projects = await conn.execute(_EXPERIMENT_PROJECTS, {"ids": scope})
        async with _without_sort(conn, statement.no_sort):
            params = statement.page_params(scope, offset, limit)
            page = await conn.execute(statement.sql, params, prepare=statement.prepare)
        found = await projects.fetchall()
        texts = [row[0] for row in await page.fetchall()]
    if len(found) != len(scope) or not all(_readable(request.principal, project_id) for _, project_id in found):
        return None
    return rendered_body("runs", "[" + ",".join(texts[:limit]) + "]", search.next_token(texts, offset, limit))


def _caller(principal: Principal) -> dict[str, uuid.UUID | None]:
    """The bind parameters of experiment_json's caller-scoped statements."""
    return {
        "user_id": principal.user_id,
        "organization_id": principal.organization_id,
        "project_id": principal.project_id,
    }


def _narrowing(principal: Principal) -> tuple[bool, bool]:
    return principal.organization_id is not None, principal.project_id is not None


async def get_experiment(request: HotRequest) -> bytes | None:
    try:
        experiment_id = parse_uuid(request.params.get("experiment_id"), "experiment_id")
    except TesseraError:
        return None  # "0" (the default experiment, found by project) or a malformed id
    statement = experiment_json.by_id(_DIALECT)
    async with request.connection() as conn:
        row = await (await conn.execute(statement.sql, {**statement.params, "experiment_id": experiment_id})).fetchone()
    if row is None or not _readable(request.principal, row[1]):
        return None
    return rendered_body("experiment", row[0])


async def get_experiment_by_name(request: HotRequest) -> bytes | None:
    name, principal = request.params.get("experiment_name"), request.principal
    if not name or not isinstance(name, str) or not principal.has_scope(experiments.READ):
        return None
    statement = experiment_json.by_name(_DIALECT, *_narrowing(principal))
    async with request.connection() as conn:
        rows = await (
            await conn.execute(statement.sql, {**statement.params, **_caller(principal), "name": name})
        ).fetchall()
    return rendered_body("experiment", rows[0][0]) if len(rows) == 1 else None


async def search_experiments(request: HotRequest) -> bytes | None:
    """A page of the experiments in the caller's projects, the projects found in the same statement."""
    params, principal = request.params, request.principal
    try:
        view_type, limit, offset = experiments.checked_search(
            params.get("max_results"), params.get("page_token"), params.get("view_type")
        )
        filter_string, order_by = params.get("filter") or "", tuple(as_list(params.get("order_by"), "order_by"))
        if not isinstance(filter_string, str) or not all(isinstance(key, str) for key in order_by):
            return None
        if not principal.has_scope(experiments.READ):
            return None
        statement = experiment_json.search_page(_DIALECT, filter_string, order_by, view_type, *_narrowing(principal))
    except TesseraError:
        return None
    values = {**statement.params, **_caller(principal), "offset": offset, "fetch": limit + 1}
    async with request.connection() as conn:
        texts = [row[0] for row in await (await conn.execute(statement.sql, values)).fetchall()]
    return rendered_body("experiments", "[" + ",".join(texts[:limit]) + "]", search.next_token(texts, offset, limit))
