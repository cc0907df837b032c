"""The command line for daily work against a live server and a real worker: deploy by model name and alias,
canary, promote and roll back; a monitor created from a reference file, checked, its report read; a webhook
channel tested against a local receiver; an alert listed, acknowledged and silenced. Errors are one line.

The commands run in-process through Typer's CliRunner (the server is a real one on a port, reached over
HTTP); the one-line errors are also checked on the real `tessera` process.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import mlflow
import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from typer.testing import CliRunner

from tessera.cli import app
from tests import factories
from tests.conftest import ROOT, free_port, point_mlflow_at

FEATURES = ["amount", "age"]


def frame(rows: int, shift: float = 0.0, seed: int = 7) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"amount": rng.normal(100 + shift * 50, 20, rows), "age": rng.normal(40 + shift * 15, 8, rows)})


class Cli:
    """`tessera …` in-process, with the live server's URL and the tenant's key in the environment."""

    def __init__(self, url: str, api_key: str):
        self.env = {"TESSERA_URL": url, "TESSERA_API_KEY": api_key, "COLUMNS": "250"}
        self.runner = CliRunner()

    def __call__(self, *args: str, ok: bool = True):
        result = self.runner.invoke(app, list(args), env=self.env)
        if ok:
            assert result.exit_code == 0, (args, result.output, result.exception)
        return result

    def json(self, *args: str):
        return json.loads(self(*args, "--json").stdout)


@pytest.fixture(scope="module")
def tenant(db, settings) -> factories.Tenant:
    with db.session_scope() as session:
        return factories.make_tenant(session, jwt_secret=settings.jwt_secret)


@pytest.fixture(scope="module")
def cli(live_server, tenant) -> Cli:
    return Cli(live_server.url, tenant.api_key)


@pytest.fixture(scope="module")
def model_name(live_server, tenant, cli) -> Iterator[str]:
    """A model with versions 1 and 2 (one logged sklearn model, registered twice); alias `champion` -> 1."""
    name = factories.unique("cli-model")
    env = pytest.MonkeyPatch()
    point_mlflow_at(env, live_server.url, tenant.api_key)
    mlflow.set_experiment(factories.unique("cli"))
    train = frame(300)
    with mlflow.start_run():
        model = LogisticRegression().fit(train, (train.amount > 100).astype(int))
        info = mlflow.sklearn.log_model(
            model, name="model", pip_requirements=["scikit-learn"], serialization_format="cloudpickle"
        )
    for _ in range(2):
        mlflow.register_model(info.model_uri, name)
    env.undo()
    import httpx

    headers = tenant.headers
    version = httpx.get(f"{live_server.url}/api/v1/model-versions/{name}:1", headers=headers).json()
    answer = httpx.put(
        f"{live_server.url}/api/v1/models/{version['model_id']}/aliases/champion", json={"version": 1}, headers=headers
    )
    assert answer.status_code == 200, answer.text
    yield name


def test_deploy_by_alias_canary_and_roll_back(cli, model_name, celery_worker):
    name = factories.unique("cli-prod")
    deployed = cli("deployments", "deploy", name, "--model", model_name, "--alias", "champion")
    assert "healthy" in deployed.stdout and f"{model_name}:1" in deployed.stdout, deployed.stdout
    try:
        table = cli("deployments", "list").stdout
        assert name in table and f"{model_name}:1" in table and "healthy" in table, table
        listed = {row["name"]: row for row in cli.json("deployments", "list")}
        assert listed[name]["status"] == "healthy"
        assert len(cli.json("deployments", "list", "--limit", "1")) == 1

        canary = cli.json("deployments", "canary", name, "--model", model_name, "--version", "2", "--percent", "30")
        assert canary["status"] == "healthy" and canary["canary_percent"] == 30
        assert f"{model_name}:2 at 30 %" in cli("deployments", "show", name).stdout

        # Rolling back a canary drops it (no server to start); the stable version keeps serving.
        rolled_back = cli.json("deployments", "rollback", name, "--reason", "from the command line")
        assert rolled_back["status"] == "rolled_back" and rolled_back["canary_version_id"] is None
        shown = cli("deployments", "show", rolled_back["id"]).stdout
        assert f"{model_name}:1" in shown and f"{model_name}:2" not in shown, shown
        nothing_to_promote = cli("deployments", "promote", name, ok=False)
        assert nothing_to_promote.exit_code == 1
        assert nothing_to_promote.stderr.strip() == "Error: INVALID_STATE: There is no canary to promote (HTTP 400)"
        actions = [entry["action"] for entry in cli.json("deployments", "history", name)]
        assert actions[:3] == ["rollback", "canary", "deploy"], actions
        assert "from the command line" in cli("deployments", "history", name).stdout

        batched = cli.json("deployments", "update", name, "--max-batch-size", "16", "--max-latency-ms", "2")
        assert batched["batching"] == {"max_batch_size": 16, "max_latency_ms": 2.0} and batched["replicas"] == 1
        assert "up to 16 requests, 2 ms" in cli("deployments", "show", name).stdout
        assert cli.json("deployments", "update", name, "--no-batching")["batching"] is None
        nothing = cli("deployments", "update", name, ok=False)
        assert nothing.exit_code == 1 and "Nothing to change" in nothing.stderr
    finally:
        cli("deployments", "stop", name)


class Receiver:
    """A local webhook endpoint keeping every POST body."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        bodies = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                bodies.append(self.rfile.read(int(self.headers.get("content-length", 0))))
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def test_webhook_channel_tested_and_a_rule_sending_to_it(cli):
    receiver = Receiver()
    try:
        channel = factories.unique("cli-hook")
        created = cli("channels", "create", channel, "--type", "webhook", "--to", receiver.url).stdout
        assert "whsec_" in created, created
        assert channel in {row["name"] for row in cli.json("channels", "list")}

        tested = cli("channels", "test", channel).stdout
        assert "delivered" in tested, tested
        assert len(receiver.bodies) == 1 and b"TesseraTestNotification" in receiver.bodies[0]

        rule = factories.unique("cli-rule")
        cli("rules", "create", rule, "--channel", channel, "--event-type", "alert.firing", "--group-wait", "0")
        table = cli("rules", "list").stdout
        assert rule in table and channel in table and "alert.firing" in table, table
    finally:
        receiver.server.shutdown()


def test_monitor_check_report_and_its_alert_acknowledged_and_silenced(
    cli, model_name, live_server, tenant, tmp_path, celery_worker
):
    import httpx

    reference = tmp_path / "reference.csv"
    frame(400).to_csv(reference, index=False)
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"min_rows": 50, "window_s": 3600}))
    name = factories.unique("cli-monitor")
    monitor = cli.json(
        "monitors",
        "create",
        name,
        "--reference",
        str(reference),
        "--spec",
        str(spec),
        "--model",
        model_name,
        "--version",
        "1",
    )
    assert monitor["min_rows"] == 50 and monitor["model_version_id"]
    assert name in cli("monitors", "list").stdout

    drifted = frame(200, shift=2.0, seed=11)
    rows = [{"features": row, "request_id": str(uuid.uuid4())} for row in drifted.to_dict(orient="records")]
    logged = httpx.post(
        f"{live_server.url}/api/v1/monitors/{monitor['id']}/predictions", json={"rows": rows}, headers=tenant.headers
    )
    assert logged.status_code == 201, logged.text

    checked = cli("monitors", "check", name, "--fail-on-drift", ok=False)
    assert checked.exit_code == 1 and "done" in checked.stdout, checked.output
    report = cli("monitors", "report", name).stdout
    for column in FEATURES:
        assert column in report
    assert "no drift" not in report and "drift" in report, report
    assert cli.json("monitors", "report", name)["report"]["columns"]["amount"]["drift"] is True

    [alert] = cli.json("alerts", "list", "--monitor", monitor["id"], "--status", "firing")
    assert alert["id"] in cli("alerts", "list").stdout
    assert cli.json("alerts", "ack", alert["id"])["status"] == "acknowledged"
    silence = cli.json("alerts", "silence", alert["id"], "--for", "1h", "--comment", "looking into it")
    matchers = {matcher["name"]: matcher["value"] for matcher in silence["matchers"]}
    assert matchers["alertname"] == "monitor_data_drift" and matchers["model"] == model_name
    assert silence["state"] == "active"
    assert cli.json("alerts", "resolve", alert["id"])["status"] == "resolved"


def test_errors_are_one_line_and_exit_non_zero(cli, live_server):
    unknown = cli("deployments", "deploy", "x", "--model", "no-such-model", "--version", "1", ok=False)
    assert unknown.exit_code == 1
    [line] = unknown.stderr.strip().splitlines()
    assert line.startswith("Error: RESOURCE_DOES_NOT_EXIST") and "no-such-model:1" in line, line

    bad_key = cli("alerts", "list", "--api-key", "tsk_not-a-key", ok=False)
    [line] = bad_key.stderr.strip().splitlines()
    assert bad_key.exit_code == 1 and "(HTTP 401)" in line, line

    missing = cli("monitors", "report", "no-such-monitor", ok=False)
    assert missing.exit_code == 1 and "No monitor named 'no-such-monitor'" in missing.stderr


def test_the_real_command_says_in_one_line_that_the_server_is_down():
    down = f"http://127.0.0.1:{free_port()}"
    result = subprocess.run(
        [sys.executable, "-m", "tessera", "deployments", "list", "--url", down, "--api-key", "tsk_x"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert result.returncode == 1 and result.stdout == ""
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"Error: Cannot reach Tessera at {down}") and "Traceback" not in result.stderr, line
