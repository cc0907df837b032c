"""Tessera tracking vs MLflow's own tracking server: the same mlflow-client workload against both, on the
same PostgreSQL, side by side in one run, printing ratios (see bench/README.md for how to read them).

    .venv/bin/python bench/tracking_vs_mlflow.py                  # everything, ~4 min on 2 cores
    .venv/bin/python bench/tracking_vs_mlflow.py --only search,scale

Each server gets its own scratch database (dropped at the end). Tessera runs its tracking app under
uvicorn with one worker per core (uvloop + httptools); MLflow runs `mlflow server` with its defaults
(4 uvicorn workers) and a postgresql+psycopg2 URI. Bulk fixtures (the 5,000 runs to search, the
100,000-step metric) are written straight into each server's tables with COPY: seeding is not what is
measured, and seeding MLflow through its API would take most of an hour.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PG_SERVER = os.environ.get("BENCH_PG", "postgres@127.0.0.1:5432")
SEARCH_RUNS = 5_000
HISTORY_STEPS = 100_000
SCALE_RUNS = 100_000
SEARCH_FILTER = "metrics.acc > 0.9 AND params.lr = '0.01'"
SEARCH_ORDER = ["metrics.acc DESC"]
WORKLOADS = ("log_batch", "log_metric", "search", "history", "concurrent", "loadgen", "scale")


# --- infrastructure ----------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _process_tree(pid: int) -> list[int]:
    pids = [pid]
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as children:
            for child in children.read().split():
                pids += _process_tree(int(child))
    return pids


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a server and all its workers: a cost that does not move with the load."""
    total = 0
    for process in _process_tree(pid):
        with open(f"/proc/{process}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def postgres_cpu_seconds() -> float:
    """User + system CPU of every PostgreSQL process on the machine: an upper bound of what the database
    spent for a run (other databases' work is included on a shared machine)."""
    total = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as stat:
                text = stat.read()
        except OSError:
            continue
        if text[text.index("(") + 1 : text.rindex(")")].startswith("postgres"):
            fields = text.rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def _admin(sql: str) -> None:
    with psycopg.connect(f"postgresql://{PG_SERVER}/postgres", autocommit=True) as conn:
        conn.execute(sql)


def _wait_http(url: str, proc: subprocess.Popen, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited early ({url})")
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"server did not come up: {url}")


class Servers:
    """Both servers and their scratch databases, torn down whatever happens."""

    def __init__(self, workers: int, async_metric_commit: bool = False) -> None:
        tag = uuid.uuid4().hex[:8]
        self.tessera_db = f"bench_tessera_{tag}"
        self.mlflow_db = f"bench_mlflow_{tag}"
        self.tmp = Path(tempfile.mkdtemp(prefix="bench-tracking-"))
        self.workers = workers
        self.async_metric_commit = async_metric_commit
        self.procs: list[subprocess.Popen] = []

    def __enter__(self) -> Servers:
        _admin(f'CREATE DATABASE "{self.tessera_db}"')
        _admin(f'CREATE DATABASE "{self.mlflow_db}"')
        self.tessera_sqlalchemy_url = f"postgresql+psycopg://{PG_SERVER}/{self.tessera_db}"
        from shared.db.migrate import upgrade

        upgrade(self.tessera_sqlalchemy_url)
        self.api_key = _make_tenant(self.tessera_sqlalchemy_url)
        self.tessera_url = self._start_tessera()
        self.mlflow_url = self._start_mlflow()
        return self

    def _start_tessera(self) -> str:
        port = _free_port()
        env = {
            **os.environ,
            "TESSERA_DATABASE_URL": self.tessera_sqlalchemy_url,
            "TESSERA_DATA_DIR": str(self.tmp / "tessera"),
            "TESSERA_ARTIFACT_ROOT": str(self.tmp / "tessera" / "artifacts"),
            "TESSERA_LOG_LEVEL": "WARNING",
            "TESSERA_TRACKING_ASYNC_METRIC_COMMIT": str(self.async_metric_commit).lower(),
        }
        cmd = [
            sys.executable, "-m", "uvicorn", "services.tracking.app:create_app", "--factory",
            "--host", "127.0.0.1", "--port", str(port), "--workers", str(self.workers),
            "--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "warning",
            # Training jobs pause between epochs: keep their connections instead of racing a close.
            "--timeout-keep-alive", "75",
        ]  # fmt: skip
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, start_new_session=True)
        self.procs.append(proc)
        url = f"http://127.0.0.1:{port}"
        _wait_http(f"{url}/api/3.0/mlflow/server-info", proc)
        return url

    def _start_mlflow(self) -> str:
        port = _free_port()
        cmd = [
            str(Path(sys.executable).parent / "mlflow"), "server",
            "--backend-store-uri", f"postgresql+psycopg2://{PG_SERVER}/{self.mlflow_db}",
            "--artifacts-destination", str(self.tmp / "mlflow-artifacts"),
            "--host", "127.0.0.1", "--port", str(port),
        ]  # fmt: skip
        proc = subprocess.Popen(
            cmd, cwd=self.tmp, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self.procs.append(proc)
        url = f"http://127.0.0.1:{port}"
        _wait_http(f"{url}/health", proc, timeout=180)
        return url

    def __exit__(self, *exc) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, 15)
        for proc in self.procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
        for db in (self.tessera_db, self.mlflow_db):
            _admin(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        shutil.rmtree(self.tmp, ignore_errors=True)


def _make_tenant(database_url: str) -> str:
    """A user owning an org with a default project, and an all-scopes API key (what a team would use)."""
    from shared.core.security import generate_api_key
    from shared.db.models import ApiKey, Organization, OrganizationMembership, Project, User
    from shared.db.session import Database

    db = Database(database_url)
    key = generate_api_key()
    with db.session_scope() as session:
        user = User(email=f"bench-{uuid.uuid4().hex[:6]}@example.com", full_name="Bench")
        org = Organization(name="Bench", slug=f"bench-{uuid.uuid4().hex[:6]}", settings={})
        session.add_all([user, org])
        session.flush()
        session.add(OrganizationMembership(organization_id=org.id, user_id=user.id, role="owner"))
        session.add(Project(organization_id=org.id, name="Default", slug="default"))
        session.add(
            ApiKey(user_id=user.id, organization_id=org.id, name="bench", prefix=key.prefix,
                   key_hash=key.digest, scopes=["admin"])
        )  # fmt: skip
    db.dispose()
    return key.key


# --- seeding (COPY straight into each server's tables) -----------------------------------------------


def _run_rows(n: int, seed: int) -> list[tuple[str, float, float, str, str]]:
    rnd = random.Random(seed)
    return [
        (uuid.uuid4().hex, rnd.random(), rnd.random(), rnd.choice(["0.1", "0.01", "0.001", "0.0001", "1e-05"]),
         rnd.choice(["32", "64", "128"]))
        for _ in range(n)
    ]  # fmt: skip


def _copy(conn: psycopg.Connection, table: str, columns: str, rows) -> None:
    with conn.cursor() as cur, cur.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)


def seed_tessera_runs(db_url: str, experiment_id: str, n: int, seed: int = 7) -> None:
    now = int(time.time() * 1000)
    rows = _run_rows(n, seed)
    exp = uuid.UUID(experiment_id)
    created = datetime.now(UTC)
    with psycopg.connect(db_url.replace("+psycopg", "")) as conn:
        _copy(
            conn,
            "experiment_runs",
            "id, experiment_id, name, status, start_time, end_time, user_name, artifact_uri, created_at, updated_at",
            (
                (
                    r[0],
                    exp,
                    f"run-{i}",
                    "FINISHED",
                    now + i,
                    now + i + 10,
                    "bench",
                    f"mlflow-artifacts:/{experiment_id}/{r[0]}/artifacts",
                    created,
                    created,
                )
                for i, r in enumerate(rows)
            ),
        )
        for key, index in (("acc", 1), ("loss", 2)):
            _copy(
                conn,
                "run_latest_metrics",
                "run_id, key, value, is_nan, step, timestamp",
                ((r[0], key, r[index], False, 0, now) for r in rows),
            )
            _copy(
                conn,
                "run_metrics",
                "run_id, key, value, is_nan, step, timestamp",
                ((r[0], key, r[index], False, 0, now) for r in rows),
            )
        for key, index in (("lr", 3), ("batch", 4)):
            _copy(conn, "run_params", "run_id, key, value", ((r[0], key, r[index]) for r in rows))
        _copy(
            conn, "run_tags", "run_id, key, value", ((r[0], "mlflow.runName", f"run-{i}") for i, r in enumerate(rows))
        )
        conn.execute("ANALYZE")


def seed_mlflow_runs(db_name: str, experiment_id: str, n: int, seed: int = 7) -> None:
    now = int(time.time() * 1000)
    rows = _run_rows(n, seed)
    with psycopg.connect(f"postgresql://{PG_SERVER}/{db_name}") as conn:
        _copy(
            conn,
            "runs",
            "run_uuid, name, source_type, source_name, entry_point_name, user_id, status, "
            "start_time, end_time, source_version, lifecycle_stage, artifact_uri, experiment_id",
            (
                (
                    r[0],
                    f"run-{i}",
                    "UNKNOWN",
                    "",
                    "",
                    "bench",
                    "FINISHED",
                    now + i,
                    now + i + 10,
                    "",
                    "active",
                    f"mlflow-artifacts:/{experiment_id}/{r[0]}/artifacts",
                    int(experiment_id),
                )
                for i, r in enumerate(rows)
            ),
        )
        for key, index in (("acc", 1), ("loss", 2)):
            _copy(
                conn,
                "latest_metrics",
                "key, value, timestamp, step, is_nan, run_uuid",
                ((key, r[index], now, 0, False, r[0]) for r in rows),
            )
            _copy(
                conn,
                "metrics",
                "key, value, timestamp, run_uuid, step, is_nan",
                ((key, r[index], now, r[0], 0, False) for r in rows),
            )
        for key, index in (("lr", 3), ("batch", 4)):
            _copy(conn, "params", "key, value, run_uuid", ((key, r[index], r[0]) for r in rows))
        _copy(conn, "tags", "key, value, run_uuid", (("mlflow.runName", f"run-{i}", r[0]) for i, r in enumerate(rows)))
        conn.execute("ANALYZE")


def seed_history(conn_url: str, table_sql: str, row: Callable[[int], tuple], steps: int) -> None:
    with psycopg.connect(conn_url) as conn:
        _copy(conn, table_sql.split(" (")[0], table_sql.split(" (")[1].rstrip(")"), (row(i) for i in range(steps)))


# --- workloads ----------------------------------------------------------------------------------------


def _client(url: str):
    from mlflow import MlflowClient

    return MlflowClient(url)


def _metrics(n: int, key: str = "m", start_step: int = 0):
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    return [Metric(key, random.random(), now, start_step + i) for i in range(n)]


def bench_log_batch(url: str, experiment_id: str, calls: int) -> float:
    client = _client(url)
    run_id = client.create_run(experiment_id).info.run_id
    batches = [_metrics(1000, start_step=i * 1000) for i in range(calls)]
    client.log_batch(run_id, metrics=_metrics(1000, key="warmup"))
    started = time.perf_counter()
    for batch in batches:
        client.log_batch(run_id, metrics=batch)
    return calls * 1000 / (time.perf_counter() - started)


def bench_log_metric(url: str, experiment_id: str, calls: int) -> float:
    client = _client(url)
    run_id = client.create_run(experiment_id).info.run_id
    client.log_metric(run_id, "warmup", 1.0)
    started = time.perf_counter()
    for step in range(calls):
        client.log_metric(run_id, "loss", random.random(), step=step)
    return calls / (time.perf_counter() - started)


def bench_search(url: str, experiment_id: str, reps: int) -> tuple[float, int]:
    client = _client(url)
    found = client.search_runs([experiment_id], SEARCH_FILTER, order_by=SEARCH_ORDER)
    timings = []
    for _ in range(reps):
        started = time.perf_counter()
        client.search_runs([experiment_id], SEARCH_FILTER, order_by=SEARCH_ORDER)
        timings.append(time.perf_counter() - started)
    return statistics.median(timings) * 1000, len(found)


def bench_history(url: str, run_id: str, reps: int) -> float:
    client = _client(url)
    timings = []
    for _ in range(reps):
        started = time.perf_counter()
        points = client.get_metric_history(run_id, "long")
        timings.append(time.perf_counter() - started)
        assert len(points) == HISTORY_STEPS, len(points)
    return statistics.median(timings)


def bench_concurrent(url: str, experiment_id: str, clients: int, seconds: float) -> float:
    """`clients` training jobs, each a thread with its own run sending 1000-metric batches."""
    client = _client(url)
    run_ids = [client.create_run(experiment_id).info.run_id for _ in range(clients)]
    counts = [0] * clients
    stop = time.monotonic() + seconds
    started = time.perf_counter()

    def job(index: int) -> None:
        step = 0
        while time.monotonic() < stop:
            client.log_batch(run_ids[index], metrics=_metrics(1000, start_step=step))
            step += 1000
            counts[index] += 1000

    threads = [threading.Thread(target=job, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(counts) / (time.perf_counter() - started)


def bench_loadgen(url: str, experiment_id: str, headers: dict, seconds: float, connections: int) -> tuple[float, int]:
    """Server capacity without the mlflow client's own CPU cost: pre-encoded 1000-metric log-batch
    bodies sent by a light asyncio client over kept-alive connections (like mlflow-go's k6 runs)."""
    client = _client(url)
    run_ids = [client.create_run(experiment_id).info.run_id for _ in range(connections)]
    now = int(time.time() * 1000)
    bodies = [
        [
            json.dumps({"run_id": run_id, "metrics": [
                {"key": f"k{i % 10}", "value": random.random(), "timestamp": now, "step": batch * 100 + i // 10}
                for i in range(1000)
            ]}).encode()
            for batch in range(20)
        ]
        for run_id in run_ids
    ]  # fmt: skip

    async def run() -> int:
        sent = 0
        deadline = time.monotonic() + seconds
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        async with httpx.AsyncClient(base_url=url, headers={**headers, "Content-Type": "application/json"},
                                     limits=limits, timeout=60) as http:  # fmt: skip

            async def worker(index: int) -> None:
                nonlocal sent
                i = 0
                while time.monotonic() < deadline:
                    response = await http.post("/api/2.0/mlflow/runs/log-batch", content=bodies[index][i % 20])
                    response.raise_for_status()
                    sent += 1000
                    i += 1

            await asyncio.gather(*(worker(i) for i in range(connections)))
        return sent

    started = time.perf_counter()
    sent = asyncio.run(run())
    return sent / (time.perf_counter() - started), sent // 1000


def bench_scale(url: str, db_url: str, reps: int) -> dict[str, tuple[float, float]]:
    """Tessera alone: p50/p95 of several searches over one experiment of 100,000 runs."""
    client = _client(url)
    experiment_id = client.create_experiment(f"scale-{uuid.uuid4().hex[:6]}")
    seed_tessera_runs(db_url, experiment_id, SCALE_RUNS, seed=11)
    queries = {
        "metric+param filter, order by metric": (SEARCH_FILTER, SEARCH_ORDER),
        "param filter, default order": ("params.batch = '64'", []),
        "metric range, order by metric": ("metrics.loss < 0.05", ["metrics.loss ASC"]),
        "OR + parentheses": ("(params.lr = '0.1' OR params.lr = '0.01') AND metrics.acc > 0.99", []),
        "no filter, order by start_time": ("", ["attributes.start_time DESC"]),
    }
    results = {}
    for name, (filter_string, order_by) in queries.items():
        timings = []
        for _ in range(reps):
            started = time.perf_counter()
            client.search_runs([experiment_id], filter_string, order_by=order_by, max_results=100)
            timings.append((time.perf_counter() - started) * 1000)
        timings.sort()
        results[name] = (statistics.median(timings), timings[max(0, int(len(timings) * 0.95) - 1)])
    return results


# --- the run -------------------------------------------------------------------------------------------


def _row(name: str, tessera: float, mlflow: float, unit: str, higher_is_better: bool) -> dict:
    ratio = tessera / mlflow if higher_is_better else mlflow / tessera
    print(f"{name:<44} {tessera:>12,.1f} {mlflow:>12,.1f}  {unit:<10} {ratio:>6.1f}x", flush=True)
    return {"workload": name, "tessera": tessera, "mlflow": mlflow, "unit": unit, "speedup": round(ratio, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=",".join(WORKLOADS), help=f"comma-separated subset of {WORKLOADS}")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2, help="Tessera uvicorn workers")
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of the timed ingest runs")
    parser.add_argument(
        "--connections",
        type=int,
        default=8,
        help="load generator connections (a closed loop: too few measure commit latency, not capacity)",
    )
    parser.add_argument(
        "--async-metric-commit",
        action="store_true",
        help="Tessera commits metric ingest without waiting for the WAL flush (TESSERA_TRACKING_ASYNC_METRIC_COMMIT)",
    )
    args = parser.parse_args()
    only = set(args.only.split(","))
    results: list[dict] = []
    print(f"load before: {os.getloadavg()}; Tessera async metric commit: {args.async_metric_commit}", flush=True)
    with Servers(args.workers, args.async_metric_commit) as servers:
        # The mlflow client sends this bearer token to both; MLflow's server (no auth app) ignores it.
        os.environ["MLFLOW_TRACKING_TOKEN"] = servers.api_key
        urls = {"tessera": servers.tessera_url, "mlflow": servers.mlflow_url}
        experiments = {
            name: _client(url).create_experiment(f"bench-{uuid.uuid4().hex[:6]}") for name, url in urls.items()
        }
        print(f"{'workload':<44} {'tessera':>12} {'mlflow':>12}  {'unit':<10} {'ratio':>7}", flush=True)

        if "log_batch" in only:
            t = bench_log_batch(urls["tessera"], experiments["tessera"], calls=30)
            m = bench_log_batch(urls["mlflow"], experiments["mlflow"], calls=6)
            results.append(_row("log_batch, 1 client (1000 metrics/call)", t, m, "metrics/s", True))
        if "log_metric" in only:
            t = bench_log_metric(urls["tessera"], experiments["tessera"], calls=1000)
            m = bench_log_metric(urls["mlflow"], experiments["mlflow"], calls=80)
            results.append(_row("log_metric, 1 client", t, m, "calls/s", True))
        if "search" in only:
            exps = {
                name: _client(url).create_experiment(f"search-{uuid.uuid4().hex[:6]}") for name, url in urls.items()
            }
            seed_tessera_runs(servers.tessera_sqlalchemy_url, exps["tessera"], SEARCH_RUNS)
            seed_mlflow_runs(servers.mlflow_db, exps["mlflow"], SEARCH_RUNS)
            t, t_found = bench_search(urls["tessera"], exps["tessera"], reps=30)
            m, m_found = bench_search(urls["mlflow"], exps["mlflow"], reps=15)
            assert t_found == m_found, (t_found, m_found)
            results.append(_row(f"search_runs median, {SEARCH_RUNS:,} runs ({t_found} hits)", t, m, "ms", False))
        if "history" in only:
            now = int(time.time() * 1000)
            t_run = _client(urls["tessera"]).create_run(experiments["tessera"]).info.run_id
            m_run = _client(urls["mlflow"]).create_run(experiments["mlflow"]).info.run_id
            seed_history(
                servers.tessera_sqlalchemy_url.replace("+psycopg", ""),
                "run_metrics (run_id, key, value, is_nan, step, timestamp)",
                lambda i: (t_run, "long", i * 0.5, False, i, now + i),
                HISTORY_STEPS,
            )
            seed_history(f"postgresql://{PG_SERVER}/{servers.mlflow_db}",
                         "metrics (key, value, timestamp, run_uuid, step, is_nan)",
                         lambda i: ("long", i * 0.5, now + i, m_run, i, False), HISTORY_STEPS)  # fmt: skip
            t = bench_history(urls["tessera"], t_run, reps=3)
            m = bench_history(urls["mlflow"], m_run, reps=2)
            results.append(_row(f"get_metric_history, {HISTORY_STEPS:,} steps", t, m, "s", False))
        if "concurrent" in only:
            t = bench_concurrent(urls["tessera"], experiments["tessera"], 20, args.seconds)
            m = bench_concurrent(urls["mlflow"], experiments["mlflow"], 20, args.seconds)
            results.append(_row("log_batch, 20 concurrent clients", t, m, "metrics/s", True))
        if "loadgen" in only:
            headers = {"Authorization": f"Bearer {servers.api_key}"}
            rates, cpu_per_batch, pg_per_batch, client_per_batch = {}, {}, {}, {}
            for (name, url), proc in zip(urls.items(), servers.procs, strict=True):
                before, pg_before, client_before = cpu_seconds(proc.pid), postgres_cpu_seconds(), time.process_time()
                rates[name], batches = bench_loadgen(url, experiments[name], headers, args.seconds, args.connections)
                cpu_per_batch[name] = (cpu_seconds(proc.pid) - before) / batches * 1000
                pg_per_batch[name] = (postgres_cpu_seconds() - pg_before) / batches * 1000
                client_per_batch[name] = (time.process_time() - client_before) / batches * 1000
            results.append(
                _row("log-batch, pre-encoded bodies (load generator)", rates["tessera"], rates["mlflow"],
                     "metrics/s", True)
            )  # fmt: skip
            results.append(
                _row("  server CPU per 1000-metric batch", cpu_per_batch["tessera"], cpu_per_batch["mlflow"],
                     "ms", False)
            )  # fmt: skip
            # Where the rest of the two cores went: the database and the generator itself.
            results.append(
                _row("  PostgreSQL CPU per batch (all backends)", pg_per_batch["tessera"], pg_per_batch["mlflow"],
                     "ms", False)
            )  # fmt: skip
            results.append(
                _row("  load generator CPU per batch", client_per_batch["tessera"], client_per_batch["mlflow"],
                     "ms", False)
            )  # fmt: skip
        if "scale" in only:
            for name, (p50, p95) in bench_scale(urls["tessera"], servers.tessera_sqlalchemy_url, reps=20).items():
                print(f"tessera search over {SCALE_RUNS:,} runs, {name:<40} p50 {p50:6.1f} ms  p95 {p95:6.1f} ms",
                      flush=True)  # fmt: skip
                results.append({"workload": f"scale: {name}", "p50_ms": round(p50, 1), "p95_ms": round(p95, 1)})
    print(f"load after: {os.getloadavg()}", flush=True)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
