"""MLflow's model-registry REST API on the wire: JSON shapes, both prefixes, error codes and statuses,
project resolution, and the same role rules as the native API."""

from __future__ import annotations

import pytest

from tests.registry.model_builders import caller, make_run

API = "/api/2.0/mlflow"


@pytest.fixture
def tracked(db_session, tenant):
    return make_run(db_session, tenant.project_id, metrics={"auc": 0.8})


def _post(client, path, body, headers, prefix=API):
    return client.post(f"{prefix}/{path}", json=body, headers=headers)


def _register(client, tenant, tracked, name="fraud", versions=1):
    assert _post(client, "registered-models/create", {"name": name}, tenant.headers).status_code == 200
    for _ in range(versions):
        response = _post(
            client,
            "model-versions/create",
            {"name": name, "source": f"runs:/{tracked.run_id}/model", "run_id": tracked.run_id},
            tenant.headers,
        )
        assert response.status_code == 200, response.text
    return name


def test_wire_format(client, tenant, tracked):
    created = _post(
        client,
        "registered-models/create",
        {"name": "fraud", "tags": [{"key": "team", "value": "risk"}], "description": "d", "deployment_job_id": ""},
        tenant.headers,
    ).json()["registered_model"]
    assert created["name"] == "fraud" and created["description"] == "d"
    assert created["tags"] == [{"key": "team", "value": "risk"}]
    assert isinstance(created["creation_timestamp"], int) and created["latest_versions"] == []

    version = _post(
        client,
        "model-versions/create",
        {"name": "fraud", "source": f"runs:/{tracked.run_id}/model", "run_id": tracked.run_id, "run_link": "http://x"},
        tenant.headers,
    ).json()["model_version"]
    assert version == {
        "name": "fraud",
        "version": "1",
        "creation_timestamp": version["creation_timestamp"],
        "last_updated_timestamp": version["last_updated_timestamp"],
        "user_id": tenant.user_id.hex,
        "current_stage": "None",
        "source": f"runs:/{tracked.run_id}/model",
        "run_id": tracked.run_id,
        "run_link": "http://x",
        "status": "READY",
        "tags": [],
        "aliases": [],
    }
    _post(client, "registered-models/alias", {"name": "fraud", "alias": "champion", "version": "1"}, tenant.headers)
    fetched = client.get(
        "/ajax-api/2.0/mlflow/registered-models/get", params={"name": "fraud"}, headers=tenant.headers
    ).json()["registered_model"]
    assert fetched["aliases"] == [{"alias": "champion", "version": "1"}]
    assert [v["version"] for v in fetched["latest_versions"]] == ["1"]

    latest = client.get(
        f"{API}/registered-models/get-latest-versions",
        params=[("name", "fraud"), ("stages", "None"), ("stages", "Production")],
        headers=tenant.headers,
    ).json()
    assert [v["version"] for v in latest["model_versions"]] == ["1"]
    uri = client.get(
        f"{API}/model-versions/get-download-uri", params={"name": "fraud", "version": "1"}, headers=tenant.headers
    ).json()
    assert uri == {"artifact_uri": f"{tracked.run.artifact_uri}/model"}
    deleted = client.request(
        "DELETE", f"{API}/registered-models/delete-tag", json={"name": "fraud", "key": "team"}, headers=tenant.headers
    )
    assert deleted.status_code == 200 and deleted.json() == {}


def test_error_codes(client, tenant, tracked):
    _register(client, tenant, tracked)

    def error(response, status, code):
        assert (response.status_code, response.json()["error_code"]) == (status, code), response.text

    error(_post(client, "registered-models/create", {"name": "fraud"}, tenant.headers), 400, "RESOURCE_ALREADY_EXISTS")
    error(
        client.get(f"{API}/registered-models/get", params={"name": "nope"}, headers=tenant.headers),
        404,
        "RESOURCE_DOES_NOT_EXIST",
    )
    error(
        client.get(f"{API}/model-versions/get", params={"name": "fraud", "version": "7"}, headers=tenant.headers),
        404,
        "RESOURCE_DOES_NOT_EXIST",
    )
    error(
        client.get(
            f"{API}/registered-models/alias", params={"name": "fraud", "alias": "ghost"}, headers=tenant.headers
        ),
        400,
        "INVALID_PARAMETER_VALUE",
    )
    error(_post(client, "registered-models/create", {}, tenant.headers), 400, "INVALID_PARAMETER_VALUE")
    error(_post(client, "registered-models/create", {"name": "a:b"}, tenant.headers), 400, "INVALID_PARAMETER_VALUE")
    error(
        _post(
            client,
            "model-versions/transition-stage",
            {"name": "fraud", "version": "1", "stage": "None", "archive_existing_versions": True},
            tenant.headers,
        ),
        400,
        "INVALID_PARAMETER_VALUE",
    )
    error(
        _post(client, "registered-models/alias", {"name": "fraud", "alias": "v1", "version": "1"}, tenant.headers),
        400,
        "INVALID_PARAMETER_VALUE",
    )
    error(
        _post(
            client,
            "model-versions/create",
            {"name": "fraud", "source": f"{tracked.run.artifact_uri}/../../elsewhere", "run_id": tracked.run_id},
            tenant.headers,
        ),
        400,
        "INVALID_PARAMETER_VALUE",
    )
    error(
        client.get(f"{API}/registered-models/search", params={"page_token": "garbage"}, headers=tenant.headers),
        400,
        "INVALID_PARAMETER_VALUE",
    )
    error(
        client.get(f"{API}/registered-models/search", params={"order_by": "owner"}, headers=tenant.headers),
        400,
        "INVALID_PARAMETER_VALUE",
    )
    error(
        client.get(f"{API}/registered-models/search", params={"max_results": 5000}, headers=tenant.headers),
        400,
        "INVALID_PARAMETER_VALUE",
    )
    error(client.get(f"{API}/registered-models/get", params={"name": "fraud"}), 401, "UNAUTHENTICATED")


def test_sources_inside_the_run_or_logged_model(client, tenant, tracked, db_session):
    _register(client, tenant, tracked, versions=0)
    inside = _post(
        client,
        "model-versions/create",
        {"name": "fraud", "source": f"{tracked.run.artifact_uri}/model", "run_id": tracked.run_id},
        tenant.headers,
    ).json()["model_version"]
    assert inside["version"] == "1" and inside["run_id"] == tracked.run_id
    other = make_run(db_session, tenant.project_id)
    outside = _post(
        client,
        "model-versions/create",
        {"name": "fraud", "source": f"{other.run.artifact_uri}/model", "run_id": tracked.run_id},
        tenant.headers,
    )
    assert outside.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    copied = _post(
        client, "model-versions/create", {"name": "fraud", "source": "models:/fraud/1"}, tenant.headers
    ).json()["model_version"]
    uri = client.get(
        f"{API}/model-versions/get-download-uri",
        params={"name": "fraud", "version": copied["version"]},
        headers=tenant.headers,
    ).json()["artifact_uri"]
    assert uri == f"{tracked.run.artifact_uri}/model"


def test_names_resolve_in_the_default_project(client, tenant, other_tenant, db_session, tracked):
    _register(client, tenant, tracked)
    # Another organization neither sees the name nor collides with it.
    missing = client.get(f"{API}/registered-models/get", params={"name": "fraud"}, headers=other_tenant.headers)
    assert missing.status_code == 404
    assert _post(client, "registered-models/create", {"name": "fraud"}, other_tenant.headers).status_code == 200
    found = client.get(f"{API}/registered-models/search", headers=other_tenant.headers).json()["registered_models"]
    assert [m["name"] for m in found] == ["fraud"] and found[0]["latest_versions"] == []
    # Runs of another tenant cannot be registered from.
    stolen = _post(
        client,
        "model-versions/create",
        {"name": "fraud", "source": f"runs:/{tracked.run_id}/model", "run_id": tracked.run_id},
        other_tenant.headers,
    )
    assert stolen.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"


def test_roles_through_the_mlflow_api(client, tenant, db_session, tracked):
    _register(client, tenant, tracked)
    viewer = caller(db_session, tenant.org_id, "viewer")
    member = caller(db_session, tenant.org_id, "member")
    move = {"name": "fraud", "version": "1", "archive_existing_versions": False}

    assert client.get(f"{API}/registered-models/get", params={"name": "fraud"}, headers=viewer).status_code == 200
    response = _post(client, "model-versions/transition-stage", {**move, "stage": "Staging"}, viewer)
    assert (response.status_code, response.json()["error_code"]) == (403, "PERMISSION_DENIED")
    assert _post(client, "model-versions/transition-stage", {**move, "stage": "Staging"}, member).status_code == 200
    response = _post(client, "model-versions/transition-stage", {**move, "stage": "Production"}, member)
    assert response.status_code == 403
    promoted = _post(client, "model-versions/transition-stage", {**move, "stage": "production"}, tenant.headers)
    assert promoted.json()["model_version"]["current_stage"] == "Production"
