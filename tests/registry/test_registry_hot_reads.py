"""The registry reads on their hot path (services/registry/api/hot_reads.py), through the live server: the
same answers as the usual endpoints give (a caller's first call takes the usual path, the next ones the
hot path), pages and tokens, prompts left out, and tenancy unchanged: another organization's caller and
a key without the registry scope get what the usual path answered before."""

from __future__ import annotations

import uuid

import httpx

from shared.db.models import Organization, User
from tests import factories

API = "/api/2.0/mlflow"


def _ok(response: httpx.Response) -> dict:
    assert response.status_code == 200, response.text
    return response.json()


def _model(http: httpx.Client, run_id: str, *, prompt: bool = False) -> str:
    name = f"hot-{uuid.uuid4().hex[:8]}"
    tags = [{"key": "team", "value": "risk"}] + (
        [{"key": "mlflow.prompt.is_prompt", "value": "true"}] if prompt else []
    )
    _ok(http.post(f"{API}/registered-models/create", json={"name": name, "tags": tags, "description": "d"}))
    for _ in range(3):
        _ok(
            http.post(
                f"{API}/model-versions/create", json={"name": name, "source": f"runs:/{run_id}/model", "run_id": run_id}
            )
        )
    _ok(http.post(f"{API}/model-versions/transition-stage", json={"name": name, "version": "2", "stage": "Production"}))
    _ok(http.post(f"{API}/registered-models/alias", json={"name": name, "alias": "champion", "version": "3"}))
    return name


def test_hot_registry_reads_answer_as_the_usual_endpoints(live_server, db, settings):
    with db.session_scope() as session:
        tenant = factories.make_tenant(session, jwt_secret=settings.jwt_secret)
        other_tenant = factories.make_tenant(session, jwt_secret=settings.jwt_secret)
    http = httpx.Client(base_url=live_server.url, headers=tenant.headers, timeout=30)
    experiment_id = _ok(http.post(f"{API}/experiments/create", json={"name": "registry"}))["experiment_id"]
    run_id = _ok(http.post(f"{API}/runs/create", json={"experiment_id": experiment_id}))["run"]["info"]["run_id"]
    names = sorted(_model(http, run_id) for _ in range(3))
    _model(http, run_id, prompt=True)

    calls = [
        lambda: http.get(f"{API}/registered-models/get", params={"name": names[0]}),
        lambda: http.get(f"{API}/registered-models/alias", params={"name": names[1], "alias": "champion"}),
        lambda: http.get(f"{API}/registered-models/search", params={"max_results": 2}),
        lambda: http.get(f"{API}/registered-models/search", params={"order_by": ["name DESC"]}),
        lambda: http.get("/ajax-api/2.0/mlflow/registered-models/search"),
        # What MlflowClient.search_registered_models sends.
        lambda: http.get(
            f"{API}/registered-models/search", params={"filter": "tag.`mlflow.prompt.is_prompt` != 'true'"}
        ),
    ]
    for call in calls:
        answers = [call() for _ in range(3)]
        assert {a.status_code for a in answers} == {200}, answers[0].text
        assert answers[1].json() == answers[0].json() == answers[2].json()

    model = http.get(f"{API}/registered-models/get", params={"name": names[0]}).json()["registered_model"]
    assert [(v["version"], v["current_stage"]) for v in model["latest_versions"]] == [
        ("2", "Production"),
        ("3", "None"),
    ]
    assert model["aliases"] == [{"alias": "champion", "version": "3"}]
    version = http.get(f"{API}/registered-models/alias", params={"name": names[1], "alias": "champion"}).json()
    assert version["model_version"]["version"] == "3" and version["model_version"]["aliases"] == ["champion"]
    first = http.get(f"{API}/registered-models/search", params={"max_results": 2}).json()
    token = first["next_page_token"]
    rest = http.get(f"{API}/registered-models/search", params={"max_results": 2, "page_token": token}).json()
    assert "next_page_token" not in rest
    # The prompt is left out.
    assert [m["name"] for m in first["registered_models"] + rest["registered_models"]] == names
    client_filter = {"filter": "tag.`mlflow.prompt.is_prompt` != 'true'", "max_results": 2}
    assert http.get(f"{API}/registered-models/search", params=client_filter).json() == first

    # What the usual path answers, whatever path serves the call.
    for _ in range(3):
        missing = http.get(f"{API}/registered-models/get", params={"name": "no-such-model"})
        assert missing.status_code == 404 and missing.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"
        unknown = http.get(f"{API}/registered-models/alias", params={"name": names[0], "alias": "nope"})
        assert unknown.status_code == 400 and unknown.json()["error_code"] == "INVALID_PARAMETER_VALUE"
        bad = http.get(f"{API}/registered-models/search", params={"max_results": 0})
        assert bad.status_code == 400
        by_header = http.get(
            f"{API}/registered-models/get", params={"name": names[0]}, headers={"X-Tessera-Project": "default"}
        )
        assert by_header.json()["registered_model"]["name"] == names[0]

    # Another organization's caller, remembered after its first call.
    other = httpx.Client(base_url=live_server.url, headers=other_tenant.headers, timeout=30)
    for _ in range(3):
        missing = other.get(f"{API}/registered-models/get", params={"name": names[0]})
        assert missing.status_code == 404 and missing.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"
        alias = other.get(f"{API}/registered-models/alias", params={"name": names[0], "alias": "champion"})
        assert alias.status_code == 404 and alias.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"
        assert other.get(f"{API}/registered-models/search").json() == {"registered_models": []}

    # A key without the registry scope is refused every time.
    with db.session_scope() as session:
        user, org = session.get(User, tenant.user_id), session.get(Organization, tenant.org_id)
        _, narrow_key = factories.make_api_key(session, user=user, org=org, scopes=["tracking:read"])
    narrow = httpx.Client(base_url=live_server.url, headers=factories.bearer(narrow_key), timeout=30)
    for _ in range(3):
        refused = narrow.get(f"{API}/registered-models/get", params={"name": names[0]})
        assert refused.status_code == 403 and refused.json()["error_code"] == "PERMISSION_DENIED"
        assert narrow.get(f"{API}/registered-models/search").status_code == 403
