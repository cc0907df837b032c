"""The bootstrap commands scripts use, on the embedded SQLite default: `tessera user create`,
`tessera api-key create --json` and an idempotent `tessera seed`."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from shared.core.auth import Authenticator
from shared.core.security import verify_password
from shared.db.base import Base
from shared.db.models import (
    Deployment,
    DeploymentHistory,
    Experiment,
    ExperimentRun,
    Model,
    ModelVersion,
    Organization,
    OrganizationMembership,
    Project,
    User,
)
from shared.db.session import Database
from tessera.cli import app


@pytest.fixture
def embedded(tmp_path, monkeypatch):
    """A fresh embedded installation; the CLI reads its configuration from the environment."""
    url = f"sqlite:///{tmp_path / 'tessera.db'}"
    monkeypatch.setenv("TESSERA_DATABASE_URL", url)
    monkeypatch.setenv("TESSERA_DATA_DIR", str(tmp_path))
    runner = CliRunner()
    assert runner.invoke(app, ["migrate"]).exit_code == 0
    db = Database(url)
    yield runner, db
    db.dispose()


def _run(runner, *args: str) -> tuple[int, str]:
    """Exit code and stdout (the key alone goes there; explanations go to stderr)."""
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout


def test_user_create_makes_or_joins_an_organization(embedded):
    runner, db = embedded
    for email, password in (("Root@Example.com", "s3cret-pass"), ("dev@example.com", "another-pass")):
        code, out = _run(runner, "user", "create", "--email", email, "--password", password, "--org", "labs")
        assert code == 0, out
    # Re-running with the same password is fine; a different one is refused.
    assert _run(runner, "user", "create", "--email", "dev@example.com", "--password", "another-pass")[0] == 0
    assert _run(runner, "user", "create", "--email", "dev@example.com", "--password", "not-the-same")[0] == 1
    assert _run(runner, "user", "create", "--email", "x@example.com", "--password", "short")[0] == 1

    with db.session_scope() as session:
        roles = dict(
            session.execute(
                select(User.email, OrganizationMembership.role)
                .join(OrganizationMembership, OrganizationMembership.user_id == User.id)
                .join(Organization, Organization.id == OrganizationMembership.organization_id)
                .where(Organization.slug == "labs")
            ).all()
        )
        assert roles == {"root@example.com": "owner", "dev@example.com": "member"}
        root = session.scalar(select(User).where(User.email == "root@example.com"))
        assert verify_password(root.password_hash, "s3cret-pass")
        assert session.scalar(select(Project.slug).join(Organization).where(Organization.slug == "labs")) == "default"
        assert session.scalar(select(User).where(User.email == "x@example.com")) is None


def test_api_key_create_prints_a_working_key_once(embedded):
    runner, db = embedded
    _run(runner, "user", "create", "--email", "ci@example.com", "--password", "ci-password", "--org", "ml")
    code, out = _run(
        runner,
        "api-key",
        "create",
        "--email",
        "ci@example.com",
        "--scopes",
        "tracking:write,registry:read",
        "--project",
        "default",
        "--expires-in-days",
        "30",
        "--json",
    )
    assert code == 0, out
    created = json.loads(out)
    assert created["scopes"] == ["registry:read", "tracking:write"] and created["expires_at"]
    with db.session_scope() as session:
        principal = Authenticator("unused").authenticate(session, f"Bearer {created['key']}")
        project = session.scalar(select(Project).where(Project.slug == "default"))
        assert (principal.email, principal.project_id) == ("ci@example.com", project.id)
        assert principal.has_scope("tracking:write") and not principal.has_scope("deployments:read")

    code, out = _run(runner, "api-key", "create", "--email", "ci@example.com", "--scopes", "admin")
    assert code == 0 and out.strip().startswith("tsk_")
    for refused in (
        ("--email", "ci@example.com", "--scopes", "root"),
        ("--email", "nobody@example.com", "--scopes", "admin"),
        ("--email", "ci@example.com", "--scopes", "admin", "--project", "nope"),
    ):
        assert _run(runner, "api-key", "create", *refused)[0] == 1, refused


def _everything(db) -> dict:
    with db.session_scope() as session:
        return {
            table.name: sorted(map(repr, session.execute(select(table)).all())) for table in Base.metadata.sorted_tables
        }


def test_seed_populates_once_and_then_changes_nothing(embedded):
    runner, db = embedded
    code, out = _run(runner, "seed")
    assert code == 0, out
    assert "ada@example.com" in out and "tessera-demo" in out
    first = _everything(db)
    with db.session_scope() as session:
        assert session.query(User).count() == 3
        assert session.query(Organization).count() == 1
        assert session.query(Project).count() == 2
        assert session.query(Model).count() == 2
        assert session.query(ModelVersion).count() == 3
        # ...and experiments with finished runs, for the web UI
        assert session.query(Experiment).count() == 2
        assert session.query(ExperimentRun).filter_by(status="FINISHED").count() == 5
        # Every version is the model its training run logged, in MLflow's format in the artifact store.
        for version in session.scalars(select(ModelVersion)):
            assert version.run_id and version.source == f"runs:/{version.run_id.hex}/model"
            assert version.signature, version.source
        # The deployment served version 1 and asks the worker to start version 2.
        deployment = session.scalar(select(Deployment))
        assert (deployment.target, deployment.status) == ("local", "deploying")
        history = session.scalars(select(DeploymentHistory).order_by(DeploymentHistory.created_at)).all()
        assert [(entry.action, entry.outcome) for entry in history] == [("deploy", "succeeded"), ("deploy", "pending")]
        assert history[1].from_version_id == history[0].to_version_id != history[1].to_version_id

    code, out = _run(runner, "seed")
    assert code == 0, out
    assert "Nothing to do" in out
    assert _everything(db) == first
