"""Concurrency on PostgreSQL through the live server: each thread its own connection, so each request its
own session and transaction, released together by a barrier."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.registry.model_builders import make_run

WORKERS = 6


def _together(calls: list[Callable[[httpx.Client], httpx.Response]], base_url: str) -> list[httpx.Response]:
    barrier = threading.Barrier(len(calls))

    def run(call: Callable[[httpx.Client], httpx.Response]) -> httpx.Response:
        with httpx.Client(base_url=base_url, timeout=30) as http:
            barrier.wait()
            return call(http)

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(run, calls))


@pytest.fixture
def model(live_server, live_tenant, db):
    with db.session_scope() as session:
        tracked = make_run(session, live_tenant.project_id)
    response = httpx.post(
        f"{live_server.url}/api/v1/projects/{live_tenant.project_id}/models",
        json={"name": f"concurrent-{tracked.run.id.hex[:8]}"},
        headers=live_tenant.headers,
    )
    assert response.status_code == 201, response.text
    return {**response.json(), "run_id": tracked.run_id}


def test_concurrent_registrations_get_distinct_numbers(live_server, live_tenant, model):
    headers = live_tenant.headers
    native = {"run_id": model["run_id"]}
    mlflow = {"name": model["name"], "source": f"runs:/{model['run_id']}/model", "run_id": model["run_id"]}

    def register(index: int) -> Callable[[httpx.Client], httpx.Response]:
        # Half through the native API, half through MLflow's: both draw from the same counter.
        if index % 2:
            return lambda http: http.post(f"/api/v1/models/{model['id']}/versions", json=native, headers=headers)
        return lambda http: http.post("/api/2.0/mlflow/model-versions/create", json=mlflow, headers=headers)

    responses = _together([register(i) for i in range(WORKERS)], live_server.url)
    assert [r.status_code for r in responses] == [200 if i % 2 == 0 else 201 for i in range(WORKERS)]
    numbers = [
        int(r.json()["model_version"]["version"]) if i % 2 == 0 else r.json()["version"]
        for i, r in enumerate(responses)
    ]
    assert sorted(numbers) == list(range(1, WORKERS + 1))


def test_concurrent_promotions_leave_one_production_version(live_server, live_tenant, model):
    headers = live_tenant.headers
    versions = [
        httpx.post(
            f"{live_server.url}/api/v1/models/{model['id']}/versions", json={"run_id": model["run_id"]}, headers=headers
        ).json()
        for _ in range(WORKERS)
    ]

    def promote(version: dict) -> Callable[[httpx.Client], httpx.Response]:
        if version["version"] % 2:
            body = {"stage": "production", "archive_existing": True}
            url = f"/api/v1/model-versions/{version['id']}/transitions"
            return lambda http: http.post(url, json=body, headers=headers)
        body = {
            "name": model["name"],
            "version": str(version["version"]),
            "stage": "Production",
            "archive_existing_versions": True,
        }
        return lambda http: http.post("/api/2.0/mlflow/model-versions/transition-stage", json=body, headers=headers)

    responses = _together([promote(v) for v in versions], live_server.url)
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses]

    listed = httpx.get(
        f"{live_server.url}/api/v1/models/{model['id']}/versions", params={"max_results": 50}, headers=headers
    ).json()["items"]
    stages = sorted(v["stage"] for v in listed)
    assert stages == ["archived"] * (WORKERS - 1) + ["production"]
    # Every promotion was recorded, and every loser was archived by a later one.
    for version in listed:
        history = httpx.get(f"{live_server.url}/api/v1/model-versions/{version['id']}/transitions", headers=headers)
        moves = [(t["from_stage"], t["to_stage"]) for t in history.json()["items"]]
        expected = [("development", "production")]
        if version["stage"] == "archived":
            expected.append(("production", "archived"))
        assert moves == expected
