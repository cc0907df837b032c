"""One PATCH rule on every service (shared/core/patch.py): a field left out is unchanged; null clears only
fields the OpenAPI document marks nullable; null anywhere else is a 422 naming the field; never a 5xx
and never a 409 for it. Checked property-based over every PATCH operation /openapi.json lists."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.monitor.schemas import MonitorUpdate
from shared.core.patch import PatchBody

NATIVE_PREFIX = "/api/v1/"
# The monitor's PATCH is multipart; its JSON part `spec` is this model.
MULTIPART_SPECS = {"/api/v1/monitors/{monitor_id}": MonitorUpdate}


def _patch_bodies() -> dict[str, type[PatchBody]]:
    found: dict[str, type[PatchBody]] = {}
    pending = list(PatchBody.__subclasses__())
    while pending:
        model = pending.pop()
        found[model.__name__] = model
        pending.extend(model.__subclasses__())
    return found


def _nullable(schema: dict[str, Any]) -> bool:
    return schema.get("type") == "null" or any(variant.get("type") == "null" for variant in schema.get("anyOf", []))


def _patch_operations(openapi: dict[str, Any]) -> list[tuple[str, dict[str, bool]]]:
    """(path, {field: nullable}) for every PATCH operation; fields from the request schema."""
    operations = []
    for path, methods in openapi["paths"].items():
        operation = methods.get("patch")
        if operation is None:
            continue
        if path in MULTIPART_SPECS:
            spec = MULTIPART_SPECS[path].model_json_schema()
            fields = {name: _nullable(prop) for name, prop in spec["properties"].items()}
        else:
            content = operation.get("requestBody", {}).get("content", {}).get("application/json", {})
            ref = content.get("schema", {}).get("$ref", "")
            schema = openapi["components"]["schemas"].get(ref.rpartition("/")[2], {})
            fields = {name: _nullable(prop) for name, prop in schema.get("properties", {}).items()}
        operations.append((path, fields))
    return operations


@pytest.fixture
def openapi(client) -> dict[str, Any]:
    return client.get("/openapi.json").json()


@pytest.fixture
def patch_operations(openapi) -> list[tuple[str, dict[str, bool]]]:
    return _patch_operations(openapi)


def test_every_native_patch_body_follows_the_shared_rule(openapi):
    patch_bodies = _patch_bodies()
    native = [path for path, _ in _patch_operations(openapi) if path.startswith(NATIVE_PREFIX)]
    assert len(native) >= 10
    for path in native:
        if path in MULTIPART_SPECS:
            assert issubclass(MULTIPART_SPECS[path], PatchBody), path
            continue
        ref = openapi["paths"][path]["patch"]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        assert ref.rpartition("/")[2] in patch_bodies, f"PATCH {path} does not take a PatchBody"


@pytest.fixture
def resources(client, tenant) -> dict[str, list[str]]:
    """Real objects for the path parameters PATCH routes take (others get an unknown id: a 404 after the
    body was validated)."""
    headers = tenant.headers
    webhook = client.post(
        "/api/v1/channels", json={"type": "webhook", "name": "hook", "url": "http://127.0.0.1:9/h"}, headers=headers
    ).json()
    email_body = {"type": "email", "name": "mail", "smtp_host": "127.0.0.1", "sender": "a@b.c", "recipients": ["x@y.z"]}
    email = client.post("/api/v1/channels", json=email_body, headers=headers).json()
    rule = client.post("/api/v1/rules", json={"name": "r", "channel_ids": [webhook["id"]]}, headers=headers).json()
    model = client.post(f"/api/v1/projects/{tenant.project_id}/models", json={"name": "m"}, headers=headers).json()
    return {
        "channel_id": [webhook["id"], email["id"]],
        "rule_id": [rule["id"]],
        "model_id": [model["id"]],
        "org_id": [str(tenant.org_id)],
        "project_id": [str(tenant.project_id)],
        "user_id": [str(tenant.user_id)],
    }


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_null_is_refused_by_name_except_where_it_clears_and_never_breaks_the_server(
    client, tenant, patch_operations, resources, data
):
    path, fields = data.draw(st.sampled_from(patch_operations), label="operation")
    url = path
    for parameter in [part[1:-1] for part in path.split("/") if part.startswith("{")]:
        choices = resources.get(parameter) or [str(uuid.uuid4())]
        url = url.replace(f"{{{parameter}}}", data.draw(st.sampled_from(choices), label=parameter))
    some_fields = st.sets(st.sampled_from(sorted(fields)), min_size=1) if fields else st.just(set())
    nulled = data.draw(some_fields, label="nulled")
    body = dict.fromkeys(nulled)
    if path in MULTIPART_SPECS:
        response = client.patch(url, data={"spec": json.dumps(body)}, headers=tenant.headers)
    else:
        response = client.patch(url, json=body, headers=tenant.headers)

    assert response.status_code < 500, response.text
    assert response.status_code != 409, response.text
    refused = sorted(name for name in nulled if not fields[name])
    if refused and path.startswith(NATIVE_PREFIX):
        assert response.status_code == 422, response.text
        message = response.json()["message"]
        assert "cannot be null" in message and any(name in message for name in refused), message
    elif response.status_code == 422:
        assert "cannot be null" not in response.text


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"security": None}, "security"),
        ({"smtp_port": None}, "smtp_port"),
        ({"enabled": None}, "enabled"),
        ({"name": None}, "name"),
        ({"recipients": None}, "recipients"),
    ],
)
def test_the_reported_channel_nulls_are_422_naming_the_field_and_change_nothing(client, resources, tenant, body, field):
    email_id = resources["channel_id"][1]
    before = client.get(f"/api/v1/channels/{email_id}", headers=tenant.headers).json()
    response = client.patch(f"/api/v1/channels/{email_id}", json=body, headers=tenant.headers)
    assert response.status_code == 422, response.text
    assert response.json()["message"] == (
        f"Invalid value for {field}: {field} cannot be null; leave it out to keep its current value"
    )
    assert client.get(f"/api/v1/channels/{email_id}", headers=tenant.headers).json() == before


def test_absent_fields_stay_and_null_clears_what_may_be_cleared(client, resources, tenant):
    email_id = resources["channel_id"][1]
    set_login = {"username": "bot", "password": "s3cret"}
    assert client.patch(f"/api/v1/channels/{email_id}", json=set_login, headers=tenant.headers).status_code == 200
    cleared = client.patch(f"/api/v1/channels/{email_id}", json={"password": None}, headers=tenant.headers).json()
    assert cleared["config"]["username"] == "bot" and cleared["config"]["has_password"] is False
    assert cleared["config"]["smtp_port"] == 587 and cleared["config"]["security"] == "starttls"
    unchanged = client.patch(f"/api/v1/channels/{email_id}", json={}, headers=tenant.headers).json()
    assert unchanged["config"] == cleared["config"] and unchanged["name"] == cleared["name"]
