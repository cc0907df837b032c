"""MLflow's UI served by Tessera, in headless Chromium (Debian's /usr/bin/chromium through Playwright).

Data is logged once per session by the official mlflow client; each test module opens one browser and
signs in through /login as a user of the tenant that owns the data.
"""

from __future__ import annotations

import contextlib
import shutil
import struct
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from tests import factories
from tests.conftest import point_mlflow_at

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "ui"


@dataclass
class Logged:
    """What the mlflow client logged, by the names the pages show."""

    tenant: factories.Tenant
    experiment_id: str
    experiment_name: str
    runs: dict[str, str] = field(default_factory=dict)  # run name -> run id
    autolog_experiment_id: str = ""
    autolog_run_id: str = ""
    logged_model_id: str = ""
    model_name: str = ""


def _png(width: int = 8, height: int = 8) -> bytes:
    """A small red square, written by hand (no imaging library needed)."""
    rows = b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def _log_data(client: MlflowClient, tenant: factories.Tenant, tmp: Path) -> Logged:
    suffix = uuid.uuid4().hex[:6]
    name = f"churn-experiments-{suffix}"
    experiment_id = client.create_experiment(name, tags={"team": "growth"})
    logged = Logged(tenant, experiment_id, name, model_name=f"churn-model-{suffix}")
    for index, (run_name, lr) in enumerate([("brave-owl", 0.1), ("calm-fox", 0.01), ("swift-hare", 0.001)]):
        run = client.create_run(experiment_id, run_name=run_name, tags={"team": "growth", "stage": "tuning"})
        run_id = run.info.run_id
        client.log_param(run_id, "learning_rate", lr)
        client.log_param(run_id, "max_depth", 4 + index)
        for step in range(5):
            client.log_metric(run_id, "accuracy", 0.6 + 0.05 * step + 0.02 * index, step=step)
            client.log_metric(run_id, "loss", 1.0 - 0.1 * step - 0.05 * index, step=step)
        logged.runs[run_name] = run_id
    first = logged.runs["brave-owl"]
    (tmp / "notes.txt").write_text("Trained on the March churn snapshot.\n")
    (tmp / "confusion.png").write_bytes(_png())
    (tmp / "predictions.csv").write_text("customer,churned,score\nc-001,1,0.93\nc-002,0,0.12\n")
    client.log_artifact(first, str(tmp / "notes.txt"))
    client.log_artifact(first, str(tmp / "confusion.png"), artifact_path="plots")
    client.log_artifact(first, str(tmp / "predictions.csv"), artifact_path="data")
    for run_id in logged.runs.values():
        client.set_terminated(run_id)
    return logged


def _log_autolog_run(logged: Logged) -> None:
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    logged.autolog_experiment_id = mlflow.set_experiment(f"iris-autolog-{uuid.uuid4().hex[:6]}").experiment_id
    # Autolog logs the run (params, metrics, estimator.html, dataset); the model is logged by hand with its
    # requirements named, which skips mlflow's requirement inference (a subprocess: 20 s on a busy machine).
    mlflow.sklearn.autolog(log_models=False, silent=True)
    try:
        features, labels = load_iris(return_X_y=True)
        with mlflow.start_run(run_name="iris-logreg") as run:
            estimator = LogisticRegression(max_iter=200).fit(features, labels)
            mlflow.sklearn.log_model(
                estimator, name="model", input_example=features[:3], pip_requirements=["scikit-learn"]
            )
        logged.autolog_run_id = run.info.run_id
    finally:
        mlflow.sklearn.autolog(disable=True)
    model = mlflow.last_logged_model()
    logged.logged_model_id = model.model_id
    client = MlflowClient()
    for _ in range(2):
        mlflow.register_model(f"models:/{model.model_id}", logged.model_name)
    client.set_registered_model_alias(logged.model_name, "champion", "2")
    client.set_model_version_tag(logged.model_name, "2", "validated", "yes")


@pytest.fixture(scope="session")
def logged(live_server, db, settings, tmp_path_factory) -> Iterator[Logged]:
    with db.session_scope() as session:
        tenant = factories.make_tenant(session, jwt_secret=settings.jwt_secret)
    # Logged, then the client's settings undone: the pages are read by the browser, not the mlflow client.
    with pytest.MonkeyPatch.context() as monkeypatch:
        point_mlflow_at(monkeypatch, live_server.url, tenant.api_key)
        data = _log_data(MlflowClient(live_server.url), tenant, tmp_path_factory.mktemp("ui-artifacts"))
        _log_autolog_run(data)
    yield data


class Browser:
    """One headless Chromium; pages signed in as some user, with their console errors and failed requests."""

    def __init__(self, base_url: str):
        from playwright.sync_api import sync_playwright

        self.base_url = base_url
        self._playwright = sync_playwright().start()
        self._browser = self._playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])

    def close(self) -> None:
        self._browser.close()
        self._playwright.stop()

    def signed_in(self, email: str, password: str = factories.DEFAULT_PASSWORD) -> SignedInPage:
        context = self._browser.new_context(base_url=self.base_url, viewport={"width": 1400, "height": 900})
        page = context.new_page()
        watched = SignedInPage(page)
        page.goto("/login")
        page.fill("#email", email)
        page.fill("#password", password)
        page.click("button[type=submit]")
        page.wait_for_url(lambda url: "/login" not in url)
        # MLflow's assistant welcomes every new browser in a side panel; close it to see the whole page.
        with contextlib.suppress(PlaywrightTimeout):  # the panel did not open: nothing to close
            page.get_by_role("button", name="Close").first.click(timeout=10_000)
        return watched


class SignedInPage:
    # MLflow's server answers these with errors too (see shared/reference/mlflow-ui-requests.tsv): the UI
    # reads a 404 from users/current as "no authentication".
    EXPECTED_FAILURES = ("/ajax-api/2.0/mlflow/users/current", "//mlflow.org/docs/")

    def __init__(self, page):
        self.page = page
        self.console_errors: list[str] = []
        self.failed_requests: list[str] = []
        page.on("console", self._on_console)
        page.on("response", self._on_response)
        page.on("requestfailed", self._on_request_failed)

    def _on_console(self, message) -> None:
        # The chart library's own notice, and the browser's note on an expected failure: MLflow's server
        # shows both too.
        url = (message.location or {}).get("url", "")
        if message.type != "error" or "ResizeObserver loop" in message.text:
            return
        if not any(path in url for path in self.EXPECTED_FAILURES):
            self.console_errors.append(message.text)

    def _on_request_failed(self, request) -> None:
        # The traces page's demo video comes from mlflow.org, which this machine cannot reach. A request the
        # page itself cancelled (a new filter replaces the charts it was drawing) reached no server: not a failure.
        if request.failure == "net::ERR_ABORTED":
            return
        if not any(path in request.url for path in self.EXPECTED_FAILURES):
            self.failed_requests.append(f"failed {request.method} {request.url}")

    def _on_response(self, response) -> None:
        if response.status >= 400 and not any(path in response.url for path in self.EXPECTED_FAILURES):
            self.failed_requests.append(f"{response.status} {response.request.method} {response.url}")

    def open(self, route: str) -> None:
        self.console_errors.clear()
        self.failed_requests.clear()
        self.page.goto(f"/#{route}")

    def check_screenshot(self, name: str) -> None:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(ARTIFACTS / f"{name}.png"))

    def check(self, name: str, *texts: str) -> None:
        """Every text visible, then a screenshot, a clean console and no failed request."""
        for text in texts:
            self.page.get_by_text(text, exact=False).first.wait_for(state="visible", timeout=20_000)
        self.page.wait_for_timeout(300)
        self.check_screenshot(name)
        assert self.failed_requests == [], f"{name}: failed requests {self.failed_requests}"
        assert self.console_errors == [], f"{name}: console errors {self.console_errors}"


@pytest.fixture(scope="module")
def browser(live_server) -> Iterator[Browser]:
    opened = Browser(live_server.url)
    yield opened
    opened.close()
