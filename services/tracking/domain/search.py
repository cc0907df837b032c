"""Run search: MLflow's SearchRuns (filter, order_by, max_results, page_token, run_view_type), plus OR
and parentheses, compiled to one SQL query for the page. On PostgreSQL that query also renders each run
as JSON (run_json); elsewhere the page's data comes in one more (runs.load_views)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Select, select, text
from sqlalchemy.orm import Session

from services.tracking.domain import experiments, run_json, runs, search_sql
from services.tracking.domain.ids import DEFAULT_EXPERIMENT_ID
from services.tracking.domain.search_grammar import parse_filter, parse_order_by
from services.tracking.domain.sql import decode_page_token, encode_page_token
from services.tracking.domain.validation import validate_max_results
from shared.core.auth import Access
from shared.core.errors import InvalidParameter
from shared.db.models import Experiment, ExperimentRun

VIEW_TYPES = experiments.VIEW_TYPES
# For the rest of the request's transaction (a search is the last statement of its request).
_NO_SORT = text("SET LOCAL enable_sort = off")


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
    return list(
        session.scalars(
            select(Experiment.id).where(
                Experiment.id.in_(wanted),
                Experiment.project_id.in_(access.readable_project_ids(experiments.READ)),
            )
        )
    )


@dataclass
class _Search:
    """A run search compiled and scoped: `query` selects the matching runs' ids, in no order yet."""

    query: Select
    compiled: search_sql.CompiledRunSearch
    offset: int
    limit: int


def _search(
    session: Session,
    access: Access,
    experiment_ids: list[str],
    filter_string: str | None,
    run_view_type: str | None,
    max_results: object,
    order_by: list[str] | None,
    page_token: str | None,
) -> _Search | None:
    """None when the caller may read none of the experiments."""
    limit = validate_max_results(max_results, default=1000)
    offset = decode_page_token(page_token)
    view_type = run_view_type or "ACTIVE_ONLY"
    if view_type not in VIEW_TYPES:
        raise InvalidParameter(f"Invalid run_view_type '{view_type}'; expected one of {', '.join(VIEW_TYPES)}")
    # Parse everything before touching the database: a bad filter is a 400 whatever the data.
    compiled = search_sql.compile_run_search(parse_filter(filter_string), parse_order_by(order_by))
    scope = _readable_experiment_ids(session, access, experiment_ids)
    if not scope:
        return None
    query = select(ExperimentRun.id).where(ExperimentRun.experiment_id.in_(scope), compiled.condition)
    if view_type == "ACTIVE_ONLY":
        query = query.where(ExperimentRun.deleted_at.is_(None))
    elif view_type == "DELETED_ONLY":
        query = query.where(ExperimentRun.deleted_at.is_not(None))
    for target, on, outer in compiled.joins:
        query = query.join(target, on, isouter=outer)
    return _Search(query, compiled, offset, limit)


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
    found = _search(session, access, experiment_ids, filter_string, run_view_type, max_results, order_by, page_token)
    if found is None:
        return [], None
    # Rows of the run table rather than ORM objects: a page is read-only, and building a thousand mapped
    # instances cost more than the query (render reads the same attribute names from either).
    query = found.query.with_only_columns(ExperimentRun.__table__, maintain_column_froms=True)
    page = session.execute(query.order_by(*found.compiled.clauses).offset(found.offset).limit(found.limit + 1)).all()
    return runs.load_views(session, page[: found.limit]), _next_token(page, found.offset, found.limit)


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
    found = _search(session, access, experiment_ids, filter_string, run_view_type, max_results, order_by, page_token)
    if found is None:
        return "[]", None
    texts = session.execute(_rendered_page(session, found)).scalars().all()
    return "[" + ",".join(texts[: found.limit]) + "]", _next_token(texts, found.offset, found.limit)


def _next_token(page: Sequence, offset: int, limit: int) -> str | None:
    # One row more than the page tells whether there is a next page without a COUNT.
    return encode_page_token(offset + limit) if len(page) > limit else None


def _rendered_page(session: Session, found: _Search) -> Select:
    """The page as JSON texts, in one statement: the matching runs in order (with their sort keys), then
    each rendered. When an index of the experiment yields the first sort key in order, the runs are read
    in that order up to the page's end (ties included, the other keys only break them), and PostgreSQL is
    told not to sort instead: fresh statistics would have it prefer sorting all of a large experiment's
    runs, which they underestimate."""
    compiled, offset, limit = found.compiled, found.offset, found.limit
    keys = [expression.label(f"k{i}") for i, (expression, _) in enumerate(compiled.order)]
    query = found.query.add_columns(*keys)
    if compiled.indexed:
        session.execute(_NO_SORT)
        query = query.order_by(*compiled.clauses[: compiled.indexed]).fetch(offset + limit + 1, with_ties=True)
    else:
        query = query.order_by(*compiled.clauses).limit(offset + limit + 1)
    page = query.subquery("found")
    order = [
        page.c[f"k{i}"].asc() if ascending else page.c[f"k{i}"].desc()
        for i, (_, ascending) in enumerate(compiled.order)
    ]
    return (
        select(run_json.run_json())
        .select_from(page.join(ExperimentRun, ExperimentRun.id == page.c.id))
        .order_by(*order)
        .offset(offset)
        .limit(limit + 1)
    )
