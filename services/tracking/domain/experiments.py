"""Experiments: MLflow's experiment operations, each scoped to the projects the caller may use.

An experiment belongs to one project; names are unique per project. A new experiment goes to the
caller's default project (see `Access.default_project`). Lookups never reveal experiments of other
tenants: they are reported missing, exactly like experiments that do not exist.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import Select, delete, select, update
from sqlalchemy.orm import Session

from services.tracking.domain import search_sql
from services.tracking.domain.ids import DEFAULT_EXPERIMENT_ID, DEFAULT_EXPERIMENT_NAME, parse_uuid
from services.tracking.domain.search_grammar import parse_filter, parse_order_by
from services.tracking.domain.sql import decode_page_token, encode_page_token
from services.tracking.domain.validation import (
    MAX_EXPERIMENT_TAG_VALUE_LENGTH,
    validate_experiment_name,
    validate_key,
    validate_max_results,
    validate_value,
)
from shared.core import artifact_locations, audit
from shared.core.auth import Access
from shared.core.errors import AlreadyExists, InvalidParameter, NotFound
from shared.db.base import utcnow
from shared.db.dialect import upsert_insert
from shared.db.models import Experiment, ExperimentRun, ExperimentTag
from shared.db.session import affected_rows

READ = "tracking:read"
WRITE = "tracking:write"
VIEW_TYPES = ("ACTIVE_ONLY", "DELETED_ONLY", "ALL")


@dataclass
class ExperimentView:
    experiment: Experiment
    tags: list[tuple[str, str]]


def artifact_root_uri(experiment_id: uuid.UUID) -> str:
    """Artifacts go through the server's proxied artifact API; the first path segment names the
    experiment, which is how the artifact API finds the tenant and checks access."""
    return artifact_locations.experiment_root_uri(experiment_id)


def _not_found(experiment_id: str) -> NotFound:
    return NotFound(f"No Experiment with id={experiment_id} exists")


def _ensure_default_experiment(session: Session, access: Access, scope: str) -> Experiment:
    """The project's "Default" experiment, created on first use (safe under concurrent first uses)."""
    project = access.default_project(scope)
    query = select(Experiment).where(Experiment.project_id == project.id, Experiment.name == DEFAULT_EXPERIMENT_NAME)
    experiment = session.scalar(query)
    if experiment is None:
        new_id = uuid.uuid4()
        now = utcnow()
        session.execute(
            upsert_insert(session, Experiment.__table__)
            .values(
                id=new_id,
                project_id=project.id,
                name=DEFAULT_EXPERIMENT_NAME,
                artifact_location=artifact_root_uri(new_id),
                created_by=access.principal.user_id,
                created_at=now,
                updated_at=now,
            )
            .on_conflict_do_nothing(index_elements=["project_id", "name"])
        )
        experiment = session.scalar(query)
    assert experiment is not None
    return experiment


def get_experiment(session: Session, access: Access, experiment_id: str | None, scope: str = READ) -> Experiment:
    """The experiment, if the caller may use it in `scope` (else 404; 403 if seen but not allowed)."""
    if experiment_id == DEFAULT_EXPERIMENT_ID:
        return _ensure_default_experiment(session, access, scope)
    experiment = session.get(Experiment, parse_uuid(experiment_id, "experiment_id"))
    if experiment is None:
        raise _not_found(experiment_id or "")
    try:
        access.authorize_project(experiment.project_id, scope)
    except NotFound:
        raise _not_found(experiment_id or "") from None
    return experiment


def get_writable_active_experiment(session: Session, access: Access, experiment_id: str | None) -> Experiment:
    experiment = get_experiment(session, access, experiment_id, WRITE)
    if experiment.deleted_at is not None:
        raise InvalidParameter(
            f"The experiment {experiment.id.hex} must be in the 'active' state. Current state is deleted."
        )
    return experiment


def experiment_tags(session: Session, experiment_ids: list[uuid.UUID]) -> dict[uuid.UUID, list[tuple[str, str]]]:
    tags: dict[uuid.UUID, list[tuple[str, str]]] = {eid: [] for eid in experiment_ids}
    if experiment_ids:
        rows = session.execute(
            select(ExperimentTag.experiment_id, ExperimentTag.key, ExperimentTag.value).where(
                ExperimentTag.experiment_id.in_(experiment_ids)
            )
        )
        for experiment_id, key, value in rows:
            tags[experiment_id].append((key, value))
    return tags


def view(session: Session, experiment: Experiment) -> ExperimentView:
    return ExperimentView(experiment, experiment_tags(session, [experiment.id])[experiment.id])


def create_experiment(
    session: Session,
    access: Access,
    name: str | None,
    artifact_location: str | None = None,
    tags: list[tuple[str, str]] | None = None,
) -> Experiment:
    name = validate_experiment_name(name)
    project = access.default_project(WRITE)
    existing = session.scalar(select(Experiment).where(Experiment.project_id == project.id, Experiment.name == name))
    if existing is not None:
        state = (
            " in deleted state. You can restore the experiment, or permanently delete it" if existing.is_deleted else ""
        )
        raise AlreadyExists(f"Experiment '{name}' already exists{state}.")
    validated_tags = [
        (validate_key(key, "tag"), validate_value(value, "tag", MAX_EXPERIMENT_TAG_VALUE_LENGTH))
        for key, value in tags or []
    ]
    experiment_id = uuid.uuid4()
    experiment = Experiment(
        id=experiment_id,
        project_id=project.id,
        name=name,
        artifact_location=artifact_location or artifact_root_uri(experiment_id),
        created_by=access.principal.user_id,
    )
    session.add(experiment)
    session.flush()
    if validated_tags:
        session.execute(
            ExperimentTag.__table__.insert(),
            [{"experiment_id": experiment_id, "key": k, "value": v} for k, v in dict(validated_tags).items()],
        )
    audit.describe_project_object(
        session,
        project,
        "experiment.create",
        "experiment",
        experiment_id.hex,
        {"name": name, "project_id": str(project.id)},
    )
    return experiment


def get_experiment_by_name(session: Session, access: Access, name: str | None) -> Experiment:
    """Names are unique per project; a caller with several projects gets the one in their default
    project when the name is ambiguous."""
    if not name:
        raise InvalidParameter("Missing value for required parameter 'experiment_name'")
    matches = session.scalars(
        select(Experiment).where(Experiment.name == name, Experiment.project_id.in_(access.readable_project_ids(READ)))
    ).all()
    if len(matches) > 1:
        default_project_id = access.default_project(READ).id
        matches = [e for e in matches if e.project_id == default_project_id]
    if len(matches) != 1:
        raise NotFound(f"Could not find experiment with name '{name}'")
    return matches[0]


def rename_experiment(session: Session, access: Access, experiment_id: str | None, new_name: str | None) -> None:
    experiment = get_experiment(session, access, experiment_id, WRITE)
    new_name = validate_experiment_name(new_name)
    if experiment.deleted_at is not None:
        raise InvalidParameter("Cannot rename a non-active experiment.")
    clash = session.scalar(
        select(Experiment.id).where(Experiment.project_id == experiment.project_id, Experiment.name == new_name)
    )
    if clash is not None and clash != experiment.id:
        raise AlreadyExists(f"Experiment '{new_name}' already exists.")
    experiment.name = new_name
    experiment.updated_at = utcnow()
    _describe(session, access, experiment, "experiment.rename", {"name": new_name})


def delete_experiment(session: Session, access: Access, experiment_id: str | None) -> None:
    """Soft delete; the experiment's live runs are deleted with it (and come back on restore)."""
    experiment = get_experiment(session, access, experiment_id, WRITE)
    if experiment.deleted_at is not None:
        return
    now = utcnow()
    experiment.deleted_at = now
    experiment.updated_at = now
    session.execute(
        update(ExperimentRun)
        .where(ExperimentRun.experiment_id == experiment.id, ExperimentRun.deleted_at.is_(None))
        .values(deleted_at=now)
    )
    _describe(session, access, experiment, "experiment.delete")


def restore_experiment(session: Session, access: Access, experiment_id: str | None) -> None:
    experiment = get_experiment(session, access, experiment_id, WRITE)
    if experiment.deleted_at is None:
        return
    session.execute(
        update(ExperimentRun)
        .where(ExperimentRun.experiment_id == experiment.id, ExperimentRun.deleted_at == experiment.deleted_at)
        .values(deleted_at=None)
    )
    experiment.deleted_at = None
    experiment.updated_at = utcnow()
    _describe(session, access, experiment, "experiment.restore")


def set_experiment_tag(
    session: Session, access: Access, experiment_id: str | None, key: str | None, value: str | None
) -> None:
    experiment = get_writable_active_experiment(session, access, experiment_id)
    key = validate_key(key, "tag")
    value = validate_value(value, "tag", MAX_EXPERIMENT_TAG_VALUE_LENGTH)
    session.execute(
        upsert_insert(session, ExperimentTag.__table__)
        .values(experiment_id=experiment.id, key=key, value=value)
        .on_conflict_do_update(index_elements=["experiment_id", "key"], set_={"value": value})
    )
    experiment.updated_at = utcnow()


def delete_experiment_tag(session: Session, access: Access, experiment_id: str | None, key: str | None) -> None:
    experiment = get_writable_active_experiment(session, access, experiment_id)
    deleted = session.execute(
        delete(ExperimentTag).where(ExperimentTag.experiment_id == experiment.id, ExperimentTag.key == key)
    )
    if affected_rows(deleted) == 0:
        raise NotFound(f"No tag with name: {key} in experiment with id {experiment.id.hex}")


def checked_search(max_results: object, page_token: str | None, view_type: str | None) -> tuple[str, int, int]:
    """The view type, page size and offset of an experiment search, or a 400 naming the bad one."""
    limit = validate_max_results(max_results, default=1000)
    offset = decode_page_token(page_token)
    view_type = view_type or "ACTIVE_ONLY"
    if view_type not in VIEW_TYPES:
        raise InvalidParameter(f"Invalid view_type '{view_type}'; expected one of {', '.join(VIEW_TYPES)}")
    return view_type, limit, offset


def search_query(filter_string: str | None, order_by: list[str] | None, view_type: str, projects: Select) -> Select:
    """The experiments of `projects` (ids) that match, in the search's order."""
    query = select(Experiment).where(
        Experiment.project_id.in_(projects),
        search_sql.compile_filter(parse_filter(filter_string), search_sql.experiment_comparison),
    )
    if view_type == "ACTIVE_ONLY":
        query = query.where(Experiment.deleted_at.is_(None))
    elif view_type == "DELETED_ONLY":
        query = query.where(Experiment.deleted_at.is_not(None))
    return query.order_by(*search_sql.experiment_order(parse_order_by(order_by)))


def search_experiments(
    session: Session,
    access: Access,
    *,
    filter_string: str | None = None,
    order_by: list[str] | None = None,
    max_results: object = None,
    page_token: str | None = None,
    view_type: str | None = None,
    project_id: uuid.UUID | None = None,
) -> tuple[list[ExperimentView], str | None]:
    view_type, limit, offset = checked_search(max_results, page_token, view_type)
    query = search_query(filter_string, order_by, view_type, access.readable_project_ids(READ))
    if project_id is not None:
        query = query.where(Experiment.project_id == project_id)
    rows = session.scalars(query.offset(offset).limit(limit + 1)).all()
    next_token = encode_page_token(offset + limit) if len(rows) > limit else None
    rows = rows[:limit]
    tags = experiment_tags(session, [e.id for e in rows])
    return [ExperimentView(e, tags[e.id]) for e in rows], next_token


def _describe(
    session: Session, access: Access, experiment: Experiment, action: str, details: dict | None = None
) -> None:
    project = access.require_project(experiment.project_id, READ)
    audit.describe_project_object(session, project, action, "experiment", experiment.id.hex, details)
