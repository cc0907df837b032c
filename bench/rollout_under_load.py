"""A failing canary under load, judged by two gateway processes: how long until it is rolled back, and how
many requests the bad version answered before that.

    .venv/bin/python bench/rollout_under_load.py [--runs 3] [--concurrency 8] [--percent 20] [--quick]

Per run: two model servers (the stable version, a sklearn model; the canary, a model that raises on every
request) started by the deployer's process manager; two gateway processes (`uvicorn tessera.asgi:deployer`)
on one scratch SQLite database and one shared rollout state (Redis at `--redis`, or the database's
`rollout_counters` table with `--store database`); a deployment with the canary at `--percent` % and the
default judge (`min_requests` 50 in a 60 s window, error rate at most 5 points above stable's). Clients send
requests to both gateways in turn, `--concurrency` at a time, until the canary has been rolled back.

Figures per run: the decision time, from the canary's first bad answer (as a client saw it) to the rollback's
history row; the time until clients saw the last canary answer (the other process learns of the rollback
within its routing-table TTL, 2 s by default, and stops routing at once if it reached the verdict itself);
the requests the bad version answered before the rollback and in all; and how many rollbacks were
recorded (exactly one however many processes see the breach). The last line is JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
import mlflow.pyfunc
import stopping
from serving_overhead import free_port, save_iris_model, seed_deployment, server_row, start_gateway
from sqlalchemy import select

from services.deployer.domain.process_manager import ModelServerSpec, ModelServerState, ProcessManager
from shared.core.settings import Settings
from shared.db.models import Deployment, DeploymentHistory, Model, ModelVersion
from shared.db.session import get_database

MAX_SECONDS_PER_RUN = 120.0


class AlwaysFails(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        raise RuntimeError("the bad version fails on every request")


@dataclass(frozen=True)
class Answer:
    at: float
    route: str
    status: int


def add_canary(settings: Settings, deployment_id: uuid.UUID, model_path: Path, server: ModelServerState, pct: int):
    with get_database(settings.database_url).session_scope() as session:
        deployment = session.get(Deployment, deployment_id)
        model = session.scalar(select(Model).where(Model.name == "iris"))
        model.last_version = 2
        version = ModelVersion(model_id=model.id, version=2, artifact_uri=str(model_path), metrics={}, tags={})
        session.add(version)
        session.flush()
        deployment.canary_version_id, deployment.canary_percent = version.id, pct
        session.add(server_row(deployment.id, "canary", version.id, model_path, server))


def rollbacks(settings: Settings, deployment_id: uuid.UUID) -> list[float]:
    with get_database(settings.database_url).session_scope() as session:
        rows = session.scalars(
            select(DeploymentHistory.created_at).where(
                DeploymentHistory.deployment_id == deployment_id, DeploymentHistory.action == "auto_rollback"
            )
        ).all()
    return [row.timestamp() for row in rows]


async def load(urls: list[str], body: bytes, headers: dict[str, str], concurrency: int, done) -> list[Answer]:
    """Requests to the gateways in turn until `done()` says so (checked every 0.2 s) or time runs out."""
    answers: list[Answer] = []
    stop = asyncio.Event()
    turn = 0

    async def client_loop(client: httpx.AsyncClient) -> None:
        nonlocal turn
        while not stop.is_set():
            turn += 1
            response = await client.post(urls[turn % len(urls)], content=body, headers=headers)
            answers.append(Answer(time.time(), response.headers.get("x-tessera-route", "-"), response.status_code))

    async def watch() -> None:
        deadline = time.monotonic() + MAX_SECONDS_PER_RUN
        while time.monotonic() < deadline and not await asyncio.to_thread(done):
            await asyncio.sleep(0.2)
        stop.set()

    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=30.0) as client:
        await asyncio.gather(watch(), *(client_loop(client) for _ in range(concurrency)))
    return answers


def one_run(scratch: Path, args: argparse.Namespace, run: int) -> dict[str, float]:
    good_path, features = save_iris_model(scratch)
    bad_path = scratch / "bad"
    mlflow.pyfunc.save_model(str(bad_path), python_model=AlwaysFails(), pip_requirements=["scikit-learn"])
    body = json.dumps({"dataframe_split": features.head(1).to_dict(orient="split")}).encode()
    env = {
        "TESSERA_DATA_DIR": str(scratch / "data"),
        "TESSERA_DATABASE_URL": f"sqlite:///{scratch / 'bench.db'}",
        "TESSERA_LOG_LEVEL": "WARNING",
    }
    if args.store == "redis":
        env |= {"TESSERA_BROKER_URL": args.redis, "TESSERA_BROKER_KEY_PREFIX": f"bench-rollout-{uuid.uuid4().hex[:8]}:"}
    settings = Settings(data_dir=scratch / "data", database_url=env["TESSERA_DATABASE_URL"])
    manager = ProcessManager(scratch / "logs")
    stable = manager.start(ModelServerSpec(model_uri=str(good_path), name="iris", version="1"))
    canary = manager.start(ModelServerSpec(model_uri=str(bad_path), name="iris", version="2"))
    gateways: list[subprocess.Popen[bytes]] = []
    try:
        deployment_id, api_key = seed_deployment(settings, good_path, stable)
        add_canary(settings, deployment_id, bad_path, canary, args.percent)
        urls = []
        for _ in range(2):
            port = free_port()
            gateways.append(start_gateway(env, port, "deployer"))
            urls.append(f"http://127.0.0.1:{port}/deployments/{deployment_id}/invocations")
        headers = {"content-type": "application/json", "authorization": f"Bearer {api_key}"}
        decided: list[float] = []

        def rolled_back_and_settled() -> bool:
            # Two more TTLs after the decision, so both processes show when they stopped routing to it.
            decided[:] = rollbacks(settings, deployment_id)
            return bool(decided) and time.time() > decided[0] + 5.0

        answers = asyncio.run(load(urls, body, headers, args.concurrency, rolled_back_and_settled))
    finally:
        for gateway in gateways:
            gateway.terminate()
            gateway.wait(timeout=10)
        manager.stop(stable)
        manager.stop(canary)
    bad = [answer for answer in answers if answer.route == "canary"]
    if not decided or not bad:
        raise RuntimeError(f"run {run}: no rollback within {MAX_SECONDS_PER_RUN:g} s ({len(bad)} canary answers)")
    first_bad = min(answer.at for answer in bad)
    return {
        "decision_s": round(decided[0] - first_bad, 3),
        "last_canary_answer_s": round(max(answer.at for answer in bad) - first_bad, 3),
        "bad_before_decision": sum(answer.at <= decided[0] for answer in bad),
        "bad_total": len(bad),
        "requests": len(answers),
        "rollbacks_recorded": len(decided),
        "stable_errors": sum(answer.route == "stable" and answer.status >= 500 for answer in answers),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--percent", type=int, default=20, help="the canary's share of the traffic")
    parser.add_argument("--store", choices=("redis", "database"), default="redis", help="the shared rollout state")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--quick", action="store_true", help="one run")
    args = parser.parse_args()
    if args.quick:
        args.runs = 1
    load_before = os.getloadavg()[0]
    results = []
    for run in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="tessera-bench-rollout-") as scratch:
            results.append(one_run(Path(scratch), args, run))
        print(f"run {run + 1}: " + ", ".join(f"{key} {value}" for key, value in results[-1].items()))
    load_after = os.getloadavg()[0]
    summary = {
        key: round(statistics.median(result[key] for result in results), 3)
        for key in ("decision_s", "last_canary_answer_s", "bad_before_decision", "bad_total")
    }
    print(
        f"median of {len(results)}: decision {summary['decision_s']:.2f} s after the first bad answer, "
        f"{summary['bad_before_decision']:.0f} bad answers before it ({summary['bad_total']:.0f} in all); "
        f"load average {load_before:.1f} -> {load_after:.1f}"
    )
    print(json.dumps({**summary, "runs": results, "load_avg_1m": [round(load_before, 2), round(load_after, 2)]}))


if __name__ == "__main__":
    stopping.run(main)
