"""Lineage from a run to the model versions registered from it (the registry shows it on versions,
the tracking views on runs)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.tracking.domain import runs
from shared.core.auth import Access
from shared.db.models import Model, ModelVersion


@dataclass(frozen=True)
class RunModelVersion:
    model_id: str
    model_name: str
    version: int
    stage: str
    status: str


def model_versions_of_run(session: Session, access: Access, run_id: str | None) -> list[RunModelVersion]:
    """Live model versions whose source run is `run_id`, oldest first. Raises NotFound if the caller
    cannot read the run; versions are in the run's project by construction of the registry."""
    run = runs.get_run_row(session, access, run_id)
    rows = session.execute(
        select(Model.id, Model.name, ModelVersion.version, ModelVersion.stage, ModelVersion.status)
        .join(Model, Model.id == ModelVersion.model_id)
        .where(ModelVersion.run_id == run.id, ModelVersion.deleted_at.is_(None), Model.deleted_at.is_(None))
        .order_by(ModelVersion.created_at, ModelVersion.version)
    )
    return [RunModelVersion(str(mid), name, version, stage, status) for mid, name, version, stage, status in rows]
