"""The native registry API: models, versions from runs and uploads, stages, aliases, lineage, permissions
and the outbox events the lifecycle emits."""

from __future__ import annotations

import pytest
from sqlalchemy import event, select

from shared.core.artifacts import get_artifact_store
from shared.core.errors import InvalidParameter
from shared.core.model_refs import VersionRef
from shared.db.models import (
    AuditLog,
    DataDriftReport,
    Dataset,
    Deployment,
    ModelMonitoring,
    OutboxEvent,
    RunDatasetInput,
)
from tests.factories import unique
from tests.registry.model_builders import SIGNATURE, caller, make_run


@pytest.fixture
def store(settings):
    return get_artifact_store(settings)


def _create_model(client, tenant, name="churn", **extra):
    response = client.post(
        f"/api/v1/projects/{tenant.project_id}/models", json={"name": name, **extra}, headers=tenant.headers
    )
    assert response.status_code == 201, response.text
    return response.json()


def _create_version(client, tenant, model_id, run, **extra):
    response = client.post(
        f"/api/v1/models/{model_id}/versions", json={"run_id": run.run_id, **extra}, headers=tenant.headers
    )
    assert response.status_code == 201, response.text
    return response.json()


def _transition(client, headers, version_id, stage, **extra):
    return client.post(
        f"/api/v1/model-versions/{version_id}/transitions", json={"stage": stage, **extra}, headers=headers
    )


def _events(db_session, tenant, event_type):
    rows = db_session.scalars(
        select(OutboxEvent)
        .where(OutboxEvent.event_type == event_type, OutboxEvent.organization_id == tenant.org_id)
        .order_by(OutboxEvent.created_at)
    ).all()
    return [row.payload for row in rows]


def test_model_crud_search_and_restore(client, tenant):
    created = _create_model(client, tenant, "churn", description="Monthly churn", tags={"team": "growth"})
    assert created["aliases"] == {} and created["last_version"] == 0
    duplicate = client.post(
        f"/api/v1/projects/{tenant.project_id}/models", json={"name": "churn"}, headers=tenant.headers
    )
    assert duplicate.status_code == 400
    assert duplicate.json()["error_code"] == "RESOURCE_ALREADY_EXISTS"
    for name in ("fraud", "fraud-v2", "ranker"):
        _create_model(client, tenant, name, tags={"team": "risk" if "fraud" in name else "search"})
    bad = client.post(f"/api/v1/projects/{tenant.project_id}/models", json={"name": "a/b"}, headers=tenant.headers)
    assert bad.status_code == 422

    base = f"/api/v1/projects/{tenant.project_id}/models"
    assert [m["name"] for m in client.get(base, params={"q": "FRAUD"}, headers=tenant.headers).json()["items"]] == [
        "fraud",
        "fraud-v2",
    ]
    by_tag = client.get(base, params={"tag": "team=search"}, headers=tenant.headers).json()["items"]
    assert [m["name"] for m in by_tag] == ["ranker"]
    first = client.get(base, params={"max_results": 3}, headers=tenant.headers).json()
    rest = client.get(
        base, params={"max_results": 3, "page_token": first["next_page_token"]}, headers=tenant.headers
    ).json()
    assert [m["name"] for m in first["items"] + rest["items"]] == ["churn", "fraud", "fraud-v2", "ranker"]
    assert rest["next_page_token"] is None

    model_url = f"/api/v1/models/{created['id']}"
    patched = client.patch(
        model_url, json={"name": "churn-v1", "tags": {"team": "retention"}}, headers=tenant.headers
    ).json()
    assert (patched["name"], patched["tags"], patched["description"]) == (
        "churn-v1",
        {"team": "retention"},
        "Monthly churn",
    )
    clash = client.patch(model_url, json={"name": "fraud"}, headers=tenant.headers)
    assert clash.json()["error_code"] == "RESOURCE_ALREADY_EXISTS"

    assert client.delete(model_url, headers=tenant.headers).status_code == 204
    assert client.get(model_url, headers=tenant.headers).status_code == 404
    deleted = client.get(base, params={"deleted": True}, headers=tenant.headers).json()["items"]
    assert [m["name"] for m in deleted] == ["churn-v1"]
    # The name of a deleted model is free again; restoring the old one then clashes.
    reused = _create_model(client, tenant, "churn-v1")
    assert client.post(f"{model_url}/restore", headers=tenant.headers).json()["error_code"] == (
        "RESOURCE_ALREADY_EXISTS"
    )
    client.delete(f"/api/v1/models/{reused['id']}", headers=tenant.headers)
    restored = client.post(f"{model_url}/restore", headers=tenant.headers)
    assert restored.status_code == 200 and restored.json()["deleted_at"] is None


def test_version_from_run_snapshots_metrics_and_signature(client, tenant, db_session, store):
    tracked = make_run(db_session, tenant.project_id, store=store, metrics={"auc": 0.91, "loss": 0.2})
    model = _create_model(client, tenant)
    first = _create_version(client, tenant, model["id"], tracked, description="baseline", tags={"algo": "gbm"})
    assert first["version"] == 1 and first["stage"] == "development" and first["status"] == "READY"
    assert first["metrics"] == {"auc": 0.91, "loss": 0.2}
    assert first["signature"] == SIGNATURE
    assert first["run_id"] == str(tracked.run.id)
    assert first["source"] == f"runs:/{tracked.run_id}/model"
    assert first["artifact_uri"] == f"{tracked.run.artifact_uri}/model"
    assert first["tags"] == {"algo": "gbm"} and first["model_name"] == "churn"

    second = _create_version(client, tenant, model["id"], tracked, artifact_path="elsewhere")
    assert second["version"] == 2 and second["signature"] is None
    assert client.get(f"/api/v1/models/{model['id']}", headers=tenant.headers).json()["last_version"] == 2

    listed = client.get(f"/api/v1/models/{model['id']}/versions", headers=tenant.headers).json()
    assert [v["version"] for v in listed["items"]] == [2, 1]
    from_run = client.get("/api/v1/model-versions", params={"run_id": tracked.run_id}, headers=tenant.headers)
    assert [v["version"] for v in from_run.json()["items"]] == [1, 2]

    patched = client.patch(
        f"/api/v1/model-versions/{first['id']}", json={"description": "tuned"}, headers=tenant.headers
    ).json()
    assert patched["description"] == "tuned" and patched["tags"] == {"algo": "gbm"}

    events = _events(db_session, tenant, "model_version.created")
    assert [(e["model_name"], e["version"]) for e in events] == [("churn", 1), ("churn", 2)]
    assert events[0]["run_id"] == tracked.run_id

    escape = client.post(
        f"/api/v1/models/{model['id']}/versions",
        json={"run_id": tracked.run_id, "artifact_path": "../../other"},
        headers=tenant.headers,
    )
    assert escape.status_code == 400


def test_version_from_upload(client, tenant, store):
    model = _create_model(client, tenant)
    mlmodel = b'flavors: {}\nsignature:\n  inputs: \'[{"type": "long"}]\'\n'
    response = client.post(
        f"/api/v1/models/{model['id']}/versions/upload",
        files=[("files", ("MLmodel", mlmodel)), ("files", ("data/weights.bin", b"\x00\x01"))],
        data={"description": "hand-made"},
        headers=tenant.headers,
    )
    assert response.status_code == 201, response.text
    version = response.json()
    assert version["version"] == 1 and version["source"] == "upload" and version["description"] == "hand-made"
    assert version["signature"] == {"inputs": '[{"type": "long"}]'}
    path = version["artifact_uri"].removeprefix("mlflow-artifacts:/")
    key = f"{tenant.org_id.hex}/{tenant.project_id.hex}/{path}"
    assert b"".join(store.read(f"{key}/data/weights.bin")) == b"\x00\x01"


def test_stage_transitions_archive_previous_production(client, tenant, db_session):
    tracked = make_run(db_session, tenant.project_id)
    model = _create_model(client, tenant)
    v1, v2 = (_create_version(client, tenant, model["id"], tracked) for _ in range(2))

    assert _transition(client, tenant.headers, v1["id"], "staging", comment="looks good").status_code == 200
    promoted = _transition(client, tenant.headers, v1["id"], "production").json()
    assert promoted["model_version"]["stage"] == "production"
    moved = _transition(client, tenant.headers, v2["id"], "production", comment="better auc").json()
    assert [(t["from_stage"], t["to_stage"]) for t in moved["transitions"]] == [
        ("production", "archived"),
        ("development", "production"),
    ]
    assert client.get(f"/api/v1/model-versions/{v1['id']}", headers=tenant.headers).json()["stage"] == "archived"

    history = client.get(f"/api/v1/model-versions/{v1['id']}/transitions", headers=tenant.headers).json()["items"]
    assert [(h["from_stage"], h["to_stage"], h["comment"]) for h in history] == [
        ("development", "staging", "looks good"),
        ("staging", "production", None),
        ("production", "archived", "Archived as version 2 moved to production"),
    ]
    assert all(h["actor_id"] == str(tenant.user_id) for h in history)

    # Without archive_existing both stay in production (MLflow allows several).
    tracked_v3 = _create_version(client, tenant, model["id"], tracked)
    _transition(client, tenant.headers, tracked_v3["id"], "production", archive_existing=False)
    production = client.get(
        f"/api/v1/models/{model['id']}/versions", params={"stage": "production"}, headers=tenant.headers
    ).json()["items"]
    assert [v["version"] for v in production] == [3, 2]

    changes = _events(db_session, tenant, "model_version.stage_changed")
    assert [(e["version"], e["from_stage"], e["to_stage"]) for e in changes] == [
        (1, "development", "staging"),
        (1, "staging", "production"),
        (1, "production", "archived"),
        (2, "development", "production"),
        (3, "development", "production"),
    ]
    bad = _transition(client, tenant.headers, v1["id"], "shipped")
    assert bad.status_code == 422


def test_aliases_move_atomically(client, tenant, db_session):
    tracked = make_run(db_session, tenant.project_id)
    model = _create_model(client, tenant)
    v1, v2 = (_create_version(client, tenant, model["id"], tracked) for _ in range(2))
    base = f"/api/v1/models/{model['id']}/aliases"

    assert client.put(f"{base}/champion", json={"version": 1}, headers=tenant.headers).status_code == 200
    client.put(f"{base}/challenger", json={"version": 2}, headers=tenant.headers)
    moved = client.put(f"{base}/champion", json={"version": 2}, headers=tenant.headers).json()
    assert moved == {"model_id": model["id"], "alias": "champion", "version": 2, "model_version_id": v2["id"]}
    assert client.get(f"{base}/champion", headers=tenant.headers).json()["version"] == 2
    assert client.get(f"/api/v1/models/{model['id']}", headers=tenant.headers).json()["aliases"] == {
        "challenger": 2,
        "champion": 2,
    }
    assert client.get(f"/api/v1/model-versions/{v2['id']}", headers=tenant.headers).json()["aliases"] == [
        "challenger",
        "champion",
    ]
    for invalid in ("latest", "v3", "has space"):
        response = client.put(f"{base}/{invalid}", json={"version": 1}, headers=tenant.headers)
        assert response.status_code == 400, invalid
    assert client.put(f"{base}/champion", json={"version": 9}, headers=tenant.headers).status_code == 404

    assert client.delete(f"{base}/challenger", headers=tenant.headers).status_code == 204
    assert client.get(f"{base}/challenger", headers=tenant.headers).status_code == 404
    # Deleting a version takes its aliases with it.
    assert client.delete(f"/api/v1/model-versions/{v2['id']}", headers=tenant.headers).status_code == 204
    assert client.get(f"/api/v1/models/{model['id']}", headers=tenant.headers).json()["aliases"] == {}
    assert client.get(f"/api/v1/model-versions/{v1['id']}", headers=tenant.headers).status_code == 200

    moves = _events(db_session, tenant, "model_version.alias_moved")
    assert [(e["alias"], e["from_version"], e["to_version"]) for e in moves] == [
        ("champion", None, 1),
        ("challenger", None, 2),
        ("champion", 1, 2),
        ("challenger", 2, None),
    ]


def test_permissions_by_role_and_tenant(client, tenant, other_tenant, db_session):
    tracked = make_run(db_session, tenant.project_id)
    model = _create_model(client, tenant)
    version = _create_version(client, tenant, model["id"], tracked)
    viewer = caller(db_session, tenant.org_id, "viewer")
    member = caller(db_session, tenant.org_id, "member")
    project_admin = caller(db_session, tenant.org_id, "member", project_role="admin")

    assert client.get(f"/api/v1/models/{model['id']}", headers=viewer).status_code == 200
    denied = _transition(client, viewer, version["id"], "staging")
    assert denied.status_code == 403 and denied.json()["error_code"] == "PERMISSION_DENIED"
    alias = client.put(f"/api/v1/models/{model['id']}/aliases/champion", json={"version": 1}, headers=viewer)
    assert alias.status_code == 403

    assert _transition(client, member, version["id"], "staging").status_code == 200
    assert _transition(client, member, version["id"], "production").status_code == 403
    assert client.delete(f"/api/v1/models/{model['id']}", headers=member).status_code == 403
    assert _transition(client, project_admin, version["id"], "production").status_code == 200
    # Leaving production is an admin act too.
    assert _transition(client, member, version["id"], "archived").status_code == 403

    for url in (
        f"/api/v1/models/{model['id']}",
        f"/api/v1/model-versions/{version['id']}",
        f"/api/v1/model-versions/{version['id']}/lineage",
        f"/api/v1/projects/{tenant.project_id}/models",
    ):
        assert client.get(url, headers=other_tenant.headers).status_code == 404, url
    assert _transition(client, other_tenant.headers, version["id"], "archived").status_code == 404
    other_model = _create_model(client, other_tenant)
    foreign_run = client.post(
        f"/api/v1/models/{other_model['id']}/versions", json={"run_id": tracked.run_id}, headers=other_tenant.headers
    )
    assert foreign_run.status_code == 404
    from_run = client.get("/api/v1/model-versions", params={"run_id": tracked.run_id}, headers=other_tenant.headers)
    assert from_run.json()["items"] == []


def test_lineage(client, tenant, db_session):
    tracked = make_run(db_session, tenant.project_id, metrics={"auc": 0.9})
    dataset = Dataset(
        experiment_id=tracked.experiment.id, name="train", digest="abc123", source_type="local", source="/data/t.csv"
    )
    db_session.add(dataset)
    db_session.flush()
    db_session.add(RunDatasetInput(run_id=tracked.run.id, dataset_id=dataset.id, tags={"mlflow.data.context": "train"}))
    model = _create_model(client, tenant)
    version = _create_version(client, tenant, model["id"], tracked)
    deployment = Deployment(project_id=tenant.project_id, name="churn-prod", model_version_id=version["id"])
    db_session.add(deployment)
    db_session.flush()
    monitor = ModelMonitoring(project_id=tenant.project_id, name="churn-drift", deployment_id=deployment.id)
    db_session.add(monitor)
    db_session.flush()
    db_session.add_all(
        DataDriftReport(monitor_id=monitor.id, status="ok", dataset_drift=i == 6, drift_share=i / 10) for i in range(7)
    )
    db_session.flush()

    lineage = client.get(f"/api/v1/model-versions/{version['id']}/lineage", headers=tenant.headers).json()
    assert lineage["model_version"]["id"] == version["id"]
    assert lineage["run"]["id"] == str(tracked.run.id) and lineage["run"]["status"] == "FINISHED"
    assert lineage["experiment"]["name"] == tracked.experiment.name
    assert [(d["name"], d["digest"], d["tags"]) for d in lineage["datasets"]] == [
        ("train", "abc123", {"mlflow.data.context": "train"})
    ]
    assert [(d["name"], d["role"]) for d in lineage["deployments"]] == [("churn-prod", "stable")]
    [monitor_lineage] = lineage["monitors"]
    assert monitor_lineage["name"] == "churn-drift"
    assert len(monitor_lineage["drift_reports"]) == 5


def test_list_queries_do_not_grow_with_rows(client, tenant, db_session, monkeypatch):
    # Authentication adds statements of its own whenever its per-process identity cache runs out (every
    # IDENTITY_CACHE_TTL_S, per entry) or the API key's last-used time is due (shared/core/auth.py
    # touch_interval_s, once a minute); on a loaded machine either can land in any measuring pass. The
    # cache is kept for the whole test, and each URL counts the least of two calls (see queries), so
    # only the listing's own statements are compared.
    monkeypatch.setattr("shared.core.auth.IDENTITY_CACHE_TTL_S", 3600.0)
    tracked = make_run(db_session, tenant.project_id)
    connection = db_session.connection()
    statements: list[str] = []

    def record(_conn, _cursor, statement, *_args):
        statements.append(statement)

    def one_call(url: str, params: dict) -> int:
        statements.clear()
        event.listen(connection, "before_cursor_execute", record)
        try:
            assert client.get(url, params=params, headers=tenant.headers).status_code == 200
        finally:
            event.remove(connection, "before_cursor_execute", record)
        return len(statements)

    def queries(url: str, **params) -> int:
        # The least of two calls: the key's last-used touch (at most once a minute) lands in one of them at most.
        return min(one_call(url, params), one_call(url, params))

    def add_models(count: int) -> str:
        for _ in range(count):
            model = _create_model(client, tenant, unique("model"))
            for number in (1, 2):
                _create_version(client, tenant, model["id"], tracked)
                client.put(
                    f"/api/v1/models/{model['id']}/aliases/a{number}", json={"version": number}, headers=tenant.headers
                )
        return model["id"]

    model_id = add_models(2)
    urls = [
        (f"/api/v1/projects/{tenant.project_id}/models", {}),
        ("/api/2.0/mlflow/registered-models/search", {}),
        ("/api/2.0/mlflow/model-versions/search", {}),
        (f"/api/v1/models/{model_id}/versions", {}),
        ("/api/v1/model-versions", {"run_id": tracked.run_id}),
    ]
    before = [queries(url, **params) for url, params in urls]
    assert all(count > 0 for count in before)
    add_models(4)
    assert [queries(url, **params) for url, params in urls] == before


def test_version_refs_in_paths(client, tenant, db_session):
    """A version is named by id, `<model>:<n>` or `<model>@<alias>`; anything else is refused as bad input,
    never a 500 (a superscript digit once reached int())."""
    tracked = make_run(db_session, tenant.project_id)
    model = _create_model(client, tenant, name=unique("refs"))
    version = _create_version(client, tenant, model["id"], tracked)
    client.put(f"/api/v1/models/{model['id']}/aliases/champion", json={"version": 1}, headers=tenant.headers)
    for ref in (version["id"], version["id"].replace("-", ""), f"{model['name']}:1", f"{model['name']}@champion"):
        response = client.get(f"/api/v1/model-versions/{ref}", headers=tenant.headers)
        assert response.json()["id"] == version["id"], ref
    assert client.get(f"/api/v1/model-versions/{model['name']}:2", headers=tenant.headers).status_code == 404
    for ref in (f"{model['name']}:\u00b2", f"{model['name']}:0", model["name"], f"{model['name']}@"):
        response = client.get(f"/api/v1/model-versions/{ref}", headers=tenant.headers)
        assert response.status_code == 422, ref
        assert response.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    with pytest.raises(InvalidParameter):
        VersionRef.parse("churn:\u00b2")


def test_registering_leaves_audit_rows_naming_the_object(client, tenant, db_session):
    tracked = make_run(db_session, tenant.project_id)
    model = _create_model(client, tenant, name=unique("audited"))
    from_run = _create_version(client, tenant, model["id"], tracked)
    uploaded = client.post(
        f"/api/v1/models/{model['id']}/versions/upload",
        files=[("files", ("MLmodel", b"flavors: {}\n"))],
        headers=tenant.headers,
    ).json()
    assert _transition(client, tenant.headers, from_run["id"], "production").status_code == 200
    client.put(f"/api/v1/models/{model['id']}/aliases/champion", json={"version": 2}, headers=tenant.headers)
    db_session.expire_all()
    rows = db_session.scalars(
        select(AuditLog).where(AuditLog.organization_id == tenant.org_id, AuditLog.action.like("model%"))
    ).all()
    assert sorted((row.action, row.object_type, row.object_id, row.details) for row in rows) == sorted(
        [
            ("model.create", "model", model["id"], {"name": model["name"], "project_id": str(tenant.project_id)}),
            (
                "model_version.create",
                "model_version",
                from_run["id"],
                {"model": model["name"], "version": 1, "source": from_run["source"]},
            ),
            (
                "model_version.create",
                "model_version",
                uploaded["id"],
                {"model": model["name"], "version": 2, "source": "upload", "files": 1},
            ),
            (
                "model_version.transition",
                "model_version",
                from_run["id"],
                {"model": model["name"], "version": 1, "to_stage": "production", "archived_versions": []},
            ),
            ("model.alias_set", "model", model["id"], {"alias": "champion", "version": 2, "previous_version": None}),
        ]
    )
