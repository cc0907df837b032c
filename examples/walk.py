"""The README's walk, from training to a signed webhook, against a running Tessera.

    TESSERA_URL=http://127.0.0.1:8000 TESSERA_API_KEY=tsk_... python examples/walk.py

The key is the one `tessera seed` prints (the owner's, every scope). Tessera must be allowed to call this
machine's webhook receiver: start it with TESSERA_OUTBOUND_ALLOWLIST='["127.0.0.1"]'. Steps:

1. train a model and log it with the official mlflow client, registered as a new model version;
2. deploy that version (a local model server, started by Tessera's worker);
3. create a monitor of the deployment, with the training data as its reference;
4. a webhook channel to a receiver this script runs, and a rule sending it firing alerts;
5. predict through the gateway, with traffic that has drifted from the training data;
6. run the monitor's check once the predictions have reached it: data drift, an alert labelled with the
   model, version and deployment;
7. the signed webhook arrives; its signature is verified and its link followed back to the alert.
Each step prints one line; any failure exits non-zero with the reason.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import mlflow
import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from standardwebhooks import Webhook

FEATURES = ["amount", "age"]


class WebhookReceiver:
    """A local HTTP endpoint that keeps every POST (headers and body)."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                received.append(({name.lower(): value for name, value in self.headers.items()}, body))
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def step(text: str) -> None:
    print(f"- {text}", flush=True)


def wait_for(what: str, probe: Callable[[], Any], timeout: float, every: float = 1.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        time.sleep(every)
    raise SystemExit(f"walk failed: timed out after {timeout:.0f} s waiting for {what}")


def checked(response: httpx.Response, expected: int = 200) -> Any:
    if response.status_code != expected:
        raise SystemExit(
            f"walk failed: {response.request.method} {response.request.url} answered "
            f"{response.status_code}: {response.text[:500]}"
        )
    return response.json() if response.content else None


def training_data(rows: int, shift: float = 0.0, seed: int = 7) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"amount": rng.normal(100 + shift * 50, 20, rows), "age": rng.normal(40 + shift * 15, 8, rows)})


def main() -> None:
    base = os.environ.get("TESSERA_URL", "http://127.0.0.1:8000").rstrip("/")
    key = os.environ.get("TESSERA_API_KEY") or sys.exit("Set TESSERA_API_KEY (the key `tessera seed` prints)")
    api = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=60)
    name = f"walk-{uuid.uuid4().hex[:6]}"

    # 1. Train and register with the official mlflow client (its token is the API key).
    os.environ["MLFLOW_TRACKING_TOKEN"] = key
    mlflow.set_tracking_uri(base)
    mlflow.set_registry_uri(base)  # else an MLFLOW_REGISTRY_URI in the environment would take the registrations
    mlflow.set_experiment(name)
    train = training_data(500)
    labels = (train.amount > 100).astype(int)
    with mlflow.start_run() as run:
        model = LogisticRegression().fit(train, labels)
        mlflow.log_metric("accuracy", float(model.score(train, labels)))
        mlflow.sklearn.log_model(
            model,
            name="model",
            input_example=train.head(2),
            registered_model_name=name,
            pip_requirements=["scikit-learn"],
            serialization_format="cloudpickle",
        )
    versions = checked(api.get("/api/v1/model-versions", params={"run_id": str(uuid.UUID(run.info.run_id))}))
    version = next(item for item in versions["items"] if item["version"] in (1, "1"))
    step(f"trained and registered {name} version 1 (run {run.info.run_id})")

    # 2. Deploy, and wait for the worker to start its model server.
    deployment = checked(
        api.post("/api/v1/deployments", json={"name": f"{name}-prod", "model_version_id": version["id"]}), 201
    )
    deployment = wait_for(
        "the deployment to serve",
        lambda: (
            (found := checked(api.get(f"/api/v1/deployments/{deployment['id']}")))["status"] in ("healthy", "failed")
            and found
        ),
        timeout=180,
    )
    if deployment["status"] != "healthy":
        raise SystemExit(f"walk failed: the deployment is {deployment['status']}: {deployment['status_reason']}")
    step(f"deployed as {deployment['name']} ({deployment['id']})")

    # 3. A monitor of the deployment: the link is what sends the gateway's traffic to it.
    spec = {"name": f"{name}-drift", "deployment_id": deployment["id"], "min_rows": 100, "window_s": 3600}
    monitor = checked(
        api.post(
            "/api/v1/monitors",
            data={"spec": json.dumps(spec)},
            files={"reference": ("reference.csv", train.to_csv(index=False).encode())},
        ),
        201,
    )
    linked = checked(api.get(f"/api/v1/deployments/{deployment['id']}"))["monitor_id"]
    assert linked == monitor["id"], f"the deployment shows monitor {linked}, not {monitor['id']}"
    step(f"monitor {monitor['name']} watches the deployment")

    # 4. Where alerts go: a signed webhook to this script.
    receiver = WebhookReceiver()
    channel = checked(
        api.post("/api/v1/channels", json={"name": f"{name}-hook", "type": "webhook", "url": receiver.url}), 201
    )
    rule = {
        "name": f"{name}-alerts",
        "channel_ids": [channel["id"]],
        "event_types": ["alert.firing"],
        "group_wait_s": 0,
    }
    checked(api.post("/api/v1/rules", json=rule), 201)
    step(f"webhook channel to {receiver.url}, rule for firing alerts")

    # 5. Traffic through the gateway, drifted from the training data.
    drifted = training_data(300, shift=2.0, seed=11)
    for start in range(0, len(drifted), 100):
        chunk = drifted.iloc[start : start + 100]
        answer = checked(
            api.post(
                f"/deployments/{deployment['id']}/invocations",
                json={"dataframe_split": chunk.to_dict(orient="split")},
            )
        )
        assert len(answer["predictions"]) == len(chunk)
    step(f"served {len(drifted)} predictions through the gateway")

    # 6. Check once the predictions have reached the monitor (the worker logs them every few seconds).
    def checked_report() -> dict | None:
        run = checked(api.post(f"/api/v1/monitors/{monitor['id']}/checks"), 202)
        finished = wait_for(
            "the check to finish",
            lambda: (
                (found := checked(api.get(f"/api/v1/monitors/{monitor['id']}/checks/{run['id']}")))["status"]
                in ("done", "failed", "insufficient_data")
                and found
            ),
            timeout=120,
        )
        if finished["status"] == "failed":
            raise SystemExit(f"walk failed: the check failed: {finished['error']}")
        return finished if finished["status"] == "done" else None

    wait_for("the served predictions to reach the monitor", checked_report, timeout=120, every=2)
    alerts = checked(api.get("/api/v1/alerts", params={"monitor_id": monitor["id"], "status": "firing"}))["items"]
    if not alerts:
        raise SystemExit("walk failed: the check found no drift")
    alert = alerts[0]
    labels = alert["labels"]
    expected = {"model": name, "version": "1", "deployment": deployment["name"]}
    assert {label: labels.get(label) for label in expected} == expected, labels
    step(f"drift alert {alert['id']} ({alert['severity']}): {alert['title']}")

    # 7. The webhook: signed with the channel's secret, its alert's link leads back to the alert.
    def alert_webhook() -> dict | None:
        for headers, body in receiver.received:
            Webhook(channel["signing_secret"]).verify(body, headers)
            payload = json.loads(body)
            if any(item.get("url", "").endswith(f"/api/v1/alerts/{alert['id']}") for item in payload["alerts"]):
                return payload
        return None

    payload = wait_for("the signed webhook", alert_webhook, timeout=120)
    url = next(item["url"] for item in payload["alerts"] if item["url"].endswith(alert["id"]))
    followed = checked(httpx.get(url, headers={"Authorization": f"Bearer {key}"}, timeout=30))
    assert followed["id"] == alert["id"], followed
    step(f"signed webhook received; its link {url} opens the alert")
    receiver.server.shutdown()
    print("walk complete")


if __name__ == "__main__":
    main()
