"""What `tessera seed` leaves a new user to act on, against a live server and a real worker: the seeded
deployment turns healthy on version 2 of the seeded model (a real scikit-learn model its training run
logged), answers an invocation, and a rollback returns it to version 1, which its history shows."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
from typer.testing import CliRunner

from services.tracking.domain.seed import training_data
from tessera.cli import app
from tessera.seed import DEPLOYMENT
from tests.conftest import process_alive, wait_for


@pytest.fixture
def owner(live_server, celery_worker) -> Iterator[httpx.Client]:
    """The seeded owner's API client; the seeded deployment is stopped afterwards (its servers with it)."""
    seeded = CliRunner().invoke(app, ["seed", "--json"])
    assert seeded.exit_code == 0, (seeded.output, seeded.exception)
    key = json.loads(seeded.stdout)["api_key"]
    assert key, "the first seed of this database makes the owner's key"
    with httpx.Client(base_url=live_server.url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as client:
        yield client
        for deployment in client.get("/api/v1/deployments").json()["items"]:
            client.post(f"/api/v1/deployments/{deployment['id']}/stop")
            # The worker stops the processes; waited for, so none outlives the session's worker.
            for pid in (server["pid"] for server in deployment["servers"] if server["pid"]):
                wait_for(lambda pid=pid: not process_alive(pid), 30, f"model server {pid} to stop")


def _deployment(client: httpx.Client, name: str) -> dict:
    return next(item for item in client.get("/api/v1/deployments").json()["items"] if item["name"] == name)


def _version(client: httpx.Client, version_id: str) -> dict:
    answer = client.get(f"/api/v1/model-versions/{version_id}")
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_the_seeded_deployment_serves_version_2_and_rolls_back_to_version_1(owner):
    _, name, _ = DEPLOYMENT
    deployment = wait_for(
        lambda: (found := _deployment(owner, name))["status"] == "healthy" and found, 60, "the seeded deployment"
    )
    serving = _version(owner, deployment["model_version_id"])
    assert (serving["version"], serving["stage"]) == (2, "production")
    assert serving["run_id"] and serving["signature"], "the version has lineage to its training run"

    features, _ = training_data("fraud", 3)
    body = {"dataframe_split": json.loads(features.to_json(orient="split", index=False))}
    answer = owner.post(f"/deployments/{deployment['id']}/invocations", json=body)
    assert answer.status_code == 200, answer.text
    assert len(answer.json()["predictions"]) == 3

    history = owner.get(f"/api/v1/deployments/{deployment['id']}/history").json()["items"]
    assert [(entry["action"], entry["outcome"]) for entry in history] == [("deploy", "succeeded")] * 2
    assert history[0]["from_version_id"] == history[1]["to_version_id"]

    answer = owner.post(f"/api/v1/deployments/{deployment['id']}/rollback", json={"reason": "trying the seed"})
    assert answer.status_code == 200, answer.text
    rolled_back = wait_for(
        lambda: (found := _deployment(owner, name))["status"] == "rolled_back" and found, 60, "the rollback"
    )
    assert _version(owner, rolled_back["model_version_id"])["version"] == 1
    latest = owner.get(f"/api/v1/deployments/{deployment['id']}/history").json()["items"][0]
    assert (latest["action"], latest["outcome"], latest["reason"]) == ("rollback", "succeeded", "trying the seed")
    assert (latest["from_version_id"], latest["to_version_id"]) == (serving["id"], rolled_back["model_version_id"])
    answer = owner.post(f"/deployments/{deployment['id']}/invocations", json=body)
    assert answer.status_code == 200, answer.text
