"""Runs: create, read, update, delete/restore, tags and params — MLflow's semantics, tenant-scoped.

A run's visibility is its experiment's project: a run of a project the caller cannot read is reported
missing. Reads of many runs (search, the native views) load children with one query per child table
for the whole page, never one per run.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from sqlalchemy import BigInteger, Float, Row, Select, String, cast, delete, false, literal, select, union_all
from sqlalchemy.orm import Session

from services.tracking.domain import experiments, run_json
from services.tracking.domain.ids import format_model_id, parse_uuid
from services.tracking.domain.sql import ids_match
from services.tracking.domain.validation import (
    MAX_PARAM_VALUE_LENGTH,
    MAX_TAG_VALUE_LENGTH,
    parse_int64,
    validate_key,
    validate_value,
)
from shared.core.auth import Access
from shared.core.errors import InvalidParameter, NotFound
from shared.db.base import utcnow
from shared.db.dialect import UpsertInsert, insert_for, upsert_insert
from shared.db.models import (
    Dataset,
    Experiment,
    ExperimentRun,
    RunDatasetInput,
    RunLatestMetric,
    RunModelLink,
    RunParam,
    RunTag,
)
from shared.db.models.tracking import RUN_STATUSES
from shared.db.session import affected_rows

RUN_NAME_TAG = "mlflow.runName"
READ = experiments.READ
WRITE = experiments.WRITE

_NAME_WORDS = (
    (
        "amazing",
        "bold",
        "brave",
        "bright",
        "calm",
        "clever",
        "crisp",
        "eager",
        "gentle",
        "happy",
        "keen",
        "lucky",
        "merry",
        "nimble",
        "proud",
        "quick",
        "quiet",
        "rare",
        "sharp",
        "swift",
        "tidy",
        "wise",
    ),
    (
        "ant",
        "bass",
        "bear",
        "cat",
        "crow",
        "deer",
        "dove",
        "eel",
        "finch",
        "fox",
        "goat",
        "hawk",
        "lark",
        "lynx",
        "mole",
        "owl",
        "ram",
        "seal",
        "shrew",
        "stag",
        "toad",
        "wolf",
    ),
)


@dataclass
class Metric:
    key: str
    value: float
    timestamp: int
    step: int


@dataclass
class DatasetInputView:
    dataset: Dataset
    tags: dict[str, str]


@dataclass
class RunView:
    # The mapped run, or a row of the run table (search pages): the same attribute names, read-only.
    run: ExperimentRun | Row
    metrics: list[Metric] = field(default_factory=list)
    params: list[tuple[str, str]] = field(default_factory=list)
    tags: list[tuple[str, str]] = field(default_factory=list)
    dataset_inputs: list[DatasetInputView] = field(default_factory=list)
    model_inputs: list[str] = field(default_factory=list)
    model_outputs: list[tuple[str, int]] = field(default_factory=list)


def random_run_name() -> str:
    adjectives, animals = _NAME_WORDS
    return f"{secrets.choice(adjectives)}-{secrets.choice(animals)}-{secrets.randbelow(1000)}"


def _not_found(run_id: str | None) -> NotFound:
    return NotFound(f"Run with id={run_id} not found")


def get_run_row(session: Session, access: Access, run_id: str | None, scope: str = READ) -> ExperimentRun:
    """The run if the caller may use its project in `scope`; missing and invisible look the same.

    One query for the run and its project's id (this runs on every log call); the caller's roles in the
    project are usually remembered (shared.core.auth), so the access check asks nothing more."""
    row = session.execute(
        with_project(select(ExperimentRun)).where(ExperimentRun.id == parse_uuid(run_id, "run_id"))
    ).first()
    row = _authorize(access, row, run_id, scope)
    return row.ExperimentRun


def with_project(query: Select) -> Select:
    """`query` over runs, with each run's project id."""
    return query.add_columns(Experiment.project_id).join(Experiment, Experiment.id == ExperimentRun.experiment_id)


def _authorize(access: Access, row: Row | None, run_id: str | None, scope: str) -> Row:
    """The row, once the caller may use its run in `scope`."""
    if row is None:
        raise _not_found(run_id)
    try:
        access.authorize_project(row.project_id, scope)
    except NotFound:
        raise _not_found(run_id) from None
    return row


def get_active_run_for_write(session: Session, access: Access, run_id: str | None) -> ExperimentRun:
    run = get_run_row(session, access, run_id, WRITE)
    if run.deleted_at is not None:
        raise InvalidParameter(f"The run {run.id.hex} must be in the 'active' state. Current state is deleted.")
    return run


def load_views(session: Session, runs: Sequence[ExperimentRun | Row]) -> list[RunView]:
    """Runs with their latest metrics, params, tags, inputs and outputs for a whole page.

    Round trips, not rows, dominate here: metrics, params, tags, model links and a marker for each
    dataset input come back in one UNION ALL query; datasets themselves are read only when a run of
    the page has some (most have none)."""
    views = {run.id: RunView(run) for run in runs}
    if not views:
        return []
    ids = list(views)
    no_text, no_number, no_int = literal(None, String), literal(None, Float), literal(None, BigInteger)
    children = union_all(
        select(
            literal("m"),
            RunLatestMetric.run_id,
            RunLatestMetric.key,
            no_text,
            RunLatestMetric.value,
            RunLatestMetric.is_nan,
            RunLatestMetric.timestamp,
            RunLatestMetric.step,
        ).where(ids_match(session, RunLatestMetric.run_id, ids)),
        *(
            select(literal(kind), model.run_id, model.key, model.value, no_number, false(), no_int, no_int).where(
                ids_match(session, model.run_id, ids)
            )
            for kind, model in (("p", RunParam), ("t", RunTag))
        ),
        select(
            literal("l"),
            RunModelLink.run_id,
            RunModelLink.direction,
            cast(RunModelLink.model_id, String),
            no_number,
            false(),
            no_int,
            RunModelLink.step,
        ).where(ids_match(session, RunModelLink.run_id, ids)),
        select(literal("d"), RunDatasetInput.run_id, no_text, no_text, no_number, false(), no_int, no_int).where(
            ids_match(session, RunDatasetInput.run_id, ids)
        ),
    )
    with_datasets = []
    for kind, run_id, key, text, number, is_nan, timestamp, step in session.execute(children).all():
        view = views[run_id]
        if kind == "m":
            view.metrics.append(Metric(key, float("nan") if is_nan else number, timestamp, step))
        elif kind == "p":
            view.params.append((key, text))
        elif kind == "t":
            view.tags.append((key, text))
        elif kind == "l" and key == "input":
            view.model_inputs.append(format_model_id(uuid.UUID(text)))
        elif kind == "l":
            view.model_outputs.append((format_model_id(uuid.UUID(text)), step))
        else:
            with_datasets.append(run_id)
    if with_datasets:
        for run_id, tags, dataset in session.execute(
            select(RunDatasetInput.run_id, RunDatasetInput.tags, Dataset)
            .join(Dataset, Dataset.id == RunDatasetInput.dataset_id)
            .where(RunDatasetInput.run_id.in_(set(with_datasets)))
        ):
            views[run_id].dataset_inputs.append(DatasetInputView(dataset, tags))
    return [views[run.id] for run in runs]


def get_run(session: Session, access: Access, run_id: str | None) -> RunView:
    return load_views(session, [get_run_row(session, access, run_id)])[0]


def get_run_json(session: Session, access: Access, run_id: str | None) -> str:
    """get_run on PostgreSQL (run_json.in_database), rendered as MLflow's Run message by the one statement
    that finds the run and its project."""
    run = run_json.run_json().label("run")
    query = with_project(select(run).select_from(ExperimentRun))
    row = session.execute(query.where(ExperimentRun.id == parse_uuid(run_id, "run_id"))).first()
    row = _authorize(access, row, run_id, READ)
    return row.run


def create_run(
    session: Session,
    access: Access,
    *,
    experiment_id: str | None,
    user_id: str | None = None,
    run_name: str | None = None,
    start_time: object = None,
    tags: list[tuple[str, str]] | None = None,
) -> RunView:
    experiment = experiments.get_writable_active_experiment(session, access, experiment_id)
    tag_values = {validate_key(k, "tag"): validate_value(v, "tag", MAX_TAG_VALUE_LENGTH) for k, v in tags or []}
    tagged_name = tag_values.get(RUN_NAME_TAG)
    if run_name and tagged_name and run_name != tagged_name:
        raise InvalidParameter(
            f"Both 'run_name' argument and 'mlflow.runName' tag are specified, but with different values "
            f"(run_name='{run_name}', mlflow.runName='{tagged_name}')."
        )
    name = run_name or tagged_name or random_run_name()
    tag_values[RUN_NAME_TAG] = name
    run_id = uuid.uuid4()
    run = ExperimentRun(
        id=run_id,
        experiment_id=experiment.id,
        name=name,
        status="RUNNING",
        start_time=parse_int64(start_time, "start_time", default=int(utcnow().timestamp() * 1000)),
        user_name=user_id or access.principal.email,
        artifact_uri=f"{experiment.artifact_location}/{run_id.hex}/artifacts",
        created_by=access.principal.user_id,
    )
    session.add(run)
    session.flush()
    session.execute(
        RunTag.__table__.insert(), [{"run_id": run_id, "key": k, "value": v} for k, v in tag_values.items()]
    )
    return RunView(run, tags=list(tag_values.items()))


def update_run(
    session: Session,
    access: Access,
    run_id: str | None,
    *,
    status: str | None = None,
    end_time: object = None,
    run_name: str | None = None,
) -> ExperimentRun:
    run = get_active_run_for_write(session, access, run_id)
    if status is not None:
        if status not in RUN_STATUSES:
            raise InvalidParameter(f"Invalid run status '{status}'; expected one of {', '.join(RUN_STATUSES)}")
        run.status = status
    if end_time is not None:
        run.end_time = parse_int64(end_time, "end_time")
    if run_name:
        _rename(session, run, run_name)
    return run


def _rename(session: Session, run: ExperimentRun, name: str) -> None:
    """The run name lives in two places, as in MLflow: the column and the mlflow.runName tag."""
    run.name = name
    session.execute(
        upsert_insert(session, RunTag.__table__)
        .values(run_id=run.id, key=RUN_NAME_TAG, value=name)
        .on_conflict_do_update(index_elements=["run_id", "key"], set_={"value": name})
    )


def delete_run(session: Session, access: Access, run_id: str | None) -> None:
    run = get_run_row(session, access, run_id, WRITE)
    if run.deleted_at is None:
        run.deleted_at = utcnow()


def restore_run(session: Session, access: Access, run_id: str | None) -> None:
    run = get_run_row(session, access, run_id, WRITE)
    run.deleted_at = None


def set_tags(session: Session, run: ExperimentRun, tags: dict[str, str]) -> None:
    """Upsert validated tags in one statement; mlflow.runName renames the run."""
    if not tags:
        return
    session.execute(
        _tag_upsert(session.get_bind().dialect.name),
        [{"run_id": run.id, "key": k, "value": v} for k, v in tags.items()],
    )
    if RUN_NAME_TAG in tags:
        run.name = tags[RUN_NAME_TAG]


@lru_cache(maxsize=2)
def _tag_upsert(dialect_name: str) -> UpsertInsert:
    statement = insert_for(dialect_name, RunTag.__table__)
    return statement.on_conflict_do_update(index_elements=["run_id", "key"], set_={"value": statement.excluded.value})


def set_tag(session: Session, access: Access, run_id: str | None, key: str | None, value: str | None) -> None:
    run = get_active_run_for_write(session, access, run_id)
    set_tags(session, run, {validate_key(key, "tag"): validate_value(value, "tag", MAX_TAG_VALUE_LENGTH)})


def delete_tag(session: Session, access: Access, run_id: str | None, key: str | None) -> None:
    run = get_active_run_for_write(session, access, run_id)
    deleted = session.execute(delete(RunTag).where(RunTag.run_id == run.id, RunTag.key == key))
    if affected_rows(deleted) == 0:
        raise NotFound(f"No tag with name: {key} in run with id {run.id.hex}")


def log_params(session: Session, run: ExperimentRun, params: dict[str, str]) -> None:
    """Insert params; re-logging the same value is a no-op, a different value is rejected before
    anything is written (MLflow: params are immutable)."""
    if not params:
        return
    existing = _logged_params(session, run, list(params))
    _refuse_changes(run, existing, params)
    new_rows: list[dict[str, Any]] = [
        {"run_id": run.id, "key": k, "value": v} for k, v in params.items() if k not in existing
    ]
    if new_rows:
        inserted = affected_rows(
            session.execute(
                upsert_insert(session, RunParam.__table__)
                .values(new_rows)
                .on_conflict_do_nothing(index_elements=["run_id", "key"])
            )
        )
        if inserted != len(new_rows):
            # A concurrent request logged some of these keys in between: the same value is a no-op,
            # another value is refused as if it had come second.
            _refuse_changes(run, _logged_params(session, run, [row["key"] for row in new_rows]), params)


def _logged_params(session: Session, run: ExperimentRun, keys: list[str]) -> dict[str, str]:
    query = select(RunParam.key, RunParam.value).where(RunParam.run_id == run.id, RunParam.key.in_(keys))
    return dict(session.execute(query).all())


def _refuse_changes(run: ExperimentRun, existing: dict[str, str], params: dict[str, str]) -> None:
    changed = {k: (existing[k], v) for k, v in params.items() if k in existing and existing[k] != v}
    if changed:
        key, (old, new) = next(iter(changed.items()))
        raise InvalidParameter(
            f"Changing param values is not allowed. Params were already logged='[{{'key': '{key}', "
            f"'old_value': '{old}', 'new_value': '{new}'}}]' for run ID='{run.id.hex}'."
        )


def validate_params(pairs: list[tuple[object, object]]) -> dict[str, str]:
    params: dict[str, str] = {}
    for key, value in pairs:
        key = validate_key(key, "param")
        value = validate_value(value, "param", MAX_PARAM_VALUE_LENGTH)
        if key in params and params[key] != value:
            raise InvalidParameter(
                f"Duplicate parameter keys have been submitted: ['{key}']. Please ensure the request "
                "contains only one param value per param key."
            )
        params[key] = value
    return params


def validate_tags(pairs: list[tuple[object, object]]) -> dict[str, str]:
    return {validate_key(k, "tag"): validate_value(v, "tag", MAX_TAG_VALUE_LENGTH) for k, v in pairs}


def log_param(session: Session, access: Access, run_id: str | None, key: str | None, value: str | None) -> None:
    run = get_active_run_for_write(session, access, run_id)
    log_params(session, run, validate_params([(key, value)]))
