"""The deployments API and the gateway's guards, each test in a rolled-back transaction (no model servers)."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.db.models import (
    AuditLog,
    Deployment,
    DeploymentHistory,
    DeploymentServer,
    Model,
    ModelAlias,
    ModelVersion,
    Organization,
    OutboxEvent,
    User,
)
from tests import factories
from tests.conftest import in_test_transaction


def make_version(session: Session, project_id: uuid.UUID, *, number: int = 1, model: Model | None = None):
    if model is None:
        model = Model(project_id=project_id, name=factories.unique("model"), tags={})
        session.add(model)
        session.flush()
    model.last_version = number
    version = ModelVersion(
        model_id=model.id,
        version=number,
        artifact_uri=f"mlflow-artifacts:/{uuid.uuid4().hex}/models/m-1/artifacts",
        metrics={},
        tags={},
    )
    session.add(version)
    session.flush()
    return version


def serving(session: Session, deployment_id: str) -> Deployment:
    """As if the worker had finished the first rollout."""
    deployment = session.get(Deployment, uuid.UUID(deployment_id))
    deployment.status = "healthy"
    session.execute(
        DeploymentHistory.__table__.update()
        .where(DeploymentHistory.deployment_id == deployment.id)
        .values(outcome="succeeded")
    )
    session.flush()
    return deployment


@pytest.fixture
def version(db_session, tenant) -> ModelVersion:
    return make_version(db_session, tenant.project_id)


def create(client, tenant, version, **extra):
    body = {"name": factories.unique("dep"), "model_version_id": str(version.id), **extra}
    return client.post("/api/v1/deployments", json=body, headers=tenant.headers)


def test_create_requests_a_rollout_through_the_outbox_and_records_it(client, db_session, tenant, version):
    response = create(client, tenant, version, canary={"max_error_rate": 0.1, "min_requests": 10})

    assert response.status_code == 201, response.text
    body = response.json()
    assert (body["status"], body["project_id"], body["servers"]) == ("deploying", str(tenant.project_id), [])
    assert body["config"]["canary"]["max_error_rate"] == 0.1
    history = client.get(f"/api/v1/deployments/{body['id']}/history", headers=tenant.headers).json()["items"]
    assert [(row["action"], row["outcome"], row["to_version_id"]) for row in history] == [
        ("deploy", "pending", str(version.id))
    ]
    assert history[0]["actor_id"] == str(tenant.user_id)
    # The newest: tests that commit (a live server's, the seed's) leave rollout events of their own.
    event = db_session.scalar(
        select(OutboxEvent)
        .where(OutboxEvent.event_type == "deployment.rollout_requested")
        .order_by(OutboxEvent.created_at.desc())
        .limit(1)
    )
    assert event.payload == {"deployment_id": body["id"], "history_id": history[0]["id"]}
    audit = db_session.scalar(select(AuditLog).where(AuditLog.object_id == body["id"]))
    assert audit.action == "deployment.create"


def test_a_second_change_while_one_is_in_progress_is_refused(client, db_session, tenant, version):
    deployment = create(client, tenant, version).json()
    serving(db_session, deployment["id"])
    other = make_version(db_session, tenant.project_id, number=2, model=db_session.get(Model, version.model_id))
    first = client.post(
        f"/api/v1/deployments/{deployment['id']}/canary",
        json={"model_version_id": str(other.id), "percent": 10},
        headers=tenant.headers,
    )
    assert first.status_code == 200, first.text

    again = client.post(
        f"/api/v1/deployments/{deployment['id']}/canary",
        json={"model_version_id": str(other.id), "percent": 30},
        headers=tenant.headers,
    )

    assert again.status_code == 409 and again.json()["error_code"] == "CONFLICT"


def test_a_canary_with_a_rollout_plan_starts_at_its_first_step(client, db_session, tenant, version):
    deployment = create(client, tenant, version).json()
    serving(db_session, deployment["id"])
    other = make_version(db_session, tenant.project_id, number=2, model=db_session.get(Model, version.model_id))
    url = f"/api/v1/deployments/{deployment['id']}/canary"
    refused = [
        client.post(url, json={"model_version_id": str(other.id), **body}, headers=tenant.headers)
        for body in ({"steps": [25, 5]}, {"steps": [0, 50]}, {"percent": 5, "steps": [5, 100]}, {})
    ]

    started = client.post(
        url,
        json={"model_version_id": str(other.id), "steps": [5, 25, 50, 100], "step_seconds": 30},
        headers=tenant.headers,
    )

    assert [response.status_code for response in refused] == [422] * 4
    assert started.status_code == 200, started.text
    assert started.json()["config"]["plan"] == {"steps": [5, 25, 50, 100], "step_seconds": 30, "step": 0}
    history = client.get(f"/api/v1/deployments/{deployment['id']}/history", headers=tenant.headers).json()["items"]
    assert (history[0]["action"], history[0]["details"]["percent"]) == ("canary", 5)


@pytest.mark.parametrize(
    ("path", "message"),
    [("promote", "no canary"), ("rollback", "No earlier healthy version")],
)
def test_promote_and_rollback_need_something_to_act_on(client, db_session, tenant, version, path, message):
    deployment = create(client, tenant, version).json()
    serving(db_session, deployment["id"])

    response = client.post(f"/api/v1/deployments/{deployment['id']}/{path}", headers=tenant.headers)

    assert response.status_code == 400 and response.json()["error_code"] == "INVALID_STATE"
    assert message in response.json()["message"]


def test_bad_input_is_refused(client, db_session, tenant, other_tenant, version):
    foreign = make_version(db_session, other_tenant.project_id)
    assert create(client, tenant, foreign).status_code == 404
    assert create(client, tenant, version, canary={"window_seconds": None, "max_requests": None}).status_code == 422
    assert create(client, tenant, version, target="elsewhere").status_code == 422
    first = create(client, tenant, version)
    duplicate = client.post(
        "/api/v1/deployments",
        json={"name": first.json()["name"], "model_version_id": str(version.id)},
        headers=tenant.headers,
    )
    assert duplicate.status_code == 400 and duplicate.json()["error_code"] == "RESOURCE_ALREADY_EXISTS"


def test_kserve_deployments_are_validated_at_creation_and_local_ones_have_no_manifest(client, tenant, version):
    refused = create(client, tenant, version, target="kserve", kserve={"min_replicas": 5, "max_replicas": 2})
    assert refused.status_code == 400
    assert "minReplicas (5) cannot be greater than maxReplicas (2)" in refused.json()["message"]

    local = create(client, tenant, version).json()
    response = client.get(f"/api/v1/deployments/{local['id']}/manifest", headers=tenant.headers)
    assert response.status_code == 400 and response.json()["error_code"] == "INVALID_STATE"


def test_tenancy_and_scopes(client, db_session, settings, tenant, other_tenant, version):
    deployment = create(client, tenant, version).json()
    url = f"/api/v1/deployments/{deployment['id']}"
    assert client.get(url, headers=other_tenant.headers).status_code == 404
    assert deployment["id"] not in [
        d["id"] for d in client.get("/api/v1/deployments", headers=other_tenant.headers).json()["items"]
    ]
    mine = client.get("/api/v1/deployments", headers=tenant.headers).json()["items"]
    assert deployment["id"] in [d["id"] for d in mine]

    user = factories.make_user(db_session)
    org = db_session.get(Organization, tenant.org_id)
    factories.add_org_member(db_session, org, user, "member")
    _, read_only = factories.make_api_key(db_session, user=user, org=org, scopes=["deployments:read"])
    headers = factories.bearer(read_only)
    assert client.get(url, headers=headers).status_code == 200
    refused = client.post(f"{url}/stop", headers=headers)
    assert refused.status_code == 403 and "deployments:write" in refused.json()["message"]


def test_the_gateway_authenticates_authorizes_and_reports_a_deployment_not_yet_serving(
    client, db_session, tenant, other_tenant, version
):
    deployment = create(client, tenant, version).json()
    url = f"/deployments/{deployment['id']}/invocations"
    _, tracking_key = factories.make_api_key(
        db_session,
        user=db_session.get(User, tenant.user_id),
        org=db_session.get(Organization, tenant.org_id),
        scopes=["tracking:read"],
    )

    assert client.post(url, json={}).status_code == 401
    assert client.post(url, json={}, headers=other_tenant.headers).status_code == 404
    assert client.post(url, json={}, headers=factories.bearer(tracking_key)).status_code == 403
    assert client.post(f"/deployments/{uuid.uuid4()}/invocations", json={}, headers=tenant.headers).status_code == 404
    not_serving = client.post(url, json={}, headers=tenant.headers)
    assert not_serving.status_code == 503 and not_serving.json()["error_code"] == "TEMPORARILY_UNAVAILABLE"
    assert "x-request-id" in not_serving.headers


def test_the_gateway_answers_malformed_ids_and_wrong_methods_as_fastapi_does(client, tenant):
    malformed = client.post("/deployments/not-a-uuid/invocations", json={}, headers=tenant.headers)
    assert malformed.status_code == 422 and malformed.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    assert "deployment_id" in malformed.json()["message"]
    wrong_method = client.get(f"/deployments/{uuid.uuid4()}/invocations", headers=tenant.headers)
    assert wrong_method.status_code == 405 and wrong_method.json()["error_code"] == "METHOD_NOT_ALLOWED"


def test_a_version_is_named_by_id_by_model_and_number_or_by_model_and_alias(client, db_session, tenant):
    v1 = make_version(db_session, tenant.project_id)
    model = db_session.get(Model, v1.model_id)
    v2 = make_version(db_session, tenant.project_id, number=2, model=model)
    db_session.add(ModelAlias(model_id=model.id, alias="champion", model_version_id=v2.id))
    db_session.flush()

    def deploy(**ref):
        body = {"name": factories.unique("dep"), **ref}
        return client.post("/api/v1/deployments", json=body, headers=tenant.headers)

    assert deploy(model_version_id=str(v1.id)).json()["model_version_id"] == str(v1.id)
    assert deploy(model=model.name, version=1).json()["model_version_id"] == str(v1.id)
    assert deploy(model=model.name, alias="champion").json()["model_version_id"] == str(v2.id)
    # Unknown names are a 404 naming what was asked; two forms at once, or half of one, a 422.
    missing = deploy(model=model.name, version=9)
    assert missing.status_code == 404 and f"{model.name}:9" in missing.json()["message"]
    assert deploy(model=model.name, alias="nobody").status_code == 404
    assert deploy(model_version_id=str(v1.id), model=model.name, version=1).status_code == 422
    assert deploy(model=model.name).status_code == 422
    assert deploy(version=1).status_code == 422
    assert deploy().status_code == 422

    # The same three forms name a version in the registry's paths.
    for ref in (str(v2.id), f"{model.name}:2", f"{model.name}@champion"):
        shown = client.get(f"/api/v1/model-versions/{ref}", headers=tenant.headers)
        assert shown.status_code == 200 and shown.json()["id"] == str(v2.id), (ref, shown.text)
    assert client.get(f"/api/v1/model-versions/{model.name}:7", headers=tenant.headers).status_code == 404
    assert client.get("/api/v1/model-versions/no-such-form", headers=tenant.headers).status_code == 422


def test_replicas_and_batching_are_set_at_creation_and_changed_by_patch(client, db_session, tenant, version):
    created = create(client, tenant, version, replicas=2, batching={"max_batch_size": 16, "max_latency_ms": 2})
    assert created.status_code == 201, created.text
    body = created.json()
    assert (body["replicas"], body["batching"]) == (2, {"max_batch_size": 16, "max_latency_ms": 2.0})
    deployment = serving(db_session, body["id"])
    # As if the worker had started both replicas.
    for replica, port in ((0, 40001), (1, 40002)):
        db_session.add(
            DeploymentServer(
                deployment_id=deployment.id,
                role="stable",
                replica=replica,
                model_version_id=version.id,
                model_uri="/models/m",
                pid=99000 + replica,
                port=port,
            )
        )
    db_session.flush()
    url = f"/api/v1/deployments/{body['id']}"

    up = client.patch(url, json={"replicas": 3, "batching": None}, headers=tenant.headers)

    assert up.status_code == 200, up.text
    assert (up.json()["replicas"], up.json()["batching"]) == (3, None)
    assert [(s["replica"], s["state"], s["port"]) for s in up.json()["servers"]] == [
        (0, "running", 40001),
        (1, "running", 40002),
        (2, "starting", None),
    ]
    added = db_session.scalars(select(OutboxEvent).where(OutboxEvent.event_type == "deployment.replicas_added"))
    assert body["id"] in [event.payload["deployment_id"] for event in added]

    down = client.patch(url, json={"replicas": 1}, headers=tenant.headers)

    assert [s["replica"] for s in down.json()["servers"]] == [0]
    retired = db_session.scalars(select(OutboxEvent).where(OutboxEvent.event_type == "deployment.server_retired"))
    assert [event.payload["port"] for event in retired if event.payload["deployment_id"] == body["id"]] == [40002]
    history = client.get(f"{url}/history", headers=tenant.headers).json()["items"]
    assert [(row["action"], row["details"].get("replicas")) for row in history[:2]] == [
        ("scale", {"from": 3, "to": 1}),
        ("scale", {"from": 2, "to": 3}),
    ]
    for refused in ({"replicas": 0}, {"replicas": None}, {"replicas": 33}, {"batching": {"max_batch_size": 1}}):
        response = client.patch(url, json=refused, headers=tenant.headers)
        assert response.status_code == 422, (refused, response.text)


def test_kserve_manifests_carry_the_replica_count(client, tenant, version):
    fixed = create(client, tenant, version, target="kserve", replicas=3).json()
    ranged = create(client, tenant, version, target="kserve", replicas=2, kserve={"max_replicas": 6}).json()

    manifests = [
        client.get(f"/api/v1/deployments/{d['id']}/manifest?format=json", headers=tenant.headers).json()
        for d in (fixed, ranged)
    ]

    predictors = [manifest["spec"]["predictor"] for manifest in manifests]
    assert [(p["minReplicas"], p["maxReplicas"]) for p in predictors] == [(3, 3), (2, 6)]


def test_the_gateways_paths_are_served_before_the_middleware_with_the_apps_own_answers(
    app, client, db_session, tenant, other_tenant, version
):
    """The serving routes are raw routes, dispatched ahead of the middleware and routing: every answer, errors
    included, is the one the whole app gives, with the caller's request id kept and the request counted."""
    deployment = create(client, tenant, version).json()
    url = f"/deployments/{deployment['id']}/invocations"
    requests = [
        ("POST", url, {}),  # 401
        ("POST", url, other_tenant.headers),  # 404: not theirs
        ("POST", f"/deployments/{uuid.uuid4()}/invocations", tenant.headers),  # 404
        ("POST", "/deployments/not-a-uuid/invocations", tenant.headers),  # 422
        ("POST", url, tenant.headers),  # 503: not serving yet
        ("GET", f"/deployments/{deployment['id']}/v2/health/ready", tenant.headers),  # 503
        ("GET", url, tenant.headers),  # 405: not a raw route's method, left to the app
    ]

    def answers() -> list[tuple[int, dict, str | None]]:
        return [
            (response.status_code, response.json(), response.headers.get("x-request-id"))
            for method, path, headers in requests
            for response in [client.request(method, path, json={}, headers={**headers, "x-request-id": "caller-1"})]
        ]

    dispatched = answers()
    assert [status for status, _, _ in dispatched] == [401, 404, 404, 422, 503, 503, 405]
    assert {request_id for _, _, request_id in dispatched} == {"caller-1"}
    raw_routes = dict(app.hot_dispatch.raw_routes)
    app.hot_dispatch.raw_routes.clear()  # now through the middleware and the router
    try:
        assert answers() == dispatched
    finally:
        app.hot_dispatch.raw_routes.update(raw_routes)
    metrics = client.get("/metrics").text
    assert (
        'tessera_http_requests_total{method="POST",route="/deployments/{deployment_id}/invocations",'
        'service="platform",status="503"}' in metrics
    )


def test_a_gateway_request_over_the_size_limit_is_refused_with_or_without_a_length(settings, db_session, tenant):
    from fastapi.testclient import TestClient

    from tessera.platform import create_app

    app = in_test_transaction(create_app(settings.model_copy(update={"max_request_bytes": 1000})), db_session)
    url = f"/deployments/{uuid.uuid4()}/invocations"
    with TestClient(app, raise_server_exceptions=False) as client:
        with_length = client.post(url, content=b"x" * 1001, headers=tenant.headers)
        # Sent in chunks, without a length: counted as it arrives.
        chunked = client.post(url, content=iter([b"x" * 600, b"x" * 600]), headers=tenant.headers)
        within = client.post(url, content=iter([b"x" * 500, b"x" * 500]), headers=tenant.headers)
    for response in (with_length, chunked):
        assert response.status_code == 413, response.text
        assert response.json() == {"error_code": "PAYLOAD_TOO_LARGE", "message": "Request body over 1000 bytes"}
        assert "x-request-id" in response.headers
    assert within.status_code == 404  # read whole, then answered: no such deployment
