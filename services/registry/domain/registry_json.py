"""Registered models and model versions as MLflow's protobuf JSON, built by PostgreSQL in the statement that
finds them: the statements of the registry's hot reads (api/hot_reads.py). The output is what
api/mlflow_registry.model_json and version_json make of the same rows; tests hold the two together.

Every MLflow registry call works in the caller's default project (Access.default_project). The hot
statements find it as that method does, in the statement of the answer: each row carries the candidates
(an API key's project, else the `default` projects of the caller's organizations), and the answer reads
only models of those candidates; a caller with other than exactly one candidate, or who sends
X-Tessera-Project, is left to the usual path."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from sqlalchemy import ColumnElement, Dialect, Select, Text, Uuid, bindparam, case, cast, func, literal_column, select
from sqlalchemy.orm import aliased

from services.registry.domain import mlflow_registry
from shared.core.auth import member_project_ids
from shared.db.json_sql import (
    EMPTY_ARRAY,
    Statement,
    aggregate_order_by,
    compiled,
    constant,
    epoch_ms,
    hex_id,
    json_array,
    json_object,
)
from shared.db.models import Model, ModelAlias, ModelVersion, Project

_EMPTY_OBJECT: ColumnElement[Any] = literal_column("'{}'::jsonb")


def _tags(column: Any) -> ColumnElement[Any]:
    """A JSON dict of tags as [{key, value}] sorted by key (Python's sorted: code points, so collation "C")."""
    tag = func.jsonb_each_text(func.coalesce(column, _EMPTY_OBJECT)).table_valued("key", "value").render_derived()
    element = json_object(key=tag.c.key, value=tag.c.value)
    ordered = aggregate_order_by(element, tag.c.key.collate("C"))
    return select(func.coalesce(func.json_agg(ordered), EMPTY_ARRAY)).scalar_subquery()


def _stage(column: Any) -> ColumnElement[Any]:
    return case(
        *((column == constant(ours), constant(theirs)) for ours, theirs in mlflow_registry.TO_MLFLOW_STAGE.items()),
        else_=literal_column("NULL::text"),
    )


def _without_nulls(**fields: Any) -> ColumnElement[Any]:
    """A json object of `fields` in the order given, the NULL ones left out (MLflow leaves out unset optional
    fields). Built as json, not jsonb: json_build_object only writes text, where jsonb builds a tree that is
    then written out (and sorts the keys); json_strip_nulls reparses the text once. It strips nested objects
    too, which holds the versions of a model's latest_versions (every required field is NOT NULL)."""
    return func.json_strip_nulls(json_object(**fields))


def version_json(version: Any, model_name: Any) -> ColumnElement[Any]:
    """A row of `version` (ModelVersion or an alias of it) as the text of MLflow's ModelVersion message."""
    return cast(_without_nulls(**_version_fields(version, model_name)), Text)


def _version_fields(version: Any, model_name: Any) -> dict[str, ColumnElement[Any]]:
    """A version's fields, the optional ones NULL when unset (`_without_nulls` leaves them out)."""
    alias = aliased(ModelAlias)
    aliases = json_array(alias.alias, alias.model_version_id == version.id, order_by=alias.alias)
    return {
        "name": model_name,
        "version": cast(version.version, Text),
        "creation_timestamp": epoch_ms(version.created_at),
        "last_updated_timestamp": epoch_ms(version.updated_at),
        "current_stage": _stage(version.stage),
        "source": func.coalesce(version.source, constant("")),
        "status": version.status,
        "tags": _tags(version.tags),
        "aliases": aliases,
        "user_id": hex_id(version.created_by),
        "description": version.description,
        "run_id": hex_id(version.run_id),
        "run_link": version.run_link,
        # text || NULL is NULL: no model_id without a logged model.
        "model_id": constant(mlflow_registry.LOGGED_MODEL_PREFIX).op("||")(hex_id(version.logged_model_id)),
    }


def model_json() -> ColumnElement[Any]:
    """A row of models as the text of MLflow's RegisteredModel: its latest live version in each stage (by
    version), tags, and aliases with their versions' numbers."""
    latest, rival = aliased(ModelVersion), aliased(ModelVersion)
    highest = (
        select(func.max(rival.version))
        .where(rival.model_id == latest.model_id, rival.stage == latest.stage, rival.deleted_at.is_(None))
        .scalar_subquery()
    )
    # The versions' unset fields are left out by the model's json_strip_nulls.
    latest_versions = json_array(
        json_object(**_version_fields(latest, Model.name)),
        latest.model_id == Model.id,
        latest.deleted_at.is_(None),
        latest.version == highest,
        order_by=latest.version,
    )
    alias, target = aliased(ModelAlias), aliased(ModelVersion)
    aliases = (
        select(
            func.coalesce(
                func.json_agg(
                    aggregate_order_by(json_object(alias=alias.alias, version=cast(target.version, Text)), alias.alias)
                ),
                EMPTY_ARRAY,
            )
        )
        .where(alias.model_id == Model.id, target.id == alias.model_version_id)
        .scalar_subquery()
    )
    model = _without_nulls(
        name=Model.name,
        creation_timestamp=epoch_ms(Model.created_at),
        last_updated_timestamp=epoch_ms(Model.updated_at),
        latest_versions=latest_versions,
        tags=_tags(Model.tags),
        aliases=aliases,
        user_id=hex_id(Model.created_by),
        description=Model.description,
    )
    return cast(model, Text)


# --- statements -------------------------------------------------------------------------------------


def _candidates(organization: bool, project: bool) -> Select:
    """Access.default_project's candidates, the caller as bind parameters (user_id, organization_id,
    project_id): the API key's project, else the `default` projects of the caller's organizations."""
    ids = member_project_ids(
        bindparam("user_id", type_=Uuid),
        bindparam("organization_id", type_=Uuid) if organization else None,
        bindparam("project_id", type_=Uuid) if project else None,
    )
    return ids if project else select(Project.id).where(Project.slug == "default", Project.id.in_(ids))


def _with_candidates(dialect: Dialect, query: Select, organization: bool, project: bool) -> Statement:
    """`query` (json texts) with a second column: the candidates (at most two) as an array, an InitPlan that
    PostgreSQL evaluates once. One statement instead of the candidates' and the answer's in a pipeline:
    one parse-bind-execute and one result less per call. No row (no answer) leaves the call to the usual
    path, which then looks for the candidates itself."""
    candidates = func.array(_candidates(organization, project).limit(2).scalar_subquery())
    return compiled(dialect, query.add_columns(candidates))


def _live_model(organization: bool, project: bool) -> list[ColumnElement[bool]]:
    return [
        Model.project_id.in_(_candidates(organization, project)),
        Model.name == bindparam("name", type_=Text),
        Model.deleted_at.is_(None),
    ]


@lru_cache(maxsize=8)
def model_by_name(dialect: Dialect, organization: bool, project: bool) -> Statement:
    """The json of the live model `name` of the candidates (one row per candidate project at most)."""
    query = select(model_json()).where(*_live_model(organization, project)).limit(2)
    return _with_candidates(dialect, query, organization, project)


@lru_cache(maxsize=8)
def version_by_alias(dialect: Dialect, organization: bool, project: bool) -> Statement:
    """The json of the live version that alias `alias` of the live model `name` points to."""
    query = (
        select(version_json(ModelVersion, Model.name))
        .select_from(Model)
        .join(ModelAlias, ModelAlias.model_id == Model.id)
        .join(ModelVersion, ModelVersion.id == ModelAlias.model_version_id)
        .where(
            *_live_model(organization, project),
            ModelAlias.alias == bindparam("alias", type_=Text),
            ModelVersion.deleted_at.is_(None),
        )
        .limit(2)
    )
    return _with_candidates(dialect, query, organization, project)


@lru_cache(maxsize=64)
def search_models_page(dialect: Dialect, order_by: tuple[str, ...], organization: bool, project: bool) -> Statement:
    """A page of an unfiltered search_models (prompts left out) as json texts, one row more than the page
    (`offset`, `fetch`)."""
    projects = Model.project_id.in_(_candidates(organization, project))
    query = mlflow_registry.search_models_query(projects, [], list(order_by))
    query = query.with_only_columns(model_json()).offset(bindparam("offset", 0)).limit(bindparam("fetch", 0))
    return _with_candidates(dialect, query, organization, project)
