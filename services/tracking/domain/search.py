"""Run search: MLflow's SearchRuns (filter, order_by, max_results, page_token, run_view_type), plus OR
and parentheses, compiled to one SQL query for the page. On PostgreSQL that query also renders each run
as JSON (run_json); elsewhere the page's data comes in one more (runs.load_views)."""

from __future__ import annotations

import uuid

from sqlalchemy import select
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
) -> tuple[list[runs.RunView] | str, str | None]:
    """The page's runs and the next page's token. The runs are views to render, or on PostgreSQL the
    page already rendered as a JSON array of MLflow's Run messages (see run_json)."""
    limit = validate_max_results(max_results, default=1000)
    offset = decode_page_token(page_token)
    view_type = run_view_type or "ACTIVE_ONLY"
    if view_type not in VIEW_TYPES:
        raise InvalidParameter(f"Invalid run_view_type '{view_type}'; expected one of {', '.join(VIEW_TYPES)}")
    # Parse everything before touching the database: a bad filter is a 400 whatever the data.
    compiled = search_sql.compile_run_search(parse_filter(filter_string), parse_order_by(order_by))
    scope = _readable_experiment_ids(session, access, experiment_ids)
    if not scope:
        return [], None
    rendered = run_json.in_database(session)
    # Rows of the run table rather than ORM objects: a page is read-only, and building a thousand mapped
    # instances cost more than the query (render reads the same attribute names from either).
    columns = [run_json.run_json()] if rendered else [ExperimentRun.__table__]
    query = (
        select(*columns)
        .select_from(ExperimentRun.__table__)
        .where(ExperimentRun.experiment_id.in_(scope), compiled.condition)
    )
    if view_type == "ACTIVE_ONLY":
        query = query.where(ExperimentRun.deleted_at.is_(None))
    elif view_type == "DELETED_ONLY":
        query = query.where(ExperimentRun.deleted_at.is_not(None))
    for target, on, outer in compiled.joins:
        query = query.join(target, on, isouter=outer)
    query = query.order_by(*compiled.clauses).offset(offset).limit(limit + 1)
    page = session.execute(query).all()
    next_token = encode_page_token(offset + limit) if len(page) > limit else None
    if rendered:
        return "[" + ",".join(row[0] for row in page[:limit]) + "]", next_token
    return runs.load_views(session, page[:limit]), next_token
