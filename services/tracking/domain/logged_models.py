"""MLflow 3 logged models (what `mlflow.<flavor>.log_model` creates) and run inputs/outputs
(datasets a run used, models it consumed or produced)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from services.tracking.domain import experiments, runs, search_sql
from services.tracking.domain.ids import format_model_id, parse_model_id
from services.tracking.domain.search_grammar import parse_filter
from services.tracking.domain.sql import decode_page_token, encode_page_token
from services.tracking.domain.validation import (
    MAX_DATASET_DIGEST_LENGTH,
    MAX_DATASET_NAME_LENGTH,
    MAX_DATASETS_PER_REQUEST,
    MAX_INPUT_TAG_KEY_LENGTH,
    MAX_INPUT_TAG_VALUE_LENGTH,
    MAX_PARAM_VALUE_LENGTH,
    MAX_TAG_VALUE_LENGTH,
    parse_int64,
    validate_key,
    validate_max_results,
    validate_value,
)
from shared.core.auth import Access
from shared.core.errors import InvalidParameter, NotFound
from shared.db.base import utcnow
from shared.db.dialect import upsert_insert
from shared.db.models import (
    Dataset,
    Experiment,
    ExperimentRun,
    LoggedModel,
    LoggedModelMetric,
    LoggedModelParam,
    LoggedModelTag,
    RunDatasetInput,
    RunModelLink,
)
from shared.db.models.tracking import LOGGED_MODEL_STATUSES
from shared.db.session import affected_rows

READ = experiments.READ
WRITE = experiments.WRITE


@dataclass
class LoggedModelView:
    model: LoggedModel
    tags: list[tuple[str, str]] = field(default_factory=list)
    params: list[tuple[str, str]] = field(default_factory=list)
    metrics: list[LoggedModelMetric] = field(default_factory=list)


def _not_found(model_id: str | None) -> NotFound:
    return NotFound(f"Logged model with ID '{model_id}' not found.")


def _get_model(
    session: Session, access: Access, model_id: str | None, scope: str, *, allow_deleted: bool = False
) -> LoggedModel:
    row = session.execute(
        select(LoggedModel, Experiment.project_id)
        .join(Experiment, Experiment.id == LoggedModel.experiment_id)
        .where(LoggedModel.id == parse_model_id(model_id))
    ).first()
    if row is None or (row.LoggedModel.deleted_at is not None and not allow_deleted):
        raise _not_found(model_id)
    try:
        access.authorize_project(row.project_id, scope)
    except NotFound:
        raise _not_found(model_id) from None
    return row.LoggedModel


def load_views(session: Session, models: list[LoggedModel]) -> list[LoggedModelView]:
    views = {m.id: LoggedModelView(m) for m in models}
    if not views:
        return []
    ids = list(views)
    for child, target in ((LoggedModelTag, "tags"), (LoggedModelParam, "params")):
        for model_id, key, value in session.execute(
            select(child.model_id, child.key, child.value).where(child.model_id.in_(ids))
        ):
            getattr(views[model_id], target).append((key, value))
    for metric in session.scalars(
        select(LoggedModelMetric).where(LoggedModelMetric.model_id.in_(ids)).order_by(LoggedModelMetric.id)
    ):
        views[metric.model_id].metrics.append(metric)
    return [views[m.id] for m in models]


def get_logged_model(
    session: Session, access: Access, model_id: str | None, *, allow_deleted: bool = False
) -> LoggedModelView:
    return load_views(session, [_get_model(session, access, model_id, READ, allow_deleted=allow_deleted)])[0]


def _key_values(pairs: list, what: str, limit: int) -> dict[str, str]:
    return {
        validate_key(item.get("key"), what): validate_value(item.get("value"), what, limit)
        for item in pairs
        if isinstance(item, dict)
    }


def _write_key_values(
    session: Session, child: type[LoggedModelTag] | type[LoggedModelParam], model_id: uuid.UUID, values: dict[str, str]
) -> None:
    if not values:
        return
    statement = upsert_insert(session, child.__table__).values(
        [{"model_id": model_id, "key": k, "value": v} for k, v in values.items()]
    )
    session.execute(
        statement.on_conflict_do_update(index_elements=["model_id", "key"], set_={"value": statement.excluded.value})
    )


def create_logged_model(
    session: Session,
    access: Access,
    *,
    experiment_id: str | None,
    name: str | None = None,
    model_type: str | None = None,
    source_run_id: str | None = None,
    params: list | None = None,
    tags: list | None = None,
) -> LoggedModelView:
    experiment = experiments.get_writable_active_experiment(session, access, experiment_id)
    param_values = _key_values(params or [], "param", MAX_PARAM_VALUE_LENGTH)
    tag_values = _key_values(tags or [], "tag", MAX_TAG_VALUE_LENGTH)
    run_id = None
    if source_run_id:
        run_id = runs.get_run_row(session, access, source_run_id).id
    model_id = uuid.uuid4()
    model = LoggedModel(
        id=model_id,
        experiment_id=experiment.id,
        name=name or runs.random_run_name(),
        artifact_location=f"{experiment.artifact_location}/models/{format_model_id(model_id)}/artifacts",
        model_type=model_type or None,
        source_run_id=run_id,
        status="LOGGED_MODEL_PENDING",
    )
    session.add(model)
    session.flush()
    _write_key_values(session, LoggedModelParam, model_id, param_values)
    _write_key_values(session, LoggedModelTag, model_id, tag_values)
    return LoggedModelView(model, list(tag_values.items()), list(param_values.items()))


def finalize_logged_model(
    session: Session, access: Access, model_id: str | None, status: str | None
) -> LoggedModelView:
    model = _get_model(session, access, model_id, WRITE)
    if status not in LOGGED_MODEL_STATUSES:
        raise InvalidParameter(f"Invalid logged model status '{status}'; expected one of {LOGGED_MODEL_STATUSES}")
    model.status = status
    model.updated_at = utcnow()
    return load_views(session, [model])[0]


def set_logged_model_tags(session: Session, access: Access, model_id: str | None, tags: list) -> LoggedModelView:
    model = _get_model(session, access, model_id, WRITE)
    _write_key_values(session, LoggedModelTag, model.id, _key_values(tags, "tag", MAX_TAG_VALUE_LENGTH))
    model.updated_at = utcnow()
    return load_views(session, [model])[0]


def delete_logged_model_tag(session: Session, access: Access, model_id: str | None, key: str) -> None:
    model = _get_model(session, access, model_id, WRITE)
    deleted = session.execute(
        delete(LoggedModelTag).where(LoggedModelTag.model_id == model.id, LoggedModelTag.key == key)
    )
    if affected_rows(deleted) == 0:
        raise NotFound(f"No tag with key '{key}' found for logged model '{model_id}'")


def log_logged_model_params(session: Session, access: Access, model_id: str | None, params: list) -> None:
    model = _get_model(session, access, model_id, WRITE)
    _write_key_values(session, LoggedModelParam, model.id, _key_values(params, "param", MAX_PARAM_VALUE_LENGTH))


def delete_logged_model(session: Session, access: Access, model_id: str | None) -> None:
    model = _get_model(session, access, model_id, WRITE)
    model.deleted_at = utcnow()


def search_logged_models(
    session: Session,
    access: Access,
    *,
    experiment_ids: list[str],
    filter_string: str | None = None,
    order_by: list[dict] | None = None,
    max_results: object = None,
    page_token: str | None = None,
) -> tuple[list[LoggedModelView], str | None]:
    limit = validate_max_results(max_results, default=50)
    offset = decode_page_token(page_token)
    condition = search_sql.compile_filter(parse_filter(filter_string), search_sql.logged_model_comparison)
    order = search_sql.logged_model_order(
        [(str(o.get("field_name", "")), bool(o.get("ascending", True))) for o in order_by or []]
    )
    wanted = []
    for experiment_id in experiment_ids:
        try:
            wanted.append(experiments.get_experiment(session, access, experiment_id).id)
        except NotFound:
            continue
    if not wanted:
        return [], None
    query = (
        select(LoggedModel)
        .where(LoggedModel.experiment_id.in_(wanted), LoggedModel.deleted_at.is_(None), condition)
        .order_by(*order)
        .offset(offset)
        .limit(limit + 1)
    )
    page = list(session.scalars(query))
    next_token = encode_page_token(offset + limit) if len(page) > limit else None
    return load_views(session, page[:limit]), next_token


# --- run inputs and outputs --------------------------------------------------------------------------


def _visible_model_ids(session: Session, run: ExperimentRun, items: list) -> list[uuid.UUID]:
    """Model ids named in a request, each required to exist in the run's own project."""
    model_ids = [parse_model_id(item.get("model_id") if isinstance(item, dict) else None) for item in items]
    if not model_ids:
        return []
    project = select(Experiment.project_id).where(Experiment.id == run.experiment_id).scalar_subquery()
    found = set(
        session.scalars(
            select(LoggedModel.id)
            .join(Experiment, Experiment.id == LoggedModel.experiment_id)
            .where(LoggedModel.id.in_(model_ids), Experiment.project_id == project)
        )
    )
    for model_id in model_ids:
        if model_id not in found:
            raise _not_found(format_model_id(model_id))
    return model_ids


def _link_models(session: Session, run: ExperimentRun, links: list[tuple[uuid.UUID, int]], direction: str) -> None:
    if not links:
        return
    statement = upsert_insert(session, RunModelLink.__table__).values(
        [
            {"run_id": run.id, "model_id": m, "direction": direction, "step": step, "created_at": utcnow()}
            for m, step in links
        ]
    )
    session.execute(
        statement.on_conflict_do_update(
            index_elements=["run_id", "model_id", "direction"], set_={"step": statement.excluded.step}
        )
    )


def _validated_dataset(item: object) -> tuple[dict, dict[str, str]]:
    if not isinstance(item, dict) or not isinstance(item.get("dataset"), dict):
        raise InvalidParameter("Invalid dataset input: expected {'dataset': {...}, 'tags': [...]}")
    dataset = item["dataset"]
    for required in ("name", "digest", "source_type", "source"):
        if not dataset.get(required):
            raise InvalidParameter(f"Missing value for required parameter 'dataset.{required}'")
    if len(dataset["name"]) > MAX_DATASET_NAME_LENGTH:
        raise InvalidParameter(f"Dataset name exceeds the maximum length of {MAX_DATASET_NAME_LENGTH}")
    if len(dataset["digest"]) > MAX_DATASET_DIGEST_LENGTH:
        raise InvalidParameter(f"Dataset digest exceeds the maximum length of {MAX_DATASET_DIGEST_LENGTH}")
    tags = {}
    for tag in item.get("tags") or []:
        key, value = tag.get("key"), tag.get("value")
        if not key or len(key) > MAX_INPUT_TAG_KEY_LENGTH:
            raise InvalidParameter(f"Invalid input tag key '{key}'")
        if value is None or len(value) > MAX_INPUT_TAG_VALUE_LENGTH:
            raise InvalidParameter(f"Input tag value exceeds the maximum length of {MAX_INPUT_TAG_VALUE_LENGTH}")
        tags[key] = value
    return dataset, tags


def log_inputs(session: Session, access: Access, run_id: str | None, datasets: list, models: list) -> None:
    if len(datasets) > MAX_DATASETS_PER_REQUEST:
        raise InvalidParameter(f"A request can log at most {MAX_DATASETS_PER_REQUEST} datasets")
    validated = [_validated_dataset(item) for item in datasets]
    run = runs.get_active_run_for_write(session, access, run_id)
    model_ids = _visible_model_ids(session, run, models)
    for dataset, tags in validated:
        session.execute(
            upsert_insert(session, Dataset.__table__)
            .values(
                id=uuid.uuid4(),
                experiment_id=run.experiment_id,
                name=dataset["name"],
                digest=dataset["digest"],
                source_type=dataset["source_type"],
                source=dataset["source"],
                schema=dataset.get("schema"),
                profile=dataset.get("profile"),
            )
            .on_conflict_do_nothing(index_elements=["experiment_id", "name", "digest"])
        )
        dataset_id = session.scalar(
            select(Dataset.id).where(
                Dataset.experiment_id == run.experiment_id,
                Dataset.name == dataset["name"],
                Dataset.digest == dataset["digest"],
            )
        )
        session.execute(
            upsert_insert(session, RunDatasetInput.__table__)
            .values(run_id=run.id, dataset_id=dataset_id, tags=tags)
            .on_conflict_do_nothing(index_elements=["run_id", "dataset_id"])
        )
    _link_models(session, run, [(m, 0) for m in model_ids], "input")


def log_outputs(session: Session, access: Access, run_id: str | None, models: list) -> None:
    run = runs.get_active_run_for_write(session, access, run_id)
    model_ids = _visible_model_ids(session, run, models)
    steps = [parse_int64(item.get("step"), "step", default=0) for item in models]
    _link_models(session, run, list(zip(model_ids, steps, strict=True)), "output")
