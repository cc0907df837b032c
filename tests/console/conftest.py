"""The console in headless Chromium against a live all-in-one server and a real Celery worker.

One browser per module; each test gets a fresh context (its own cookies), signed in as one user, and fails
if any page logged a console error or any request failed. Screenshots go to test-artifacts/console/.
"""

from __future__ import annotations

import io
import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from shared.db.base import utcnow
from shared.db.models import (
    Alert,
    Deployment,
    DeploymentHistory,
    Experiment,
    ExperimentRun,
    Model,
    ModelVersion,
)
from tests import factories
from tests.conftest import ROOT, wait_for

ARTIFACTS = ROOT / "test-artifacts" / "console"
CHROMIUM = "/usr/bin/chromium"


@dataclass
class World:
    """What the tests look at: an owner's organization with a deployment mid-canary, a monitor with drifted
    predictions, a firing alert; a viewer of the same organization; a user of another organization."""

    url: str
    owner: factories.Tenant
    viewer: factories.Member
    stranger: factories.Tenant
    model_name: str
    version_ids: list[uuid.UUID]
    run_id: uuid.UUID
    experiment_id: uuid.UUID
    deployment_id: uuid.UUID
    monitor_id: str
    alert_id: uuid.UUID
    extra: dict = field(default_factory=dict)


def _drifted_rows(rows: int, shift: float) -> pd.DataFrame:
    rng = np.random.default_rng(7)
    return pd.DataFrame({"x": rng.normal(shift, 1, rows), "y": rng.normal(10 + shift, 2, rows)})


@pytest.fixture(scope="module")
def world(db, settings, live_server, celery_worker) -> World:
    with db.session_scope() as session:
        owner = factories.make_tenant(session, jwt_secret=settings.jwt_secret)
        viewer = factories.make_member(session, org_id=owner.org_id, role="viewer", jwt_secret=settings.jwt_secret)
        stranger = factories.make_tenant(session, jwt_secret=settings.jwt_secret)
        experiment = Experiment(project_id=owner.project_id, name=factories.unique("training"))
        session.add(experiment)
        session.flush()
        run = ExperimentRun(
            experiment_id=experiment.id,
            name="sturdy-owl-42",
            status="FINISHED",
            start_time=1_700_000_000_000,
            end_time=1_700_000_060_000,
        )
        model = Model(project_id=owner.project_id, name=factories.unique("fraud"), tags={}, last_version=2)
        session.add_all([run, model])
        session.flush()
        versions = [
            ModelVersion(
                model_id=model.id,
                version=n,
                stage=stage,
                run_id=run.id if n == 1 else None,
                artifact_uri=f"mlflow-artifacts:/{uuid.uuid4().hex}/model",
                metrics={},
                tags={},
            )
            for n, stage in ((1, "production"), (2, "staging"))
        ]
        session.add_all(versions)
        session.flush()
        deployment = Deployment(
            project_id=owner.project_id,
            name=factories.unique("fraud-prod"),
            target="local",
            status="healthy",
            model_version_id=versions[0].id,
            canary_version_id=versions[1].id,
            canary_percent=20,
            config={},
            created_by=owner.user_id,
        )
        session.add(deployment)
        session.flush()
        session.add_all(
            [
                DeploymentHistory(
                    deployment_id=deployment.id,
                    action="create",
                    outcome="succeeded",
                    to_version_id=versions[0].id,
                    actor_id=owner.user_id,
                    details={},
                ),
                DeploymentHistory(
                    deployment_id=deployment.id,
                    action="auto_rollback",
                    outcome="succeeded",
                    from_version_id=versions[1].id,
                    to_version_id=versions[0].id,
                    details={},
                    reason="automatic: canary error rate 0.31 > 0.05",
                ),
                DeploymentHistory(
                    deployment_id=deployment.id,
                    action="canary",
                    outcome="succeeded",
                    from_version_id=versions[0].id,
                    to_version_id=versions[1].id,
                    actor_id=owner.user_id,
                    details={},
                    reason="second try",
                ),
            ]
        )
        ids = dict(
            version_ids=[v.id for v in versions],
            run_id=run.id,
            experiment_id=experiment.id,
            deployment_id=deployment.id,
            model_name=model.name,
        )

    api = httpx.Client(base_url=live_server.url, headers=owner.headers, timeout=60)
    reference = _drifted_rows(300, 0.0).to_csv(index=False).encode()
    spec = {
        "name": factories.unique("fraud-drift"),
        "model_version_id": str(ids["version_ids"][0]),
        "project_id": str(owner.project_id),
        "min_rows": 20,
        "quality": {"task": "classification", "thresholds": {"accuracy": {"min": 0.9}}, "min_rows": 10},
    }
    created = api.post(
        "/api/v1/monitors",
        data={"spec": json.dumps(spec)},
        files={"reference": ("reference.csv", io.BytesIO(reference))},
    )
    assert created.status_code == 201, created.text
    monitor_id = created.json()["id"]
    rows = [
        {"features": {"x": float(r.x), "y": float(r.y)}, "prediction": "yes", "request_id": f"r{i}"}
        for i, r in enumerate(_drifted_rows(200, 3.0).itertuples())
    ]
    logged = api.post(f"/api/v1/monitors/{monitor_id}/predictions", json={"rows": rows})
    assert logged.status_code == 201, logged.text
    truth = [{"request_id": f"r{i}", "value": "yes" if i % 4 else "no"} for i in range(200)]
    logged = api.post(f"/api/v1/monitors/{monitor_id}/ground-truth", json={"rows": truth})
    assert logged.status_code == 200, logged.text

    with db.session_scope() as session:
        alert = Alert(
            monitor_id=uuid.UUID(monitor_id),
            project_id=owner.project_id,
            kind="data_drift",
            fingerprint=uuid.uuid4().hex,
            severity="high",
            status="firing",
            title="Data drift on fraud-drift",
            details={"drift_share": 0.5},
            labels={"alertname": "DataDrift", "monitor": spec["name"]},
            started_at=utcnow(),
        )
        session.add(alert)
        session.flush()
        alert_id, fingerprint = alert.id, alert.fingerprint
    # One report before the tests (the check takes over the open drift alert), so there is a history.
    check = api.post(f"/api/v1/monitors/{monitor_id}/checks").json()
    wait_for(
        lambda: api.get(f"/api/v1/monitors/{monitor_id}/checks/{check['id']}").json()["status"] == "done",
        what="the first check",
    )
    api.close()
    _hold_in_the_notifier(live_server.url, owner, fingerprint, spec["name"])
    return World(live_server.url, owner, viewer, stranger, monitor_id=monitor_id, alert_id=alert_id, **ids)


def _hold_in_the_notifier(url: str, owner: factories.Tenant, fingerprint: str, monitor_name: str) -> None:
    """The notifier holds the alert (a rule routes it, with a group wait long enough that nothing is sent
    during the tests) and a firing ClusterDown inhibits it."""
    org = str(owner.org_id)
    with httpx.Client(base_url=url, headers=owner.headers, timeout=60) as api:
        channel = api.post(
            "/api/v1/channels",
            json={"name": "parked", "type": "webhook", "organization_id": org, "url": "http://127.0.0.1:9/parked"},
        )
        assert channel.status_code == 201, channel.text
        for path, body in (
            (
                "/api/v1/rules",
                {
                    "name": "custom alerts",
                    "organization_id": org,
                    "event_types": ["custom.*"],
                    "channel_ids": [channel.json()["id"]],
                    "group_wait_s": 86400,
                },
            ),
            (
                "/api/v1/inhibit-rules",
                {
                    "name": "cluster down mutes drift",
                    "organization_id": org,
                    "source_matchers": ["alertname=ClusterDown"],
                    "target_matchers": ["alertname=DataDrift"],
                },
            ),
            (
                "/api/v1/events",
                {
                    "organization_id": org,
                    "event_type": "custom.cluster",
                    "payload": {"status": "firing", "severity": "critical", "labels": {"alertname": "ClusterDown"}},
                },
            ),
            (
                "/api/v1/events",
                {
                    "organization_id": org,
                    "event_type": "custom.drift",
                    "payload": {
                        "status": "firing",
                        "severity": "high",
                        "fingerprint": fingerprint,
                        "labels": {"alertname": "DataDrift", "monitor": monitor_name},
                    },
                },
            ),
        ):
            answer = api.post(path, json=body)
            assert answer.status_code in (201, 202), answer.text
        wait_for(
            lambda: api.get(f"/api/v1/held-alerts/{fingerprint}").status_code == 200,
            what="the notifier to hold the alert",
        )


@pytest.fixture(scope="module")
def browser() -> Iterator:
    playwright_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed")
    with playwright_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM)
        yield launched
        launched.close()


class Session:
    """One signed-in browser context that records every console error and failed request."""

    def __init__(self, browser, world: World, email: str, name: str):
        self.world = world
        self.name = name
        self.context = browser.new_context(base_url=world.url, viewport={"width": 1360, "height": 900})
        self.problems: list[str] = []
        # (status, path) of refusals a test provokes on purpose (a form the API turns down).
        self.expected_refusals: list[tuple[int, str]] = []
        self.page = self.context.new_page()
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        self.page.on("requestfailed", self._failed)
        self.page.on("response", self._response)
        self.page.on("dialog", lambda dialog: dialog.accept())
        self.shots = 0
        self.sign_in(email)

    def expect_refusal(self, status: int, path: str) -> None:
        self.expected_refusals.append((status, path))

    def _expected(self, status: int, url: str) -> bool:
        return any(status == wanted and url.split("?")[0].endswith(path) for wanted, path in self.expected_refusals)

    def _response(self, response) -> None:
        if response.status >= 400 and not self._expected(response.status, response.url):
            self.problems.append(f"HTTP {response.status}: {response.url}")

    def _console(self, message) -> None:
        if message.type != "error":
            return
        # Chromium logs every 4xx answer as "Failed to load resource"; an expected refusal is no problem.
        status = re.search(r"status of (\d+)", message.text)
        if status and self._expected(int(status.group(1)), message.location.get("url", "")):
            return
        self.problems.append(f"console: {message.text}")

    def _failed(self, request) -> None:
        # The browser drops an icon still loading when the test moves on; nothing failed on the server.
        if not (request.url.endswith("favicon.png") and request.failure == "net::ERR_ABORTED"):
            self.problems.append(f"failed: {request.url} {request.failure}")

    def sign_in(self, email: str) -> None:
        """Through the sign-in page, as a person does: the console sends an anonymous visitor there."""
        self.page.goto("/console/deployments")
        self.page.wait_for_url(re.compile(r"/login\?next="))
        self.page.get_by_label("Email").fill(email)
        self.page.get_by_label("Password").fill(factories.DEFAULT_PASSWORD)
        self.page.get_by_role("button", name="Sign in").click()
        self.page.wait_for_url("**/console/deployments")

    def open(self, path: str):
        response = self.page.goto(path)
        assert response is not None and response.ok, f"{path}: {response.status if response else 'no answer'}"
        return self.page

    def shot(self, label: str) -> None:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        self.shots += 1
        safe = re.sub(r"[^a-z0-9-]+", "-", f"{self.name}-{self.shots:02d}-{label}".lower())
        self.page.screenshot(path=str(ARTIFACTS / f"{safe}.png"), full_page=True)


@pytest.fixture
def signed_in(browser, world, request):
    sessions: list[Session] = []

    def sign_in(email: str) -> Session:
        session = Session(browser, world, email, request.node.name.removeprefix("test_")[:40])
        sessions.append(session)
        return session

    yield sign_in
    for session in sessions:
        session.context.close()
    problems = [p for s in sessions for p in s.problems]
    assert not problems, "the browser saw errors:\n" + "\n".join(problems)
