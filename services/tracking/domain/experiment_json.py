"""Experiments as MLflow's protobuf JSON, built by PostgreSQL in the statement that finds them (as run_json
does for runs): the statements of the hot experiment reads (api/hot_reads.py). The output is what
api/render.experiment makes of the same experiment; tests hold the two together."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from sqlalchemy import ColumnElement, Dialect, Text, Uuid, bindparam, case, cast, select

from services.tracking.domain import experiments
from shared.core.auth import member_project_ids
from shared.db.json_sql import constant, epoch_ms, hex_id, json_array, json_object
from shared.db.models import Experiment, ExperimentTag


def experiment_json() -> ColumnElement[Any]:
    """One experiment of the enclosing query over experiments as the text of MLflow's Experiment message."""
    tags = json_array(
        json_object(key=ExperimentTag.key, value=ExperimentTag.value), ExperimentTag.experiment_id == Experiment.id
    )
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


@dataclass(frozen=True)
class Statement:
    """SQL for the driver; `params` holds the values compiled into it, add the call's own."""

    sql: str
    params: dict[str, Any]


def _compiled(dialect: Dialect, statement: Any) -> Statement:
    rendered = statement.compile(dialect=dialect, compile_kwargs={"render_postcompile": True})
    return Statement(str(rendered), dict(rendered.params))


@lru_cache(maxsize=4)
def by_id(dialect: Dialect) -> Statement:
    """(json, project id) of the experiment `experiment_id`."""
    query = select(experiment_json(), Experiment.project_id).where(
        Experiment.id == bindparam("experiment_id", type_=Uuid)
    )
    return _compiled(dialect, query)


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
    return _compiled(dialect, query)


@lru_cache(maxsize=256)
def search_page(
    dialect: Dialect, filter_string: str, order_by: tuple[str, ...], view_type: str, organization: bool, project: bool
) -> Statement:
    """A page of experiments.search_experiments as json texts, one more than the page (`offset`, `fetch`)."""
    query = experiments.search_query(
        filter_string, list(order_by), view_type, _callers_projects(organization, project)
    ).with_only_columns(experiment_json())
    query = query.offset(bindparam("offset", 0)).limit(bindparam("fetch", 0))
    return _compiled(dialect, query)
