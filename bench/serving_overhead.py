"""Serving overhead: latency and throughput of a model server called directly and through the gateway.

    .venv/bin/python bench/serving_overhead.py [--requests 2000] [--concurrency 4] [--rows 1] [--apps deployer,all]
        [--quick]

Starts one model server (a small sklearn model saved with mlflow) through the deployer's process manager,
drives `POST /invocations` with httpx (bounded in count and time, loopback only) and stops it. Per target:
- latency: p50/p99 over `--requests` sequential requests, so queueing does not hide per-request cost; the
  paths take turns (direct, deployer, all, direct, ...), so all see the same machine load;
- throughput: requests/s with `--concurrency` concurrent keep-alive connections;
- CPU: milliseconds of the serving process's CPU per request, which a busy shared machine distorts far
  less than wall-clock latency.
The gateway targets are uvicorn processes of their own on one scratch SQLite database: `deployer`, the deployer
service alone (`tessera.asgi:deployer`), and `all`, the all-in-one app that `tessera up` and `tessera serve all`
run (`tessera.asgi:all`, every service's routes); `--apps` picks them. The database holds a tenant and a
healthy deployment routed to the same model server, with prediction logging on, as by default: the
deployment is linked to a monitor, so every request and prediction is batched into the database's queue of
served predictions (no worker runs, so they stay there and are counted). A gateway's CPU column is its own
process's. The last line is a JSON summary for scripts (`direct_*`, `<app>_*`, `<app>_overhead_p50_ms`,
`logged_records`, `load_avg_1m` before and after the measured phases).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import mlflow.sklearn
import numpy as np
import pandas as pd
import stopping
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sqlalchemy import func, select

from services.deployer.domain.process_manager import ModelServerSpec, ModelServerState, ProcessManager, free_port
from shared.core.security import generate_api_key
from shared.core.settings import Settings
from shared.db.migrate import upgrade
from shared.db.models import (
    ApiKey,
    Deployment,
    DeploymentServer,
    Model,
    ModelMonitoring,
    ModelVersion,
    Organization,
    OrganizationMembership,
    Project,
    ServedPredictionBatch,
    User,
)
from shared.db.session import get_database

# Upper bound on one phase, whatever --requests says, so a stuck server cannot hang the run.
MAX_SECONDS_PER_PHASE = 120.0
HEADERS = {"content-type": "application/json"}


@dataclass(frozen=True)
class Target:
    label: str
    url: str
    # The process whose CPU is charged to this path (the model server directly, the gateway's own process).
    pid: int
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class TargetResult:
    latencies_ms: np.ndarray
    errors: int
    rps: float
    cpu_ms_per_request: float

    def percentile_ms(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms.size else float("nan")


def save_iris_model(directory: Path) -> tuple[Path, pd.DataFrame]:
    features, target = load_iris(return_X_y=True, as_frame=True)
    path = directory / "iris"
    mlflow.sklearn.save_model(
        LogisticRegression(max_iter=500).fit(features, target), str(path), pip_requirements=["scikit-learn"]
    )
    return path, features


def process_cpu_ms(pid: int) -> float:
    # utime and stime, in clock ticks, are fields 14 and 15 of /proc/PID/stat (11 and 12 after the name).
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) * 1000.0 / os.sysconf("SC_CLK_TCK")


async def drive(
    url: str, body: bytes, *, requests: int, concurrency: int, headers: dict[str, str]
) -> tuple[list[float], int, float]:
    """`requests` POSTs from `concurrency` workers; returns per-request ms, error count, elapsed seconds."""
    latencies: list[float] = []
    errors = 0
    remaining = requests
    deadline = time.monotonic() + MAX_SECONDS_PER_PHASE
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal remaining, errors
        while remaining > 0 and time.monotonic() < deadline:
            remaining -= 1
            started = time.perf_counter()
            response = await client.post(url, content=body, headers={**HEADERS, **headers})
            latencies.append((time.perf_counter() - started) * 1000.0)
            errors += response.status_code != 200

    async with httpx.AsyncClient(limits=limits, timeout=10.0) as client:
        began = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        return latencies, errors, time.perf_counter() - began


async def measure(
    targets: list[Target], model_server_pid: int, body: bytes, args: argparse.Namespace
) -> dict[str, TargetResult]:
    """Latency: the targets take turns, one sequential request each, so a load swing on a shared machine
    hits all of them alike and the overhead (their difference) survives it. Throughput: one after the other."""
    for target in targets:
        await drive(target.url, body, requests=args.warmup, concurrency=args.concurrency, headers=target.headers)
    latencies: dict[str, list[float]] = {target.label: [] for target in targets}
    errors = dict.fromkeys(latencies, 0)
    cpu_before = {target.pid: process_cpu_ms(target.pid) for target in targets}
    deadline = time.monotonic() + MAX_SECONDS_PER_PHASE
    async with httpx.AsyncClient(timeout=10.0) as client:
        for _ in range(args.requests):
            if time.monotonic() > deadline:
                break
            for target in targets:
                started = time.perf_counter()
                response = await client.post(target.url, content=body, headers={**HEADERS, **target.headers})
                latencies[target.label].append((time.perf_counter() - started) * 1000.0)
                errors[target.label] += response.status_code != 200
    results = {}
    for target in targets:
        # Every request, direct or through the gateway, reaches the model server: its CPU is shared by all.
        handled = sum(map(len, latencies.values())) if target.pid == model_server_pid else len(latencies[target.label])
        cpu_ms_per_request = (process_cpu_ms(target.pid) - cpu_before[target.pid]) / max(handled, 1)
        throughput_latencies, throughput_errors, elapsed = await drive(
            target.url, body, requests=args.requests, concurrency=args.concurrency, headers=target.headers
        )
        results[target.label] = TargetResult(
            latencies_ms=np.asarray(latencies[target.label]),
            errors=errors[target.label] + throughput_errors,
            rps=len(throughput_latencies) / elapsed if elapsed else 0.0,
            cpu_ms_per_request=cpu_ms_per_request,
        )
    return results


def report(results: dict[str, TargetResult], concurrency: int) -> dict[str, float]:
    print(f"{'target':<10} {'p50 ms':>8} {'p99 ms':>8} {f'req/s @{concurrency}':>12} {'CPU ms/req':>11} {'errors':>7}")
    summary: dict[str, float] = {}
    for label, result in results.items():
        p50, p99 = result.percentile_ms(50), result.percentile_ms(99)
        print(
            f"{label:<10} {p50:>8.2f} {p99:>8.2f} {result.rps:>12.0f} "
            f"{result.cpu_ms_per_request:>11.3f} {result.errors:>7}"
        )
        summary |= {
            f"{label}_p50_ms": round(p50, 3),
            f"{label}_p99_ms": round(p99, 3),
            f"{label}_rps": round(result.rps, 1),
            f"{label}_cpu_ms_per_request": round(result.cpu_ms_per_request, 3),
        }
    return summary


def seed_deployment(settings: Settings, model_path: Path, server: ModelServerState) -> tuple[uuid.UUID, str]:
    """A user owning an organization and project, a model version and a healthy deployment served by `server`.

    Written straight to the database: the rollout task is not what is measured. Returns (id, API key).
    """
    upgrade(settings.database_url)
    with get_database(settings.database_url).session_scope() as session:
        user = User(email="bench@example.com", full_name="Bench")
        org = Organization(name="Bench", slug="bench", settings={})
        session.add_all([user, org])
        session.flush()
        project = Project(organization_id=org.id, name="Default", slug="default")
        key = generate_api_key()
        session.add_all(
            [
                project,
                OrganizationMembership(organization_id=org.id, user_id=user.id, role="owner"),
                ApiKey(
                    user_id=user.id,
                    organization_id=org.id,
                    name="bench",
                    prefix=key.prefix,
                    key_hash=key.digest,
                    scopes=["deployments:read"],
                ),
            ]
        )
        session.flush()
        model = Model(project_id=project.id, name="iris", tags={}, last_version=1)
        session.add(model)
        session.flush()
        version = ModelVersion(model_id=model.id, version=1, artifact_uri=str(model_path), metrics={}, tags={})
        session.add(version)
        session.flush()
        deployment = Deployment(
            project_id=project.id,
            name="iris",
            target="local",
            status="healthy",
            model_version_id=version.id,
            canary_percent=0,
            shadow_percent=0,
            config={"canary": {}},
        )
        session.add(deployment)
        session.flush()
        # Linked, so the gateway logs what it serves.
        session.add(ModelMonitoring(project_id=project.id, name="iris", deployment_id=deployment.id))
        session.add(server_row(deployment.id, "stable", version.id, model_path, server))
        return deployment.id, key.key


def server_row(
    deployment_id: uuid.UUID, role: str, version_id: uuid.UUID, model_path: Path, server: ModelServerState
) -> DeploymentServer:
    """The row that routes a deployment's `role` to a running model server."""
    return DeploymentServer(
        deployment_id=deployment_id,
        role=role,
        model_version_id=version_id,
        model_uri=str(model_path),
        state="running",
        pid=server.pid,
        port=server.port,
        host=server.host,
        log_path=server.log_path,
        started_at=server.started_at,
    )


def queued_rows(settings: Settings) -> int:
    with get_database(settings.database_url).session_scope() as session:
        return session.scalar(select(func.coalesce(func.sum(ServedPredictionBatch.row_count), 0)))


def start_gateway(env: dict[str, str], port: int, app: str) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "uvicorn", f"tessera.asgi:{app}", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--no-access-log", "--log-level", "warning"]
    process = subprocess.Popen(command, env={**os.environ, **env}, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/openapi.json", timeout=1.0).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"the {app} app did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000, help="requests per phase")
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=4, help="connections in the throughput phase")
    parser.add_argument("--rows", type=int, default=1, help="rows per request")
    parser.add_argument(
        "--apps", default="deployer,all", help="gateway apps to measure: deployer (the service alone), all (tessera up)"
    )
    parser.add_argument("--quick", action="store_true", help="300 requests per phase, 50 to warm up")
    args = parser.parse_args()
    if args.quick:
        args.requests, args.warmup = 300, 50
    apps = [app.strip() for app in args.apps.split(",") if app.strip()]

    with tempfile.TemporaryDirectory(prefix="tessera-bench-") as scratch_dir:
        scratch = Path(scratch_dir)
        model_path, features = save_iris_model(scratch)
        body = json.dumps({"dataframe_split": features.head(args.rows).to_dict(orient="split")}).encode()
        # The gateway process reads the same settings from its environment.
        env = {
            "TESSERA_DATA_DIR": str(scratch / "data"),
            "TESSERA_DATABASE_URL": f"sqlite:///{scratch / 'bench.db'}",
            "TESSERA_LOG_LEVEL": "WARNING",
        }
        settings = Settings(data_dir=scratch / "data", database_url=env["TESSERA_DATABASE_URL"])
        manager = ProcessManager(scratch / "logs")
        server = manager.start(ModelServerSpec(model_uri=str(model_path), name="iris", version="1"))
        gateways: list[subprocess.Popen[bytes]] = []
        try:
            deployment_id, api_key = seed_deployment(settings, model_path, server)
            targets = [Target("direct", f"{server.url}/invocations", server.pid)]
            for app in apps:
                port = free_port()
                gateways.append(start_gateway(env, port, app))
                targets.append(
                    Target(
                        app,
                        f"http://127.0.0.1:{port}/deployments/{deployment_id}/invocations",
                        gateways[-1].pid,
                        {"authorization": f"Bearer {api_key}"},
                    )
                )
            # The figures only mean something next to how busy the machine was while they were taken.
            load_before = os.getloadavg()[0]
            results = asyncio.run(measure(targets, server.pid, body, args))
            load_after = os.getloadavg()[0]
            # Let the last batch leave (the flush interval is one second).
            time.sleep(1.5)
            logged_records = queued_rows(settings)
        finally:
            for gateway in gateways:
                gateway.terminate()
                gateway.wait(timeout=10)
            manager.stop(server)
    summary = report(results, args.concurrency)
    for app in apps:
        summary[f"{app}_overhead_p50_ms"] = round(summary[f"{app}_p50_ms"] - summary["direct_p50_ms"], 3)
        print(
            f"{app}: gateway overhead p50 {summary[f'{app}_overhead_p50_ms']:.2f} ms, "
            f"{summary[f'{app}_cpu_ms_per_request']:.3f} ms of gateway CPU per request, "
            f"throughput {summary[f'{app}_rps'] / summary['direct_rps']:.0%} of direct"
        )
    summary["logged_records"] = logged_records
    summary["load_avg_1m"] = [round(load_before, 2), round(load_after, 2)]
    print(f"records logged: {logged_records}; load average {load_before:.1f} -> {load_after:.1f}")
    print(json.dumps(summary))


if __name__ == "__main__":
    stopping.run(main)
