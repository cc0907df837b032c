"""The hot request path of metric logging: how little it asks the database, and that remembering callers
and roles (shared.core.auth) never outlives a revocation or a role change made in the same process."""

from __future__ import annotations

import uuid

from sqlalchemy import event, text

from services.tracking.domain import metrics
from shared.db.models import Organization, User
from tests.factories import bearer, make_api_key, make_member
from tests.tracking.metric_points import check_a_point_sent_twice_is_stored_once

API = "/api/2.0/mlflow"


def _run(client, headers) -> str:
    name = f"e-{uuid.uuid4().hex[:8]}"
    created = client.post(f"{API}/experiments/create", json={"name": name}, headers=headers)
    experiment_id = created.json()["experiment_id"]
    run = client.post(f"{API}/runs/create", json={"experiment_id": experiment_id}, headers=headers)
    return run.json()["run"]["info"]["run_id"]


def _log(client, headers, run_id: str, step: int):
    body = {"run_id": run_id, "key": "loss", "value": 0.5, "timestamp": 1, "step": step}
    return client.post(f"{API}/runs/log-metric", json=body, headers=headers)


def test_a_log_metric_of_a_known_caller_is_three_statements(client, db_session, tenant):
    run_id = _run(client, tenant.headers)
    assert _log(client, tenant.headers, run_id, 0).status_code == 200
    statements: list[str] = []

    def record(_conn, _cursor, statement, *_args):
        verb = statement.split(None, 1)[0]
        if verb not in ("SAVEPOINT", "RELEASE"):  # the test's rolled-back transaction, not the request's
            statements.append(verb)

    engine = db_session.get_bind().engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        assert _log(client, tenant.headers, run_id, 1).status_code == 200
    finally:
        event.remove(engine, "before_cursor_execute", record)
    # The run with its project id, the point with its latest value, the audit row: no key, role or
    # project look-up while the caller is remembered.
    assert statements == ["SELECT", "WITH", "INSERT"], statements


def test_a_remembered_key_stops_working_as_soon_as_it_is_revoked(client, db_session, tenant):
    org = db_session.get(Organization, tenant.org_id)
    user = db_session.get(User, tenant.user_id)
    row, key = make_api_key(db_session, user=user, org=org, scopes=["tracking:write"])
    run_id = _run(client, tenant.headers)
    assert _log(client, bearer(key), run_id, 0).status_code == 200

    assert client.delete(f"/api/v1/api-keys/{row.id}", headers=tenant.headers).status_code == 200

    response = _log(client, bearer(key), run_id, 1)
    assert response.status_code == 401, response.text


def test_a_remembered_role_follows_a_role_change_at_once(client, db_session, tenant, settings):
    member = make_member(db_session, org_id=tenant.org_id, role="member", jwt_secret=settings.jwt_secret)
    run_id = _run(client, tenant.headers)
    assert _log(client, member.headers, run_id, 0).status_code == 200

    demoted = client.patch(
        f"/api/v1/orgs/{tenant.org_id}/members/{member.user_id}", json={"role": "viewer"}, headers=tenant.headers
    )
    assert demoted.status_code == 200, demoted.text
    assert _log(client, member.headers, run_id, 1).status_code == 403

    removed = client.delete(f"/api/v1/orgs/{tenant.org_id}/members/{member.user_id}", headers=tenant.headers)
    assert removed.status_code == 204, removed.text
    assert _log(client, member.headers, run_id, 2).status_code == 404


def test_metric_ingest_can_commit_without_waiting_for_the_wal_flush(db_session):
    metrics.commit_without_wal_flush(db_session)
    assert db_session.execute(text("SHOW synchronous_commit")).scalar() == "off"
    db_session.rollback()
    # SET LOCAL: the next transaction is durable again.
    assert db_session.execute(text("SHOW synchronous_commit")).scalar() == "on"


def test_deleting_a_run_row_deletes_its_points(client, db_session, tenant):
    # run_metrics has no foreign key (its per-row check cost half a batch); a trigger keeps the cascade.
    kept, dropped = _run(client, tenant.headers), _run(client, tenant.headers)
    for run_id in (kept, dropped):
        assert _log(client, tenant.headers, run_id, 1).status_code == 200

    db_session.execute(text("DELETE FROM experiment_runs WHERE id = :id"), {"id": uuid.UUID(dropped)})

    counts = dict(db_session.execute(text("SELECT run_id, count(*) FROM run_metrics GROUP BY run_id")).all())
    assert counts.get(uuid.UUID(dropped)) is None and counts[uuid.UUID(kept)] == 1


def test_a_point_sent_twice_is_stored_once(client, tenant):
    client.headers.update(tenant.headers)
    check_a_point_sent_twice_is_stored_once(client)
