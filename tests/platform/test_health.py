"""Every service answers /healthz, /metrics and serves its OpenAPI document, alone and all-in-one."""

import pytest
from fastapi.testclient import TestClient

from tessera.platform import SERVICES, create_service_app


@pytest.mark.parametrize("service", [*SERVICES, "all"])
def test_service_serves_health_metrics_and_docs(service, settings):
    with TestClient(create_service_app(service, settings)) as client:
        health = client.get("/healthz")
        assert health.status_code == 200, health.text
        assert health.json()["checks"] == {"database": "ok", "broker": "ok"}
        assert client.get("/metrics").status_code == 200
        assert "tessera_http_requests_total" in client.get("/metrics").text
        assert client.get("/openapi.json").json()["info"]["title"].startswith("Tessera")
        assert client.get("/docs").status_code == 200


def test_unknown_route_is_a_json_404(client):
    response = client.get("/no/such/route")
    assert response.status_code == 404
    assert response.json()["error_code"] == "ENDPOINT_NOT_FOUND"


def test_wrong_method_is_a_json_405_that_says_what_is_allowed(client):
    response = client.delete("/healthz")
    assert response.status_code == 405
    assert response.json()["error_code"] == "METHOD_NOT_ALLOWED"
    assert response.headers["allow"] == "GET"


def test_a_callers_request_id_is_kept_only_when_it_is_a_plain_token(client):
    assert client.get("/healthz", headers={"x-request-id": "job-42:step.7"}).headers["x-request-id"] == "job-42:step.7"
    for unsafe in ("a b\nforged log line", "x" * 300):
        echoed = client.get("/healthz", headers={"x-request-id": unsafe}).headers["x-request-id"]
        assert echoed != unsafe and len(echoed) == 32
