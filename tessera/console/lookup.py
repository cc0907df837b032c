"""Names for ids the API already let the caller see: model versions as `name v3`, users as emails.

Read straight from the shared schema in one query per page, because the API offers no batch look-up and
one API call per row would make a 50-row page cost 50 calls. Only ids taken from the caller's own API
answers are ever looked up, so nothing is revealed that the API did not already show.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import select

from shared.db.models import Model, ModelVersion, User


def _ids(values: Iterable[object]) -> list[uuid.UUID]:
    found = set()
    for value in values:
        if value:
            try:
                found.add(uuid.UUID(str(value)))
            except ValueError:
                continue
    return sorted(found)


async def version_labels(request: Request, ids: Iterable[object]) -> dict[str, dict]:
    """{version id: {"model": name, "version": "3", "label": "name v3"}}"""
    wanted = _ids(ids)
    if not wanted:
        return {}

    def query() -> dict[str, dict]:
        with request.app.state.db.session_scope() as session:
            rows = session.execute(
                select(ModelVersion.id, Model.name, ModelVersion.version)
                .join(Model, Model.id == ModelVersion.model_id)
                .where(ModelVersion.id.in_(wanted))
            ).all()
        return {
            str(r.id): {"model": r.name, "version": str(r.version), "label": f"{r.name} v{r.version}"} for r in rows
        }

    return await run_in_threadpool(query)


async def user_emails(request: Request, ids: Iterable[object]) -> dict[str, str]:
    wanted = _ids(ids)
    if not wanted:
        return {}

    def query() -> dict[str, str]:
        with request.app.state.db.session_scope() as session:
            return {str(r.id): r.email for r in session.execute(select(User.id, User.email).where(User.id.in_(wanted)))}

    return await run_in_threadpool(query)


async def version_id(request: Request, model_id: object, number: int) -> str | None:
    """The id of version `number` of a model the API has already shown the caller."""
    (model,) = _ids([model_id]) or (None,)
    if model is None:
        return None

    def query() -> str | None:
        with request.app.state.db.session_scope() as session:
            found = session.scalar(
                select(ModelVersion.id).where(
                    ModelVersion.model_id == model, ModelVersion.version == number, ModelVersion.deleted_at.is_(None)
                )
            )
        return str(found) if found else None

    return await run_in_threadpool(query)
