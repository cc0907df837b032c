"""Runs as MLflow's protobuf JSON, built by PostgreSQL in the statement that finds them.

A search page of 100 runs used to come back as rows of six tables, each turned into Python objects and
then into JSON: most of the server's time. On PostgreSQL each run is one JSON text instead (its info,
latest metrics, params, tags, dataset inputs and model links aggregated by correlated subqueries), and
the response is those texts joined. PostgreSQL evaluates the subqueries after ORDER BY and LIMIT, so only
the page's runs are rendered. The output is what api/render.py makes of the same run (tests hold the two
together); SQLite keeps that Python path.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, String, Text, case, cast, func, literal_column, select
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import SQLCoreOperations

from shared.db.models import Dataset, ExperimentRun, RunDatasetInput, RunLatestMetric, RunModelLink, RunParam, RunTag

# A column, or an expression over columns.
Expression = SQLCoreOperations[Any]
_EMPTY_ARRAY: ColumnElement[Any] = literal_column("'[]'::json")
_NAN: ColumnElement[Any] = literal_column("'\"NaN\"'::json")


def in_database(session: Session) -> bool:
    """Whether runs are rendered by the database (PostgreSQL) rather than by api/render.py."""
    return session.get_bind().dialect.name == "postgresql"


def _constant(text: str) -> ColumnElement:
    # Keys as inline literals, not bind parameters: the statement's text stays the same for every page.
    return literal_column(f"'{text}'")


def _object(builder: Any, **fields: Expression) -> ColumnElement:
    arguments: list[Expression] = []
    for key, value in fields.items():
        arguments += [_constant(key), value]
    return builder(*arguments)


def _json_object(**fields: Expression) -> ColumnElement:
    return _object(func.json_build_object, **fields)


def _array(element: Expression, *where: Expression) -> ColumnElement:
    """JSON array of `element` over the rows of `where`, `[]` when there are none."""
    return select(func.coalesce(func.json_agg(element), _EMPTY_ARRAY)).where(*where).scalar_subquery()


def hex_id(column: Expression) -> ColumnElement:
    """A UUID as MLflow shows ids: 32 hex digits."""
    return func.replace(cast(column, String), _constant("-"), _constant(""))


def _double(value: Expression, is_nan: Expression) -> ColumnElement:
    # to_json renders infinities as "Infinity"/"-Infinity", as protobuf JSON does.
    return case((is_nan, _NAN), else_=func.coalesce(func.to_json(value), _NAN))


def _key_values(model: type[RunParam] | type[RunTag]) -> ColumnElement:
    return _array(_json_object(key=model.key, value=model.value), model.run_id == ExperimentRun.id)


def _info() -> ColumnElement:
    run = ExperimentRun
    info = _object(
        func.jsonb_build_object,
        run_id=hex_id(run.id),
        run_uuid=hex_id(run.id),
        run_name=func.coalesce(run.name, _constant("")),
        experiment_id=hex_id(run.experiment_id),
        user_id=func.coalesce(run.user_name, _constant("")),
        status=run.status,
        start_time=run.start_time,
        artifact_uri=run.artifact_uri,
        lifecycle_stage=case((run.deleted_at.is_(None), _constant("active")), else_=_constant("deleted")),
    )
    # end_time only when set, as MLflow leaves it out of a running run.
    end_time = _object(func.jsonb_build_object, end_time=run.end_time)
    return info.op("||")(case((run.end_time.is_(None), literal_column("'{}'::jsonb")), else_=end_time))


def _dataset_inputs() -> ColumnElement:
    tag = func.jsonb_each_text(RunDatasetInput.tags).table_valued("key", "value").render_derived()
    tags = select(func.coalesce(func.json_agg(_json_object(key=tag.c.key, value=tag.c.value)), _EMPTY_ARRAY))
    dataset = func.jsonb_strip_nulls(
        _object(
            func.jsonb_build_object,
            name=Dataset.name,
            digest=Dataset.digest,
            source_type=Dataset.source_type,
            source=Dataset.source,
            schema=func.nullif(Dataset.schema, _constant("")),
            profile=func.nullif(Dataset.profile, _constant("")),
        )
    )
    # The dataset by its id for each input (a scalar subquery, not a join): a join planned on fresh
    # statistics may hash the whole datasets table for every run of the page.
    found = select(dataset).where(Dataset.id == RunDatasetInput.dataset_id).scalar_subquery()
    return _array(_json_object(tags=tags.scalar_subquery(), dataset=found), RunDatasetInput.run_id == ExperimentRun.id)


def _model_links(direction: str, **extra: Expression) -> ColumnElement:
    model_id = func.concat(_constant("m-"), hex_id(RunModelLink.model_id))
    return _array(
        _json_object(model_id=model_id, **extra),
        RunModelLink.run_id == ExperimentRun.id,
        RunModelLink.direction == _constant(direction),
    )


def run_json() -> ColumnElement:
    """One run of the enclosing query over experiment_runs as the text of MLflow's Run message."""
    metric = RunLatestMetric
    metrics = _array(
        _json_object(
            key=metric.key, value=_double(metric.value, metric.is_nan), timestamp=metric.timestamp, step=metric.step
        ),
        metric.run_id == ExperimentRun.id,
    )
    run = _json_object(
        info=_info(),
        data=_json_object(metrics=metrics, params=_key_values(RunParam), tags=_key_values(RunTag)),
        inputs=_json_object(dataset_inputs=_dataset_inputs(), model_inputs=_model_links("input")),
        outputs=_json_object(model_outputs=_model_links("output", step=RunModelLink.step)),
    )
    return cast(run, Text)
