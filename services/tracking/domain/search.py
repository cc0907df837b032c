"""Run search: MLflow's SearchRuns (filter, order_by, max_results, page_token, run_view_type), plus OR
and parentheses, compiled to one SQL query for the page. On PostgreSQL that query also renders each run
as JSON (run_json); elsewhere the page's data comes in one more (runs.load_views)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from sqlalchemy import Dialect, Select, Uuid, bindparam, select
from sqlalchemy.orm import Session

from services.tracking.domain import experiments, run_json, runs, search_sql
from services.tracking.domain.ids import DEFAULT_EXPERIMENT_ID
from services.tracking.domain.search_grammar import parse_filter, parse_order_by
from services.tracking.domain.sql import decode_page_token, encode_page_token
from services.tracking.domain.validation import validate_max_results
from shared.core.auth import Access
from shared.core.errors import InvalidParameter, PermissionDenied
from shared.db.models import Experiment, ExperimentRun

VIEW_TYPES = experiments.VIEW_TYPES


def _readable_experiment_ids(session: Session, access: Access, experiment_ids: list[str]) -> list[uuid.UUID]:
    """The requested experiments the caller may read; others are silently absent (as nonexistent ones
    are in MLflow), so a search cannot tell another tenant's experiment from no experiment."""
    wanted: set[uuid.UUID] = set()
    for experiment_id in experiment_ids:
        if experiment_id == DEFAULT_EXPERIMENT_ID:
            wanted.add(experiments.get_experiment(session, access, DEFAULT_EXPERIMENT_ID).id)
            continue
        try:
            wanted.add(uuid.UUID(str(experiment_id)))
        except ValueError:
            continue
    if not wanted:
        return []
    if not access.principal.has_scope(experiments.READ):
        # Refused, not filtered to nothing: an empty page would tell the caller there is nothing to see.
        raise PermissionDenied(f"API key lacks the '{experiments.READ}' scope")
    # Every role in a project reads it. The roles come from the per-process cache (shared.core.auth),
    # which this fills for the hot path of later searches (api/hot_reads.py).
    found = session.execute(select(Experiment.id, Experiment.project_id).where(Experiment.id.in_(wanted)))
    return [experiment_id for experiment_id, project_id in found if access.project_role(project_id) is not None]


def checked(run_view_type: str | None, max_results: object, page_token: str | None) -> tuple[str, int, int]:
    """The view type, page size and offset of a search, or a 400 naming the bad one."""
    limit = validate_max_results(max_results, default=1000)
    offset = decode_page_token(page_token)
    view_type = run_view_type or "ACTIVE_ONLY"
    if view_type not in VIEW_TYPES:
        raise InvalidParameter(f"Invalid run_view_type '{view_type}'; expected one of {', '.join(VIEW_TYPES)}")
    return view_type, limit, offset


def _matching(compiled: search_sql.CompiledRunSearch, scope: Sequence[object], view_type: str) -> Select:
    """The ids of the runs of the experiments in `scope` that match, in no order yet."""
    query = select(ExperimentRun.id).where(compiled.experiment.in_(scope), compiled.condition)
    if view_type == "ACTIVE_ONLY":
        query = query.where(ExperimentRun.deleted_at.is_(None))
    elif view_type == "DELETED_ONLY":
        query = query.where(ExperimentRun.deleted_at.is_not(None))
    for target, on, outer in compiled.joins:
        query = query.join(target, on, isouter=outer)
    return query


def search_runs(
    session: Session,
    access: Access,
    *,
    experiment_ids: list[str],
    filter_string: str | None = None,
    run_view_type: str | None = None,
    max_results: object = None,
    order_by: list[str] | None = None,
    page_token: str | None = None,
) -> tuple[list[runs.RunView], str | None]:
    """The page's runs and the next page's token."""
    view_type, limit, offset = checked(run_view_type, max_results, page_token)
    # Parse everything before touching the database: a bad filter is a 400 whatever the data.
    compiled = search_sql.compile_run_search(parse_filter(filter_string), parse_order_by(order_by))
    scope = _readable_experiment_ids(session, access, experiment_ids)
    if not scope:
        return [], None
    # Rows of the run table rather than ORM objects: a page is read-only, and building a thousand mapped
    # instances cost more than the query (render reads the same attribute names from either).
    query = _matching(compiled, scope, view_type).with_only_columns(ExperimentRun.__table__, maintain_column_froms=True)
    page = session.execute(query.order_by(*compiled.clauses).offset(offset).limit(limit + 1)).all()
    return runs.load_views(session, page[:limit]), next_token(page, offset, limit)


def next_token(page: Sequence, offset: int, limit: int) -> str | None:
    # One row more than the page tells whether there is a next page without a COUNT.
    return encode_page_token(offset + limit) if len(page) > limit else None


@dataclass(frozen=True)
class PageStatement:
    """A rendered search page's SQL for the driver, compiled once per filter, order and number of
    experiments. `params` holds the filter's values; add `page_params` for each search."""

    sql: str
    params: dict[str, Any]
    # The page is read in an index's order: PostgreSQL must be told not to sort (see page_statement).
    no_sort: bool

    @property
    def prepare(self) -> bool:
        """Whether the driver should prepare the statement. A page read in an index's order is: with
        sorting disabled the only plans left walk that index, so a generic plan (made without the
        experiment or the page size) is the same walk, and preparing saves parsing and planning this long
        statement at each call (a third of PostgreSQL's CPU for a page of 100 runs). A page that must be
        sorted is planned at each call: its best plan depends on the experiment's size and the page's."""
        return self.no_sort

    def page_params(self, scope: Sequence[uuid.UUID], offset: int, limit: int) -> dict[str, Any]:
        experiments = {f"experiment_{i}": experiment_id for i, experiment_id in enumerate(scope)}
        return {**self.params, **experiments, "offset": offset, "fetch": offset + limit + 1, "page": limit + 1}


@lru_cache(maxsize=512)
def page_statement(
    dialect: Dialect, filter_string: str, order_by: tuple[str, ...], view_type: str, experiments: int
) -> PageStatement:
    """The statement of a page of runs rendered by PostgreSQL, in one statement: the matching runs in
    order (with their sort keys), then each rendered (run_json).

    When an index of the experiment yields the first sort key in order, the runs are read in that order
    up to the page's end (ties included: the other keys only break them), with sorting disabled: fresh
    statistics underestimate a large experiment and would have PostgreSQL sort all of its runs instead."""
    compiled = search_sql.compile_run_search(parse_filter(filter_string), parse_order_by(list(order_by)))
    # Placeholders whose values page_params gives (rendering the filter's IN lists needs values for all).
    scope = [bindparam(f"experiment_{i}", None, type_=Uuid) for i in range(experiments)]
    keys = [expression.label(f"k{i}") for i, (expression, _) in enumerate(compiled.order)]
    query = _matching(compiled, scope, view_type).add_columns(*keys)
    if compiled.indexed:
        query = query.order_by(*compiled.clauses[: compiled.indexed]).fetch(bindparam("fetch", 0), with_ties=True)
    else:
        query = query.order_by(*compiled.clauses).limit(bindparam("fetch", 0))
    found = query.subquery("found")
    order = [found.c[f"k{i}"].asc() if up else found.c[f"k{i}"].desc() for i, (_, up) in enumerate(compiled.order)]
    statement = (
        select(run_json.run_json())
        .select_from(found.join(ExperimentRun, ExperimentRun.id == found.c.id))
        .order_by(*order)
        .offset(bindparam("offset", 0))
        .limit(bindparam("page", 0))
    )
    rendered = statement.compile(dialect=dialect, compile_kwargs={"render_postcompile": True})
    return PageStatement(str(rendered), dict(rendered.params), bool(compiled.indexed))


def search_runs_json(
    session: Session,
    access: Access,
    *,
    experiment_ids: list[str],
    filter_string: str | None = None,
    run_view_type: str | None = None,
    max_results: object = None,
    order_by: list[str] | None = None,
    page_token: str | None = None,
) -> tuple[str, str | None]:
    """search_runs on PostgreSQL (run_json.in_database), the page already rendered: a JSON array of
    MLflow's Run messages."""
    view_type, limit, offset = checked(run_view_type, max_results, page_token)
    dialect = session.get_bind().dialect
    key = (dialect, filter_string or "", tuple(order_by or ()), view_type)
    statement = page_statement(*key, max(1, len(experiment_ids)))  # a bad filter is a 400 whatever the data
    scope = _readable_experiment_ids(session, access, experiment_ids)
    if not scope:
        return "[]", None
    if len(scope) != len(experiment_ids):
        statement = page_statement(*key, len(scope))
    driver = session.connection().connection.driver_connection
    assert driver is not None  # a checked-out connection
    with driver.cursor() as cursor:
        if statement.no_sort:
            # For the rest of the request's transaction: a search is the last statement of its request.
            cursor.execute("SET LOCAL enable_sort = off")
        params = statement.page_params(scope, offset, limit)
        texts = [row[0] for row in cursor.execute(statement.sql, params, prepare=statement.prepare)]
    return "[" + ",".join(texts[:limit]) + "]", next_token(texts, offset, limit)
