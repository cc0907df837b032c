"""Registered models and versions rendered by PostgreSQL (services/registry/domain/registry_json.py) are
exactly what api/mlflow_registry.py's model_json and version_json make of the same rows: every field,
optional ones left out, tags in key order, aliases, the latest version of each stage (deleted versions
left out), and timestamps at microsecond offsets where `int(t.timestamp() * 1000)` rounds."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import selectinload

from services.registry.api.mlflow_registry import model_json, version_json
from services.registry.domain import registry_json, versions
from shared.db.models import LoggedModel, Model, ModelAlias, ModelVersion
from tests.registry.model_builders import make_run

BASE = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


def _moment(i: int) -> datetime:
    return BASE + timedelta(microseconds=i * 1_000_003 + (i % 11))


def test_models_and_versions_rendered_by_postgresql_equal_the_python_rendering(db_session, tenant):
    tracked = make_run(db_session, tenant.project_id)
    logged = LoggedModel(
        experiment_id=tracked.experiment.id, name="m", artifact_location="mlflow-artifacts:/x", status="READY"
    )
    db_session.add(logged)
    db_session.flush()
    full = Model(
        project_id=tenant.project_id,
        name=f"full-{uuid.uuid4().hex[:6]}",
        description="",
        tags={"zeta": "1", "alpha": 'a "b" \\ c\n', "Émile": "é ☃", "Zed": "2"},
        created_by=tenant.user_id,
        created_at=_moment(1),
        updated_at=_moment(2),
    )
    bare = Model(
        project_id=tenant.project_id, name=f"bare-{uuid.uuid4().hex[:6]}", created_at=_moment(3), updated_at=_moment(4)
    )
    db_session.add_all([full, bare])
    db_session.flush()
    stages = ["development", "staging", "production", "staging", "archived", "production", "development"]
    made = []
    for number, stage in enumerate(stages, start=1):
        version = ModelVersion(
            model_id=full.id,
            version=number,
            stage=stage,
            status="READY" if number != 2 else "PENDING_REGISTRATION",
            description=None if number % 2 else f"v{number}",
            source=None if number == 3 else f"runs:/{tracked.run_id}/model",
            run_id=tracked.run.id if number % 3 else None,
            logged_model_id=logged.id if number == 4 else None,
            run_link="http://link" if number == 5 else None,
            tags={"b": "2", "a": "1"} if number == 1 else {},
            created_by=tenant.user_id if number != 6 else None,
            created_at=_moment(10 + number),
            updated_at=_moment(20 + number),
            # The newest production version is deleted: the previous one is the stage's latest.
            deleted_at=_moment(30) if number == 6 else None,
        )
        db_session.add(version)
        made.append(version)
    db_session.flush()
    db_session.add_all(
        [
            ModelAlias(model_id=full.id, alias="champion", model_version_id=made[2].id),
            ModelAlias(model_id=full.id, alias="b-side", model_version_id=made[2].id),
            ModelAlias(model_id=full.id, alias="old", model_version_id=made[5].id),
        ]
    )
    db_session.flush()
    db_session.expire_all()

    models = db_session.scalars(
        select(Model).where(Model.id.in_([full.id, bare.id])).options(selectinload(Model.aliases))
    ).all()
    latest = versions.latest_versions(db_session, [m.id for m in models])
    in_database = dict(
        db_session.execute(select(Model.id, registry_json.model_json()).where(Model.id.in_([full.id, bare.id]))).all()
    )
    for model in models:
        python = model_json(model, latest[model.id])
        database = json.loads(in_database[model.id])
        assert database == python
    assert [v["version"] for v in json.loads(in_database[full.id])["latest_versions"]] == ["3", "4", "5", "7"]

    every = db_session.scalars(select(ModelVersion).where(ModelVersion.model_id == full.id)).all()
    rendered = dict(
        db_session.execute(
            select(ModelVersion.id, registry_json.version_json(ModelVersion, Model.name))
            .join(Model, Model.id == ModelVersion.model_id)
            .where(ModelVersion.model_id == full.id)
        ).all()
    )
    for version in every:
        assert json.loads(rendered[version.id]) == version_json(version)
