"""A write the database's constraints refuse answers what the lookup before it would have, rule by rule,
on PostgreSQL and on SQLite: the loser of a race hears what it would have heard coming second."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from shared.core.integrity import error_for
from shared.core.settings import Settings
from shared.db.migrate import upgrade
from shared.db.models import Experiment, ExperimentRun, RunParam, User
from shared.db.session import Database
from tests import factories


@pytest.fixture(scope="module")
def sqlite_db(tmp_path_factory) -> Iterator[Database]:
    url = f"sqlite:///{tmp_path_factory.mktemp('integrity') / 'tessera.db'}"
    upgrade(url)
    db = Database(url)
    yield db
    db.dispose()


@pytest.fixture(params=["postgresql", "sqlite"])
def session(request) -> Iterator[Session]:
    if request.param == "postgresql":
        yield request.getfixturevalue("db_session")
        return
    session = request.getfixturevalue("sqlite_db").sessionmaker()
    try:
        yield session
    finally:
        session.rollback()
        session.close()


def _refused(session: Session, *rows: object) -> IntegrityError:
    with pytest.raises(IntegrityError) as refused, session.begin_nested():
        session.add_all(rows)
        session.flush()
    return refused.value


def test_mlflow_duplicates_answer_resource_already_exists(session):
    tenant = factories.make_tenant(session, jwt_secret=Settings().jwt_secret)
    experiment = Experiment(project_id=tenant.project_id, name="sweep")
    session.add(experiment)
    session.flush()
    error = error_for(_refused(session, Experiment(project_id=tenant.project_id, name="sweep")))
    assert (error.code, error.status_code, error.message) == (
        "RESOURCE_ALREADY_EXISTS", 400, "Experiment 'sweep' already exists."
    )  # fmt: skip

    run = ExperimentRun(experiment_id=experiment.id)
    session.add(run)
    session.flush()
    session.add(RunParam(run_id=run.id, key="lr", value="0.1"))
    session.flush()
    error = error_for(_refused(session, RunParam(run_id=run.id, key="lr", value="0.2")))
    assert (error.code, error.status_code, error.message) == (
        "RESOURCE_ALREADY_EXISTS", 400, "Param 'lr' was already logged for this run."
    )  # fmt: skip


def test_native_duplicates_answer_the_native_code(session):
    email = f"{uuid.uuid4().hex[:8]}@example.com"
    session.add(User(email=email))
    session.flush()
    error = error_for(_refused(session, User(email=email)))
    assert (error.code, error.status_code, error.message) == (
        "CONFLICT", 409, f"A user with email '{email}' already exists"
    )  # fmt: skip


def test_a_missing_reference_is_not_a_duplicate(session):
    error = error_for(_refused(session, Experiment(project_id=uuid.uuid4(), name="orphan")))
    # PostgreSQL says which kind of reference failed; SQLite only that one did.
    on_postgresql = session.get_bind().dialect.name == "postgresql"
    assert (error.code, error.status_code) == (("RESOURCE_DOES_NOT_EXIST", 404) if on_postgresql else ("CONFLICT", 409))
