"""A training loop's write calls on their hot path (services/tracking/api/hot_writes.py), through the live
server and the real mlflow client: what they store, that they leave no audit row per point, and that the
usual answers — errors, tenancy, roles, a revoked key — are the same as on the usual path."""

from __future__ import annotations

import math
import time
import uuid
from functools import partial

import httpx
import pytest
from mlflow import MlflowClient
from mlflow.entities import Metric
from mlflow.exceptions import MlflowException
from sqlalchemy import func, select

from shared.core import auth
from shared.db.models import ApiKey, AuditLog, Organization, User
from tests import factories
from tests.conftest import point_mlflow_at
from tests.tracking.metric_points import check_a_point_sent_twice_is_stored_once

API = "/api/2.0/mlflow"


@pytest.fixture
def tenant(db, settings) -> factories.Tenant:
    with db.session_scope() as session:
        return factories.make_tenant(session, jwt_secret=settings.jwt_secret)


def _client(live_server, monkeypatch, token: str) -> MlflowClient:
    """A client calling as `token` (until the next call: the mlflow client reads it from the environment)."""
    point_mlflow_at(monkeypatch, live_server.url, token)
    return MlflowClient(live_server.url)


def _error_code(call) -> str:
    with pytest.raises(MlflowException) as raised:
        call()
    return raised.value.error_code


def _audit_paths(db, org_id: uuid.UUID) -> dict[str, int]:
    with db.session_scope() as session:
        rows = session.execute(
            select(AuditLog.path, func.count()).where(AuditLog.organization_id == org_id).group_by(AuditLog.path)
        )
        return {path.rsplit("/", 2)[-2] + "/" + path.rsplit("/", 1)[-1]: count for path, count in rows}


def test_a_training_loop_writes_its_run_and_leaves_audit_rows_only_for_state_changes(
    live_server, monkeypatch, db, tenant
):
    client = _client(live_server, monkeypatch, tenant.api_key)
    run_id = client.create_run(client.create_experiment(f"hot-{uuid.uuid4().hex[:8]}")).info.run_id
    for step, value in enumerate([0.9, 0.5, float("nan"), 0.25]):
        client.log_metric(run_id, "loss", value, step=step, timestamp=1000 + step)
    client.log_metric(run_id, "loss", 7.0, step=1, timestamp=2000)  # an older step: not the latest value
    client.log_batch(run_id, metrics=[Metric("acc", i / 10, 3000 + i, i) for i in range(10)])
    client.log_param(run_id, "lr", "0.01")
    client.log_param(run_id, "lr", "0.01")  # the same value again is a no-op
    client.set_tag(run_id, "phase", "warmup")
    client.set_tag(run_id, "phase", "train")

    run = client.get_run(run_id)
    assert run.data.metrics == {"loss": 0.25, "acc": 0.9}
    assert run.data.params == {"lr": "0.01"}
    assert run.data.tags["phase"] == "train"
    history = [(m.step, m.value) for m in client.get_metric_history(run_id, "loss")]
    assert [step for step, _ in history] == [0, 1, 1, 2, 3]
    assert math.isnan(history[3][1]) and history[4][1] == 0.25
    assert len(client.get_metric_history(run_id, "acc")) == 10

    client.set_terminated(run_id)
    run = client.get_run(run_id)
    assert (run.info.status, run.info.lifecycle_stage) == ("FINISHED", "active") and run.info.end_time

    audited = _audit_paths(db, tenant.org_id)
    assert audited.get("runs/create") == 1 and audited.get("experiments/create") == 1
    assert audited.get("runs/update") == 1
    assert not {"runs/log-metric", "runs/log-batch", "runs/log-parameter", "runs/set-tag"} & set(audited)


def test_the_usual_answers_stay_for_what_the_hot_path_does_not_serve(live_server, monkeypatch, tenant):
    client = _client(live_server, monkeypatch, tenant.api_key)
    experiment_id = client.create_experiment(f"hot-{uuid.uuid4().hex[:8]}")
    run_id = client.create_run(experiment_id).info.run_id
    client.log_param(run_id, "lr", "0.01")

    assert _error_code(lambda: client.log_param(run_id, "lr", "0.1")) == "INVALID_PARAMETER_VALUE"
    assert _error_code(lambda: client.log_metric(run_id, "bad key!", 1.0)) == "INVALID_PARAMETER_VALUE"
    assert _error_code(lambda: client.log_metric(uuid.uuid4().hex, "loss", 1.0)) == "RESOURCE_DOES_NOT_EXIST"
    client.set_tag(run_id, "mlflow.runName", "renamed")  # renames the run: the usual path
    assert client.get_run(run_id).info.run_name == "renamed"

    client.delete_run(run_id)
    for call in (
        lambda: client.log_metric(run_id, "loss", 1.0),
        lambda: client.log_batch(run_id, metrics=[Metric("loss", 1.0, 1, 0)]),
        lambda: client.log_param(run_id, "other", "1"),
        lambda: client.set_tag(run_id, "phase", "x"),
    ):
        assert _error_code(call) == "INVALID_PARAMETER_VALUE"


def test_a_point_sent_twice_is_stored_once_on_the_hot_path(live_server, tenant):
    with httpx.Client(base_url=live_server.url, headers=tenant.headers) as http:
        check_a_point_sent_twice_is_stored_once(http)  # type: ignore[arg-type]


def test_roles_and_a_revoked_key_apply_at_once(live_server, monkeypatch, db, settings, tenant):
    owner = _client(live_server, monkeypatch, tenant.api_key)
    run_id = owner.create_run(owner.create_experiment(f"hot-{uuid.uuid4().hex[:8]}")).info.run_id
    with db.session_scope() as session:
        user, org = session.get(User, tenant.user_id), session.get(Organization, tenant.org_id)
        key_row, key = factories.make_api_key(session, user=user, org=org, scopes=["tracking:write"])
        _, read_only = factories.make_api_key(session, user=user, org=org, scopes=["tracking:read"])
        stranger = factories.make_tenant(session, jwt_secret=settings.jwt_secret)
    for token, expected in ((read_only, "PERMISSION_DENIED"), (stranger.api_key, "RESOURCE_DOES_NOT_EXIST")):
        client = _client(live_server, monkeypatch, token)
        client.search_experiments()  # the caller is remembered from here on
        assert _error_code(partial(client.log_metric, run_id, "loss", 1.0)) == expected
        assert _error_code(partial(client.log_param, run_id, "p", "1")) == expected

    writer = _client(live_server, monkeypatch, key)
    writer.log_metric(run_id, "loss", 1.0, step=0)
    writer.log_metric(run_id, "loss", 1.0, step=1)  # served from the remembered caller and role
    revoked = httpx.delete(f"{live_server.url}/api/v1/api-keys/{key_row.id}", headers=tenant.headers)
    assert revoked.status_code == 200, revoked.text
    # The server that revoked it forgets the key at once (other processes: within IDENTITY_CACHE_TTL_S).
    assert _error_code(lambda: writer.log_metric(run_id, "loss", 1.0, step=2)) == "UNAUTHENTICATED"
    with db.session_scope() as session:
        assert session.get(ApiKey, key_row.id).revoked_at is not None
    owner = _client(live_server, monkeypatch, tenant.api_key)  # the client reads its token from the environment
    assert [m.step for m in owner.get_metric_history(run_id, "loss")] == [0, 1]


def test_a_hot_answer_keeps_the_request_id_and_the_size_limit(live_server, tenant, settings):
    with httpx.Client(base_url=live_server.url, headers=tenant.headers) as http:
        experiment_id = http.post(f"{API}/experiments/create", json={"name": f"hot-{uuid.uuid4().hex[:8]}"}).json()
        run = http.post(f"{API}/runs/create", json=experiment_id).json()["run"]["info"]["run_id"]
        point = {"run_id": run, "key": "loss", "value": 0.5, "timestamp": 1}
        for step in range(3):  # the first call teaches the app the path; the next ones skip its layers
            answer = http.post(f"{API}/runs/log-metric", json={**point, "step": step}, headers={"x-request-id": "r-1"})
            assert (answer.status_code, answer.json(), answer.headers["x-request-id"]) == (200, {}, "r-1")
        padded = b'{"run_id": "%s", "key": "loss", "value": 1, "timestamp": 1}' % run.encode()
        too_large = padded + b" " * settings.max_request_bytes
        answer = http.post(f"{API}/runs/log-metric", content=too_large, headers={"content-type": "application/json"})
        assert answer.status_code == 413 and answer.json()["error_code"] == "PAYLOAD_TOO_LARGE"


def _fresh_key(db, tenant) -> dict[str, str]:
    """Headers with a new all-scopes key of the tenant's user: its first call takes the usual path (the
    caller is not remembered yet). Writing a key empties the process's identity cache (shared.core.auth),
    so make it before the calls that teach the server the tenant's key, and call `_remember` after using
    it (its first call records that the key was used, which empties the cache again)."""
    with db.session_scope() as session:
        user, org = session.get(User, tenant.user_id), session.get(Organization, tenant.org_id)
        _, key = factories.make_api_key(session, user=user, org=org)
    return {"Authorization": f"Bearer {key}"}


def _remember(http: httpx.Client, experiment_id: str) -> None:
    """A usual-path read that has the server remember the client's key and its role in the project, so
    that its next write takes the hot path."""
    assert http.get(f"{API}/experiments/get", params={"experiment_id": experiment_id}).status_code == 200


def _without_run(info: dict, run_id: str) -> dict:
    """A run_info with what names the run itself (id, name, the id in the artifact URI) left out."""
    return {
        k: v.replace(run_id, "<run>") if isinstance(v, str) else v
        for k, v in info.items()
        if k not in ("run_id", "run_uuid", "run_name")
    }


def test_update_run_moves_a_run_through_every_status_and_answers_as_the_usual_path(live_server, db, tenant):
    fresh = _fresh_key(db, tenant)
    with httpx.Client(base_url=live_server.url, headers=tenant.headers) as http:
        experiment_id = http.post(f"{API}/experiments/create", json={"name": f"hot-{uuid.uuid4().hex[:8]}"}).json()
        created = [http.post(f"{API}/runs/create", json={**experiment_id, "start_time": 5}).json() for _ in range(2)]
        usual_run, hot_run = (run["run"]["info"]["run_id"] for run in created)
        end = {"status": "FINISHED", "end_time": 99}

        usual = http.post(f"{API}/runs/update", json={"run_id": usual_run, **end}, headers=fresh)
        _remember(http, experiment_id["experiment_id"])
        hot = http.post(f"{API}/runs/update", json={"run_id": hot_run, **end})
        assert usual.status_code == hot.status_code == 200
        assert _without_run(hot.json()["run_info"], hot_run) == _without_run(usual.json()["run_info"], usual_run)
        assert hot.json()["run_info"]["run_id"] == hot_run

        # As in MLflow, any status may follow any other; an end time stays until another is sent.
        for status in ("RUNNING", "KILLED", "FAILED", "SCHEDULED", "FINISHED"):
            answer = http.post(f"{API}/runs/update", json={"run_id": hot_run, "status": status}).json()
            assert (answer["run_info"]["status"], answer["run_info"]["end_time"]) == (status, 99)
        answer = http.post(f"{API}/runs/update", json={"run_id": hot_run, "end_time": 123}).json()["run_info"]
        assert (answer["status"], answer["end_time"]) == ("FINISHED", 123)
        stored = http.get(f"{API}/runs/get", params={"run_id": hot_run}).json()["run"]["info"]
        assert (stored["status"], stored["end_time"]) == ("FINISHED", 123)

        # What the hot path leaves to the usual one answers as it always did.
        renamed = http.post(f"{API}/runs/update", json={"run_id": hot_run, "run_name": "renamed"}).json()
        assert renamed["run_info"]["run_name"] == "renamed"
        for body, code in (
            ({"run_id": hot_run, "status": "DONE"}, "INVALID_PARAMETER_VALUE"),
            ({"run_id": hot_run, "end_time": "soon"}, "INVALID_PARAMETER_VALUE"),
            ({"run_id": uuid.uuid4().hex, "status": "FINISHED"}, "RESOURCE_DOES_NOT_EXIST"),
        ):
            answer = http.post(f"{API}/runs/update", json=body)
            assert answer.status_code != 200 and answer.json()["error_code"] == code, answer.text
        assert http.post(f"{API}/runs/delete", json={"run_id": hot_run}).status_code == 200
        deleted = http.post(f"{API}/runs/update", json={"run_id": hot_run, "status": "KILLED"})
        assert deleted.json()["error_code"] == "INVALID_PARAMETER_VALUE", deleted.text
        stored = http.get(f"{API}/runs/get", params={"run_id": hot_run}).json()["run"]["info"]
        assert stored["status"] == "FINISHED"


def test_a_param_is_logged_once_and_a_conflict_answers_as_the_usual_path(live_server, db, tenant):
    fresh = _fresh_key(db, tenant)
    with httpx.Client(base_url=live_server.url, headers=tenant.headers) as http:
        experiment_id = http.post(f"{API}/experiments/create", json={"name": f"hot-{uuid.uuid4().hex[:8]}"}).json()
        run = http.post(f"{API}/runs/create", json=experiment_id).json()["run"]["info"]["run_id"]
        param = {"run_id": run, "key": "lr", "value": "0.01"}
        assert http.post(f"{API}/runs/log-parameter", json=param).json() == {}
        assert http.post(f"{API}/runs/log-parameter", json=param).json() == {}  # the same value: a no-op

        # The same conflict, first from a caller not remembered (the usual path), then from one who is: the
        # hot path finds the other value and leaves the request to the usual path, so the answers match.
        usual = http.post(f"{API}/runs/log-parameter", json={**param, "value": "0.1"}, headers=fresh)
        _remember(http, experiment_id["experiment_id"])
        hot = http.post(f"{API}/runs/log-parameter", json={**param, "value": "0.1"})
        assert usual.status_code == hot.status_code == 400
        assert usual.json() == hot.json() and hot.json()["error_code"] == "INVALID_PARAMETER_VALUE"
        params = http.get(f"{API}/runs/get", params={"run_id": run}).json()["run"]["data"]["params"]
        assert params == [{"key": "lr", "value": "0.01"}]


def test_set_tag_overwrites_and_its_errors_answer_as_the_usual_path(live_server, db, tenant):
    fresh = _fresh_key(db, tenant)
    with httpx.Client(base_url=live_server.url, headers=tenant.headers) as http:
        experiment_id = http.post(f"{API}/experiments/create", json={"name": f"hot-{uuid.uuid4().hex[:8]}"}).json()
        run = http.post(f"{API}/runs/create", json=experiment_id).json()["run"]["info"]["run_id"]
        for value in ("warmup", "train", "train"):
            assert http.post(f"{API}/runs/set-tag", json={"run_id": run, "key": "phase", "value": value}).json() == {}
        tags = http.get(f"{API}/runs/get", params={"run_id": run}).json()["run"]["data"]["tags"]
        assert {"key": "phase", "value": "train"} in tags

        missing = {"run_id": uuid.uuid4().hex, "key": "phase", "value": "x"}
        usual = http.post(f"{API}/runs/set-tag", json=missing, headers=fresh)
        _remember(http, experiment_id["experiment_id"])
        hot = http.post(f"{API}/runs/set-tag", json=missing)
        assert usual.status_code == hot.status_code == 404
        assert {k: v for k, v in usual.json().items() if k != "request_id"} == {
            k: v for k, v in hot.json().items() if k != "request_id"
        }


def test_a_steady_caller_stays_on_the_hot_path_past_the_identity_cache_ttl(live_server, monkeypatch, db, tenant):
    """The caller and their role are read again in the background shortly before they end, so a training
    loop's calls do not fall to the usual path (which leaves an audit row per call) every TTL."""
    monkeypatch.setattr(auth, "IDENTITY_CACHE_TTL_S", 1.0)
    monkeypatch.setattr(auth, "IDENTITY_REFRESH_AHEAD_S", 0.5)
    with httpx.Client(base_url=live_server.url, headers=tenant.headers) as http:
        experiment_id = http.post(f"{API}/experiments/create", json={"name": f"hot-{uuid.uuid4().hex[:8]}"}).json()
        run = http.post(f"{API}/runs/create", json=experiment_id).json()["run"]["info"]["run_id"]
        point = {"run_id": run, "key": "loss", "value": 0.5, "timestamp": 1}
        _remember(http, experiment_id["experiment_id"])
        before = _audit_paths(db, tenant.org_id).get("runs/log-metric", 0)
        step, deadline = 0, time.monotonic() + 3.5  # three TTLs and a half
        while time.monotonic() < deadline:
            assert http.post(f"{API}/runs/log-metric", json={**point, "step": step}).status_code == 200
            step += 1
            time.sleep(0.02)
        assert _audit_paths(db, tenant.org_id).get("runs/log-metric", 0) == before
        history = http.get(f"{API}/metrics/get-history", params={"run_id": run, "metric_key": "loss"}).json()
        assert len(history["metrics"]) == step
