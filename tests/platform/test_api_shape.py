"""One API shape: every native list endpoint answers {"items": [...], "next_page_token": ...} and pages
with `page_token` / `max_results`, as the OpenAPI document says and as a client walking the pages sees."""

from __future__ import annotations

import pytest

from tessera.platform import SERVICES, create_service_app

# Routes that keep a foreign API's own shape: MLflow's REST API and Alertmanager's API v2.
FOREIGN_PREFIXES = ("/api/2.0/", "/api/3.0/", "/ajax-api/", "/api/v2/")


def _answer_schema(operation: dict) -> dict:
    answer = operation.get("responses", {}).get("200", {})
    return answer.get("content", {}).get("application/json", {}).get("schema", {})


def _list_operations(spec: dict) -> dict[str, dict]:
    """GET operations of the native API whose 200 answer is a list or an envelope of one."""
    found = {}
    for path, item in spec["paths"].items():
        get = item.get("get")
        if get is None or path.startswith(FOREIGN_PREFIXES):
            continue
        schema = _answer_schema(get)
        if not schema:
            continue
        ref = schema.get("$ref", "")
        if schema.get("type") == "array" or ref.rsplit("/", 1)[-1].startswith("Page_"):
            found[path] = get
    return found


@pytest.mark.parametrize("service", SERVICES)
def test_every_native_list_answers_the_page_envelope(service, settings):
    spec = create_service_app(service, settings).openapi()
    operations = _list_operations(spec)
    bare = [path for path, get in operations.items() if "$ref" not in _answer_schema(get)]
    assert not bare, f"{service}: lists without the page envelope: {bare}"
    for path, get in operations.items():
        params = {p["name"] for p in get.get("parameters", []) if p["in"] == "query"}
        assert {"page_token", "max_results"} <= params, f"{service} GET {path} takes no page_token/max_results"
    assert operations, f"{service} has no list endpoint?"


def test_walking_pages_sees_every_item_once(client, tenant):
    for n in range(5):
        body = {"type": "webhook", "name": f"hook-{n}", "url": f"https://example.com/hook/{n}"}
        assert client.post("/api/v1/channels", json=body, headers=tenant.headers).status_code == 201
    seen: list[str] = []
    token = None
    pages = 0
    while True:
        params = {"max_results": 2} | ({"page_token": token} if token else {})
        page = client.get("/api/v1/channels", params=params, headers=tenant.headers).json()
        assert set(page) == {"items", "next_page_token"}
        assert len(page["items"]) <= 2
        seen += [item["name"] for item in page["items"]]
        pages += 1
        token = page["next_page_token"]
        if token is None:
            break
    assert seen == [f"hook-{n}" for n in range(5)] and pages == 3


def test_a_forged_page_token_is_a_4xx(client, tenant):
    for path in ("/api/v1/channels", "/api/v1/deployments", "/api/v1/monitors", "/api/v1/alerts"):
        answer = client.get(path, params={"page_token": "bm90LWEtdG9rZW4"}, headers=tenant.headers)
        assert answer.status_code == 400, answer.text


def test_status_enumerations_and_hand_named_schemas_are_in_the_document(settings):
    schemas = create_service_app("all", settings).openapi()["components"]["schemas"]
    assert schemas["DeploymentRead"]["properties"]["status"]["enum"] == [
        "pending",
        "building_environment",
        "deploying",
        "healthy",
        "failed",
        "stopped",
        "rolled_back",
    ]
    assert "insufficient_data" in schemas["CheckRunRead"]["properties"]["status"]["enum"]
    assert schemas["AlertRead"]["properties"]["status"]["enum"] == ["firing", "acknowledged", "resolved"]
    # The monitor's multipart `spec` part is described by MonitorCreate, which the document holds.
    body = next(schema for name, schema in schemas.items() if name.startswith("Body_create_monitor"))
    assert body["properties"]["spec"]["contentSchema"] == {"$ref": "#/components/schemas/MonitorCreate"}
    assert {"MonitorCreate", "MonitorUpdate", "PredictionBatch"} <= set(schemas)
