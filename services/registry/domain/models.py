"""Registered models: create, find, search, update, soft delete and restore.

A model belongs to one project and its name is unique among the project's live models. Reads need
`registry:read`; changes need `registry:write` (member); deleting or restoring a model takes a project
admin, as it withdraws (or brings back) every version the deployments may be serving.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import Select, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from shared.core import audit
from shared.core.auth import Access
from shared.core.errors import AlreadyExists, InvalidParameter, NotFound
from shared.core.pagination import RowPage, paginate
from shared.db.base import utcnow
from shared.db.models import Model, ModelAlias, Project

READ = "registry:read"
WRITE = "registry:write"
MAX_NAME_LENGTH = 256
MAX_TAG_KEY_LENGTH = 250
MAX_TAG_VALUE_LENGTH = 100_000


def describe(session: Session, action: str, model: Model, project: Project, /, **details: Any) -> None:
    audit.describe_project_object(session, project, action, "model", model.id, details)


def validate_name(name: str | None, what: str = "name") -> str:
    # '/' and ':' would make `models:/<name>/<version>` URIs ambiguous; MLflow forbids them too.
    if name is None or not name.strip():
        raise InvalidParameter(f"Missing value for required parameter '{what}'")
    if any(c in name for c in "/:") or name in (".", ".."):
        raise InvalidParameter(f"Invalid model name '{name}'. Names cannot contain '/' or ':'.")
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidParameter(f"Model name exceeds the maximum length of {MAX_NAME_LENGTH}")
    return name


def validate_tag(key: str | None, value: str | None) -> None:
    if not key or not key.strip():
        raise InvalidParameter("Missing value for required parameter 'key'")
    if len(key) > MAX_TAG_KEY_LENGTH:
        raise InvalidParameter(f"Tag key '{key[:40]}...' exceeds the maximum length of {MAX_TAG_KEY_LENGTH}")
    if value is not None and len(value) > MAX_TAG_VALUE_LENGTH:
        raise InvalidParameter(f"Tag value for '{key}' exceeds the maximum length of {MAX_TAG_VALUE_LENGTH}")


def validate_tags(tags: dict[str, str] | None) -> dict[str, str]:
    for key, value in (tags or {}).items():
        validate_tag(key, value)
    return dict(tags or {})


def _not_found(model_id: Any) -> NotFound:
    return NotFound(f"Model '{model_id}' does not exist")


def _require(access: Access, project_id: uuid.UUID, scope: str, min_role: str | None, missing: NotFound) -> Project:
    # A model of a project the caller cannot see is missing, with the model's name in the message.
    if access.project_role(project_id) is None:
        raise missing
    return access.require_project(project_id, scope, min_role)


def get_model(
    session: Session,
    access: Access,
    model_id: uuid.UUID,
    scope: str = READ,
    *,
    min_role: str | None = None,
    include_deleted: bool = False,
) -> Model:
    model = session.scalar(
        select(Model)
        .where(Model.id == model_id)
        .options(selectinload(Model.aliases).selectinload(ModelAlias.model_version))
    )
    if model is None or (model.deleted_at is not None and not include_deleted):
        raise _not_found(model_id)
    _require(access, model.project_id, scope, min_role, _not_found(model_id))
    return model


def find_by_name(session: Session, project_id: uuid.UUID, name: str) -> Model | None:
    return session.scalar(
        select(Model)
        .where(Model.project_id == project_id, Model.name == name, Model.deleted_at.is_(None))
        .options(selectinload(Model.aliases).selectinload(ModelAlias.model_version))
    )


def lock(session: Session, model: Model) -> Model:
    """Take the model's row lock: stage changes, alias moves and tag edits of one model queue on it,
    so each reads the state the previous one committed (SELECT ... FOR UPDATE; SQLite locks the file)."""
    if session.get_bind().dialect.name == "sqlite":
        # SQLite has no FOR UPDATE and reads outside a write transaction: a write that changes nothing
        # takes the file's write lock (waiting for the writer before) for the rest of the request.
        session.execute(update(Model).where(Model.id == model.id).values(updated_at=Model.updated_at))
    session.execute(
        select(Model).where(Model.id == model.id).with_for_update().execution_options(populate_existing=True)
    )
    return model


def touch(model: Model) -> None:
    """A change to a version or alias counts as a change of the model (MLflow's last_updated_timestamp)."""
    model.updated_at = utcnow()


def _flush_unique(session: Session, project_id: uuid.UUID, name: str) -> None:
    # The partial unique index decides races between two creations or renames of the same name.
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError:
        raise AlreadyExists(f"Registered Model (name={name}) already exists.") from None


def _ensure_name_free(session: Session, project_id: uuid.UUID, name: str) -> None:
    if find_by_name(session, project_id, name) is not None:
        raise AlreadyExists(f"Registered Model (name={name}) already exists.")


def create_model(
    session: Session,
    access: Access,
    project_id: uuid.UUID,
    *,
    name: str,
    description: str | None = None,
    tags: dict[str, str] | None = None,
) -> Model:
    project = access.require_project(project_id, WRITE)
    validate_name(name)
    tags = validate_tags(tags)
    _ensure_name_free(session, project.id, name)
    model = Model(
        project_id=project.id,
        name=name,
        description=description,
        tags=tags,
        created_by=access.principal.user_id,
        last_version=0,
    )
    session.add(model)
    _flush_unique(session, project.id, name)
    describe(session, "model.create", model, project, name=name, project_id=str(project.id))
    return model


def search_query(
    project_id: uuid.UUID,
    *,
    text: str | None = None,
    tags: dict[str, str] | None = None,
    deleted: bool = False,
) -> Select:
    """A project's models whose name or description contains `text` and that carry every given tag."""
    query = select(Model).where(Model.project_id == project_id)
    query = query.where(Model.deleted_at.is_not(None) if deleted else Model.deleted_at.is_(None))
    if text:
        pattern = f"%{_escape_like(text)}%"
        query = query.where(or_(Model.name.ilike(pattern, escape="\\"), Model.description.ilike(pattern, escape="\\")))
    for key, value in (tags or {}).items():
        query = query.where(Model.tags[key].as_string() == value)
    return query


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def list_models(
    session: Session,
    access: Access,
    project_id: uuid.UUID,
    *,
    text: str | None = None,
    tags: dict[str, str] | None = None,
    deleted: bool = False,
    page_token: str | None = None,
    max_results: int = 100,
) -> RowPage:
    """Rows of (Model,): a project's live models in creation order, or (`deleted`) its deleted ones."""
    access.require_project(project_id, READ)
    query = search_query(project_id, text=text, tags=tags, deleted=deleted).options(
        selectinload(Model.aliases).selectinload(ModelAlias.model_version)
    )
    return paginate(
        session, query, created_col=Model.created_at, id_col=Model.id, page_token=page_token, max_results=max_results
    )


def update_model(
    session: Session,
    access: Access,
    model: Model,
    *,
    changes: dict[str, Any],
) -> Model:
    """Apply the given fields (name, description, tags — tags replace the whole set)."""
    project = access.require_project(model.project_id, WRITE)
    lock(session, model)
    if "tags" in changes:
        model.tags = validate_tags(changes["tags"])
    if "description" in changes:
        model.description = changes["description"]
    if "name" in changes and changes["name"] != model.name:
        new_name = validate_name(changes["name"])
        _ensure_name_free(session, model.project_id, new_name)
        model.name = new_name
        _flush_unique(session, model.project_id, new_name)
    touch(model)
    session.flush()
    describe(session, "model.update", model, project, fields=sorted(changes))
    return model


def set_tag(session: Session, access: Access, model: Model, key: str, value: str) -> None:
    access.require_project(model.project_id, WRITE)
    validate_tag(key, value)
    lock(session, model)
    model.tags = {**model.tags, key: value}
    touch(model)


def delete_tag(session: Session, access: Access, model: Model, key: str) -> None:
    access.require_project(model.project_id, WRITE)
    lock(session, model)
    if key in model.tags:
        model.tags = {k: v for k, v in model.tags.items() if k != key}
        touch(model)


def delete_model(session: Session, access: Access, model: Model) -> None:
    """Soft delete: the model, its versions and aliases vanish from reads and can be restored."""
    project = access.require_project(model.project_id, WRITE, min_role="admin")
    model.deleted_at = utcnow()
    session.flush()
    describe(session, "model.delete", model, project, name=model.name)


def restore_model(session: Session, access: Access, model_id: uuid.UUID) -> Model:
    model = get_model(session, access, model_id, WRITE, min_role="admin", include_deleted=True)
    if model.deleted_at is None:
        return model
    _ensure_name_free(session, model.project_id, model.name)
    model.deleted_at = None
    touch(model)
    _flush_unique(session, model.project_id, model.name)
    describe(session, "model.restore", model, access.require_project(model.project_id, WRITE), name=model.name)
    return model
