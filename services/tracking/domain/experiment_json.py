"""Experiments as MLflow's protobuf JSON, built by PostgreSQL in the statement that finds them (as run_json
does for runs): the statements of the hot experiment reads (api/hot_reads.py). The output is what
api/render.experiment makes of the same experiment; tests hold the two together."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from sqlalchemy import JSON, ColumnElement, Dialect, Text, Uuid, bindparam, case, cast, func, select

from services.tracking.domain import experiments, search_sql
from services.tracking.domain.search_grammar import parse_order_by
from shared.core.auth import member_project_ids
from shared.db.json_sql import EMPTY_ARRAY, Statement, compiled, constant, epoch_ms, hex_id, json_array, json_object
from shared.db.models import Experiment, ExperimentTag


def _tag_object() -> ColumnElement[Any]:
    return json_object(key=ExperimentTag.key, value=ExperimentTag.value)


def experiment_json(tags: ColumnElement[Any] | None = None) -> ColumnElement[Any]:
    """One experiment of the enclosing query over experiments as the text of MLflow's Experiment message;
    its tags from `tags` (a json array) when given, else from a correlated subquery."""
    if tags is None:
        tags = json_array(_tag_object(), ExperimentTag.experiment_id == Experiment.id)
    experiment = json_object(
        experiment_id=hex_id(Experiment.id),
        name=Experiment.name,
        artifact_location=Experiment.artifact_location,
        lifecycle_stage=case((Experiment.deleted_at.is_(None), constant("active")), else_=constant("deleted")),
        last_update_time=epoch_ms(Experiment.updated_at),
        creation_time=epoch_ms(Experiment.created_at),
        tags=tags,
    )
    return cast(experiment, Text)


def _callers_projects(organization: bool, project: bool) -> Any:
    """The projects a caller reads (Access.readable_project_ids), the caller given as bind parameters."""
    return member_project_ids(
        bindparam("user_id", type_=Uuid),
        bindparam("organization_id", type_=Uuid) if organization else None,
        bindparam("project_id", type_=Uuid) if project else None,
    )


@lru_cache(maxsize=4)
def by_id(dialect: Dialect) -> Statement:
    """(json, project id) of the experiment `experiment_id`."""
    query = select(experiment_json(), Experiment.project_id).where(
        Experiment.id == bindparam("experiment_id", type_=Uuid)
    )
    return compiled(dialect, query)


@lru_cache(maxsize=16)
def by_name(dialect: Dialect, organization: bool, project: bool) -> Statement:
    """The json of the experiments named `name` in the caller's projects (at most two are read: a name in
    several projects is left to the usual path, which picks the default project's)."""
    query = (
        select(experiment_json())
        .where(
            Experiment.name == bindparam("name", type_=Text),
            Experiment.project_id.in_(_callers_projects(organization, project)),
        )
        .limit(2)
    )
    return compiled(dialect, query)


@lru_cache(maxsize=256)
def search_page(
    dialect: Dialect, filter_string: str, order_by: tuple[str, ...], view_type: str, organization: bool, project: bool
) -> Statement:
    """A page of experiments.search_experiments as json texts, one more than the page (`offset`, `fetch`).

    Built so that its plan does not depend on statistics (the bench's tables are never analyzed, and a
    prepared statement keeps its first plan): the caller's projects are an array computed once (an
    InitPlan), not a semi join that re-reads projects, memberships and organizations for each experiment;
    the page's tags are read in one pass and grouped by experiment, not by a subquery per experiment (on a
    small tags table each was a sequential scan of the whole table: 101 scans of 200 rows for a page)."""
    projects = select(func.unnest(func.array(_callers_projects(organization, project).scalar_subquery())))
    ordered = experiments.search_query(filter_string, list(order_by), view_type, projects)
    position = func.row_number().over(order_by=search_sql.experiment_order(parse_order_by(list(order_by))))
    page = (
        ordered.with_only_columns(Experiment.id, position.label("position"))
        .offset(bindparam("offset", 0))
        .limit(bindparam("fetch", 0))
        .cte("page")
    )
    # The page's tags as one object {experiment id: [tags]}, computed once (an InitPlan) from one scan.
    grouped = (
        select(
            cast(ExperimentTag.experiment_id, Text).label("experiment_id"),
            func.json_agg(_tag_object()).label("tags"),
        )
        .where(ExperimentTag.experiment_id == func.any(func.array(select(page.c.id).scalar_subquery())))
        .group_by(ExperimentTag.experiment_id)
        .subquery("page_tags")
    )
    tag_map = select(func.jsonb_object_agg(grouped.c.experiment_id, grouped.c.tags)).scalar_subquery()
    tags = cast(tag_map.op("->")(cast(page.c.id, Text)), JSON)
    query = (
        select(experiment_json(func.coalesce(tags, EMPTY_ARRAY)))
        .select_from(page)
        .join(Experiment, Experiment.id == page.c.id)
        .order_by(page.c.position)
    )
    return compiled(dialect, query)
