"""Tessera tracking vs MLflow's own tracking server: the same mlflow-client calls against both, on the
same PostgreSQL, side by side in one run, printing per call type the server's part and the ratio (see
bench/README.md for how to read them).

    .venv/bin/python bench/tracking_vs_mlflow.py            # every call type, 20 client processes, load generator
    .venv/bin/python bench/tracking_vs_mlflow.py --quick    # the same with fewer calls (~3 min on 2 cores)
    .venv/bin/python bench/tracking_vs_mlflow.py --only log_metric,search_runs

For a sequential client, a call's wall time is the client's own CPU (the mlflow client builds and parses
protobuf JSON in Python) plus the server part: the server, the network and the database. Each timed loop
is wrapped in time.process_time(), so the server part is wall minus client CPU; the servers' own CPU (every
worker process, from /proc) is printed too, since on a loaded machine wall time also holds waits for a core.

Each server gets its own scratch database (dropped at the end). Tessera runs the all-in-one app (every
service's routes, as `tessera up` serves them) under uvicorn with one worker per core (uvloop + httptools);
MLflow runs `mlflow server` with its defaults and a postgresql+psycopg2 URI. Bulk fixtures (the runs to
search, the long metric history) are written straight into each server's tables with COPY and, as after
a real bulk load, without a manual ANALYZE: seeding is not what is measured, and seeding MLflow through
its API would take most of an hour.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import httpx
import psycopg
import stopping

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PG_SERVER = os.environ.get("BENCH_PG", "postgres@127.0.0.1:5432")
SEARCH_SMALL = 1_000
SEARCH_LARGE = 100_000
SEARCH_LARGE_QUICK = 10_000
HISTORY_STEPS = 20_000
SEARCH_EXPERIMENTS = 200
SEARCH_FILTER = "metrics.acc > 0.9 AND params.lr = '0.01'"
SEARCH_ORDER = ["metrics.acc DESC"]


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
            sys.executable, "-m", "uvicorn", "tessera.asgi:all",
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


def seed_history(conn_url: str, table_sql: str, row: Callable[[int], tuple], steps: int) -> None:
    with psycopg.connect(conn_url) as conn:
        _copy(conn, table_sql.split(" (")[0], table_sql.split(" (")[1].rstrip(")"), (row(i) for i in range(steps)))


# --- timing ---------------------------------------------------------------------------------------------


@dataclass
class Timing:
    """One call type's timed loop against one server. The server part of a call is its wall time minus
    the client's own CPU time (the mlflow client builds and parses protobuf JSON in Python): what a
    sequential client waits for the server, network and database."""

    calls: int
    wall_s: float
    client_cpu_s: float
    server_cpu_s: float  # the server's process tree, from /proc (its workers included)
    server_parts_ms: list[float]  # per call

    @property
    def wall_ms(self) -> float:
        return self.wall_s / self.calls * 1000

    @property
    def client_share(self) -> float:
        return self.client_cpu_s / self.wall_s

    @property
    def server_part_ms(self) -> float:
        return (self.wall_s - self.client_cpu_s) / self.calls * 1000

    @property
    def server_cpu_ms(self) -> float:
        return self.server_cpu_s / self.calls * 1000

    def percentile(self, q: float) -> float:
        ordered = sorted(self.server_parts_ms)
        return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def settle() -> None:
    """Before each timed loop: the writes of earlier loops (dirty buffers, the OS's delayed writeback) go
    to disk now, not during this loop, where a durable commit's WAL flush would queue behind them. Without
    it each server's loop paid for the previous loop's I/O (often the other server's), at random."""
    with contextlib.suppress(psycopg.Error):  # not a superuser: the OS's sync still flushes what is pending
        _admin("CHECKPOINT")
    os.sync()


def commit_floor(conninfo: str, n: int = 200) -> list[float]:
    """The wall time (ms) of a durable one-row INSERT on an autocommit connection (one WAL flush each) on
    the same PostgreSQL, just before a write call's loop: what any durable write call waits for at least,
    whatever the server, and what the disk's other traffic makes it at that moment."""
    walls = []
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS bench_commit_floor (id bigint GENERATED ALWAYS AS IDENTITY, v text)")
        for _ in range(n):
            started = time.perf_counter()
            conn.execute("INSERT INTO bench_commit_floor (v) VALUES ('x')")
            walls.append((time.perf_counter() - started) * 1000)
    return sorted(walls)


def timed(server_pid: int, calls: list[Callable[[], object]]) -> Timing:
    parts = []
    server_before = cpu_seconds(server_pid)
    cpu_before, wall_before = time.process_time(), time.perf_counter()
    for call in calls:
        cpu, wall = time.process_time(), time.perf_counter()
        call()
        parts.append(((time.perf_counter() - wall) - (time.process_time() - cpu)) * 1000)
    wall_s, client_cpu_s = time.perf_counter() - wall_before, time.process_time() - cpu_before
    return Timing(len(calls), wall_s, client_cpu_s, cpu_seconds(server_pid) - server_before, parts)


# --- call types -----------------------------------------------------------------------------------------
# Each builds its fixtures against one server (untimed) and returns the calls to time, `n` of them.


def _client(url: str):
    from mlflow import MlflowClient

    return MlflowClient(url)


def _metrics(n: int, key: str = "m", start_step: int = 0):
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    return [Metric(key, random.random(), now, start_step + i) for i in range(n)]


@dataclass
class Target:
    """One server as the call types see it."""

    name: str
    url: str
    pid: int
    experiment_id: str
    seed_runs: Callable[[str, int, int], None]  # (experiment_id, n, seed)
    seed_history: Callable[[str, str, int], None]  # (run_id, key, steps)

    @property
    def client(self):
        return _client(self.url)


def _new_run(target: Target) -> str:
    return target.client.create_run(target.experiment_id).info.run_id


def case_log_metric(target: Target, n: int) -> list[Callable]:
    client, run_id = target.client, _new_run(target)
    client.log_metric(run_id, "warmup", 1.0)
    return [partial(client.log_metric, run_id, "loss", random.random(), step=i) for i in range(n)]


def case_log_param(target: Target, n: int) -> list[Callable]:
    client, run_id = target.client, _new_run(target)
    client.log_param(run_id, "warmup", "1")
    return [partial(client.log_param, run_id, f"param_{i}", str(random.random())) for i in range(n)]


def case_set_tag(target: Target, n: int) -> list[Callable]:
    client, run_id = target.client, _new_run(target)
    client.set_tag(run_id, "warmup", "1")
    # A tag is set again more often than a new one is added (a status, a phase): half of each.
    return [partial(client.set_tag, run_id, f"tag_{i % (n // 2 or 1)}", str(i)) for i in range(n)]


def case_log_batch(target: Target, n: int) -> list[Callable]:
    client, run_id = target.client, _new_run(target)
    client.log_batch(run_id, metrics=_metrics(1000, key="warmup"))
    batches = [_metrics(1000, start_step=i * 1000) for i in range(n)]
    return [partial(client.log_batch, run_id, metrics=batch) for batch in batches]


def case_create_run(target: Target, n: int) -> list[Callable]:
    client = target.client
    _new_run(target)
    return [partial(client.create_run, target.experiment_id) for _ in range(n)]


def case_update_run(target: Target, n: int) -> list[Callable]:
    """What a run's end sends (status and end time), on runs created beforehand."""
    client = target.client
    run_ids = [_new_run(target) for _ in range(n + 1)]
    client.set_terminated(run_ids.pop())
    return [partial(client.set_terminated, run_id, "FINISHED") for run_id in run_ids]


def case_get_run(target: Target, n: int) -> list[Callable]:
    """A run as a training script leaves it: 20 params, 20 metrics, 10 tags."""
    from mlflow.entities import Param, RunTag

    client, run_id = target.client, _new_run(target)
    client.log_batch(
        run_id,
        metrics=[m for i in range(20) for m in _metrics(1, key=f"metric_{i}")],
        params=[Param(f"param_{i}", str(i)) for i in range(20)],
        tags=[RunTag(f"tag_{i}", str(i)) for i in range(10)],
    )
    client.get_run(run_id)
    return [partial(client.get_run, run_id) for _ in range(n)]


def _case_search_runs(runs: int) -> Callable[[Target, int], list[Callable]]:
    def case(target: Target, n: int) -> list[Callable]:
        client = target.client
        experiment_id = client.create_experiment(f"search-{runs}-{uuid.uuid4().hex[:6]}")
        target.seed_runs(experiment_id, runs, runs)
        # The first call is timed like the others: a page right after the experiment was filled.
        return [
            partial(client.search_runs, [experiment_id], SEARCH_FILTER, order_by=SEARCH_ORDER, max_results=100)
            for _ in range(n)
        ]

    return case


def case_get_metric_history(target: Target, n: int) -> list[Callable]:
    client, run_id = target.client, _new_run(target)
    target.seed_history(run_id, "long", HISTORY_STEPS)

    def call() -> None:
        points = client.get_metric_history(run_id, "long")
        assert len(points) == HISTORY_STEPS, len(points)

    return [call] * n


def case_search_experiments(target: Target, n: int) -> list[Callable]:
    """A page of 100 experiments (the UI's list) among at least SEARCH_EXPERIMENTS."""
    client = target.client
    have = len(client.search_experiments(max_results=SEARCH_EXPERIMENTS))
    for _ in range(SEARCH_EXPERIMENTS - have):
        client.create_experiment(f"listed-{uuid.uuid4().hex[:8]}", tags={"team": "bench"})
    return [partial(client.search_experiments, max_results=100) for _ in range(n)]


def _experiment(target: Target) -> tuple[str, str]:
    """An experiment with two tags, as a script finds it (id, name)."""
    name = f"get-{uuid.uuid4().hex[:8]}"
    return target.client.create_experiment(name, tags={"team": "bench", "stage": "dev"}), name


def case_get_experiment(target: Target, n: int) -> list[Callable]:
    client, (experiment_id, _) = target.client, _experiment(target)
    return [partial(client.get_experiment, experiment_id) for _ in range(n)]


def case_get_experiment_by_name(target: Target, n: int) -> list[Callable]:
    client, (_, name) = target.client, _experiment(target)
    return [partial(client.get_experiment_by_name, name) for _ in range(n)]


def _registered_model(target: Target) -> str:
    """A registered model with three versions, each from a run, the last one aliased."""
    client = target.client
    name = f"model-{uuid.uuid4().hex[:6]}"
    client.create_registered_model(name, tags={"team": "bench"})
    for _ in range(3):
        run_id = _new_run(target)
        client.create_model_version(name, f"runs:/{run_id}/model", run_id=run_id)
    client.set_registered_model_alias(name, "champion", "3")
    return name


def case_registry_get_model(target: Target, n: int) -> list[Callable]:
    client, name = target.client, _registered_model(target)
    return [partial(client.get_registered_model, name) for _ in range(n)]


def case_registry_get_version(target: Target, n: int) -> list[Callable]:
    client, name = target.client, _registered_model(target)
    return [partial(client.get_model_version_by_alias, name, "champion") for _ in range(n)]


def case_registry_search(target: Target, n: int) -> list[Callable]:
    client = target.client
    for _ in range(3):
        _registered_model(target)
    return [partial(client.search_registered_models, max_results=100) for _ in range(n)]


@dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[Target, int], list[Callable]]
    tessera_calls: int
    mlflow_calls: int  # fewer where MLflow's server is slow: the per-call figures do not depend on it
    writes: bool = False  # each call commits: the durable-commit floor is printed with it


def cases(quick: bool) -> list[Case]:
    q = 5 if quick else 1  # --quick divides the call counts
    large = SEARCH_LARGE_QUICK if quick else SEARCH_LARGE
    return [
        Case("log_metric", case_log_metric, 1000 // q, 200 // q, writes=True),
        Case("log_param", case_log_param, 500 // q, 200 // q, writes=True),
        Case("set_tag", case_set_tag, 500 // q, 200 // q, writes=True),
        Case("log_batch (1000 metrics)", case_log_batch, 40 // q, max(2, 8 // q), writes=True),
        Case("create_run", case_create_run, 500 // q, 100 // q, writes=True),
        Case("update_run (end of run)", case_update_run, 500 // q, 100 // q, writes=True),
        Case("get_run", case_get_run, 500 // q, 200 // q),
        Case(f"search_runs, {SEARCH_SMALL:,} runs", _case_search_runs(SEARCH_SMALL), 100 // q, 40 // q),
        Case(f"search_runs, {large:,} runs", _case_search_runs(large), 40 // q, 10 // q),
        Case(f"get_metric_history ({HISTORY_STEPS:,} points)", case_get_metric_history, 20 // q, max(2, 4 // q)),
        Case(f"search_experiments (100 of {SEARCH_EXPERIMENTS})", case_search_experiments, 200 // q, 100 // q),
        Case("get_experiment", case_get_experiment, 500 // q, 200 // q),
        Case("get_experiment_by_name", case_get_experiment_by_name, 500 // q, 200 // q),
        Case("registry: get_registered_model", case_registry_get_model, 300 // q, 100 // q),
        Case("registry: get_model_version_by_alias", case_registry_get_version, 300 // q, 100 // q),
        Case("registry: search_registered_models", case_registry_search, 200 // q, 100 // q),
    ]


# --- many clients ---------------------------------------------------------------------------------------


def _concurrent_client(url: str, run_id: str, token: str, ready, start, seconds: float, results) -> None:
    """One training job in its own process: 1000-metric batches until the deadline."""
    os.environ["MLFLOW_TRACKING_TOKEN"] = token
    client = _client(url)
    batches = [_metrics(1000, start_step=i * 1000) for i in range(10)]
    client.log_batch(run_id, metrics=_metrics(10, key="warmup"))
    ready.release()
    start.wait()
    sent, step, cpu = 0, 0, time.process_time()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        batch = batches[step % 10]
        for i, metric in enumerate(batch):
            metric._step = step * 1000 + i
        client.log_batch(run_id, metrics=batch)
        sent += 1000
        step += 1
    results.put((sent, time.process_time() - cpu))


def bench_concurrent(target: Target, token: str, clients: int, seconds: float) -> tuple[float, float, float]:
    """`clients` processes, each with its own run; the aggregate rate counts only acknowledged (committed)
    batches. Returns (metrics/s, the clients' CPU share of the two cores' time, server CPU ms per 1000)."""
    context = multiprocessing.get_context("spawn")
    ready, start, results = context.Semaphore(0), context.Event(), context.Queue()
    run_ids = [_new_run(target) for _ in range(clients)]
    processes = [
        context.Process(target=_concurrent_client, args=(target.url, run_id, token, ready, start, seconds, results))
        for run_id in run_ids
    ]
    for process in processes:
        process.start()
    for _ in processes:
        ready.acquire()
    server_before, started = cpu_seconds(target.pid), time.perf_counter()
    start.set()
    outcomes = [results.get() for _ in processes]
    elapsed, server_cpu = time.perf_counter() - started, cpu_seconds(target.pid) - server_before
    for process in processes:
        process.join()
    sent = sum(s for s, _ in outcomes)
    client_cpu = sum(c for _, c in outcomes)
    return sent / elapsed, client_cpu / (elapsed * (os.cpu_count() or 1)), server_cpu / (sent / 1000) * 1000


def bench_loadgen(target: Target, headers: dict, seconds: float, connections: int) -> tuple[float, int]:
    """Server capacity without the mlflow client's own CPU cost: pre-encoded 1000-metric log-batch
    bodies sent by a light asyncio client over kept-alive connections (like mlflow-go's k6 runs)."""
    run_ids = [_new_run(target) for _ in range(connections)]
    # Every point is new, as in training: a body is sent again only with its timestamps moved on (a
    # byte-for-byte replacement of a fixed-width number), since a batch that repeats stored points is
    # a client's retry, a no-op that both servers serve another way.
    now = int(time.time() * 1000)
    stamp = b'"timestamp": %d' % now
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
        async with httpx.AsyncClient(base_url=target.url, headers={**headers, "Content-Type": "application/json"},
                                     limits=limits, timeout=60) as http:  # fmt: skip

            async def worker(index: int) -> None:
                nonlocal sent
                i = 0
                while time.monotonic() < deadline:
                    body = bodies[index][i % 20]
                    if i >= 20:
                        body = body.replace(stamp, b'"timestamp": %d' % (now + i // 20))
                    response = await http.post("/api/2.0/mlflow/runs/log-batch", content=body)
                    response.raise_for_status()
                    sent += 1000
                    i += 1

            await asyncio.gather(*(worker(i) for i in range(connections)))
        return sent

    started = time.perf_counter()
    sent = asyncio.run(run())
    return sent / (time.perf_counter() - started), sent // 1000


# --- the run -------------------------------------------------------------------------------------------


def _targets(servers: Servers) -> list[Target]:
    tessera_pg = servers.tessera_sqlalchemy_url.replace("+psycopg", "")
    mlflow_pg = f"postgresql://{PG_SERVER}/{servers.mlflow_db}"
    now = int(time.time() * 1000)

    def tessera_history(run_id: str, key: str, steps: int) -> None:
        seed_history(tessera_pg, "run_metrics (run_id, key, value, is_nan, step, timestamp)",
                     lambda i: (run_id, key, i * 0.5, False, i, now + i), steps)  # fmt: skip

    def mlflow_history(run_id: str, key: str, steps: int) -> None:
        seed_history(mlflow_pg, "metrics (key, value, timestamp, run_uuid, step, is_nan)",
                     lambda i: (key, i * 0.5, now + i, run_id, i, False), steps)  # fmt: skip

    tessera_url, mlflow_url = servers.tessera_url, servers.mlflow_url
    return [
        Target("tessera", tessera_url, servers.procs[0].pid, _client(tessera_url).create_experiment("bench"),
               partial(seed_tessera_runs, servers.tessera_sqlalchemy_url), tessera_history),
        Target("mlflow", mlflow_url, servers.procs[1].pid, _client(mlflow_url).create_experiment("bench"),
               partial(seed_mlflow_runs, servers.mlflow_db), mlflow_history),
    ]  # fmt: skip


HEADER = (
    f"{'call':<40} {'tessera: wall':>13} {'client':>6} {'server':>8} {'p99':>7} {'cpu':>7}"
    f"  {'mlflow: wall':>12} {'client':>6} {'server':>8} {'cpu':>8}  {'ratio':>6} {'cpu ratio':>9}"
)


def _print_case(name: str, t: Timing, m: Timing, floors: list[list[float]]) -> dict:
    ratio = m.server_part_ms / max(t.server_part_ms, 1e-6)
    cpu_ratio = m.server_cpu_ms / max(t.server_cpu_ms, 1e-6)
    print(
        f"{name:<40} {t.wall_ms:>10.2f} ms {t.client_share:>6.0%} {t.server_part_ms:>5.2f} ms"
        f" {t.percentile(0.99):>7.2f} {t.server_cpu_ms:>7.2f}  {m.wall_ms:>9.2f} ms {m.client_share:>6.0%}"
        f" {m.server_part_ms:>5.2f} ms {m.server_cpu_ms:>8.2f}  {ratio:>5.1f}x {cpu_ratio:>8.1f}x",
        flush=True,
    )
    floor_figures = {}
    if floors:
        # mean, p50, p99 of the commits measured just before each server's loop
        (t_mean, t_p50, t_p99), (m_mean, m_p50, m_p99) = (
            (sum(f) / len(f), f[len(f) // 2], f[int(len(f) * 0.99)]) for f in floors
        )
        print(f"{'  durable commit alone (1-row INSERT)':<40} {t_mean:>10.2f} ms   p50 {t_p50:>5.2f} {t_p99:>7.2f}"
              f"  {m_mean:>9.2f} ms   p50 {m_p50:>5.2f}", flush=True)  # fmt: skip
        floor_figures = {
            "tessera_commit_floor_ms": round(t_mean, 3),
            "tessera_commit_floor_p99_ms": round(t_p99, 3),
            "mlflow_commit_floor_ms": round(m_mean, 3),
            "mlflow_commit_floor_p99_ms": round(m_p99, 3),
        }
    return {
        "call": name,
        **floor_figures,
        **{
            f"{server}_{figure}": round(value, 3)
            for server, timing in (("tessera", t), ("mlflow", m))
            for figure, value in (
                ("wall_ms", timing.wall_ms),
                ("client_share", timing.client_share),
                ("server_part_ms", timing.server_part_ms),
                ("server_part_p50_ms", timing.percentile(0.5)),
                ("server_part_p99_ms", timing.percentile(0.99)),
                ("server_cpu_ms", timing.server_cpu_ms),
            )
        },
        "server_part_ratio": round(ratio, 2),
        "server_cpu_ratio": round(cpu_ratio, 2),
    }


def _row(name: str, tessera: float, mlflow: float, unit: str, higher_is_better: bool) -> dict:
    ratio = tessera / mlflow if higher_is_better else mlflow / tessera
    print(f"{name:<52} {tessera:>12,.1f} {mlflow:>12,.1f}  {unit:<10} {ratio:>6.1f}x", flush=True)
    return {"workload": name, "tessera": tessera, "mlflow": mlflow, "unit": unit, "speedup": round(ratio, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a fifth of the calls, 10,000 runs for the large search")
    parser.add_argument("--only", default="", help="comma-separated: call names containing any of these words, "
                        "and/or 'concurrent', 'loadgen'")  # fmt: skip
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2, help="Tessera uvicorn workers")
    parser.add_argument("--clients", type=int, default=20, help="processes in the concurrent case")
    parser.add_argument("--seconds", type=float, default=None, help="duration of the timed ingest runs")
    parser.add_argument("--connections", type=int, default=8, help="load generator connections")
    parser.add_argument(
        "--async-metric-commit",
        action="store_true",
        help="Tessera commits metric ingest without waiting for the WAL flush (TESSERA_TRACKING_ASYNC_METRIC_COMMIT)",
    )
    args = parser.parse_args()
    # The registry calls log each version's creation, an ended run prints its URL (client processes too).
    os.environ["MLFLOW_LOGGING_LEVEL"] = "WARNING"
    os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
    seconds = args.seconds or (5.0 if args.quick else 10.0)
    only = [word for word in args.only.split(",") if word]

    def wanted(name: str) -> bool:
        return not only or any(word in name for word in only)

    results: list[dict] = []
    print(f"load before: {os.getloadavg()}; Tessera async metric commit: {args.async_metric_commit}", flush=True)
    with Servers(args.workers, args.async_metric_commit) as servers:
        # The mlflow client sends this bearer token to both; MLflow's server (no auth app) ignores it.
        os.environ["MLFLOW_TRACKING_TOKEN"] = servers.api_key
        tessera, mlflow = _targets(servers)
        tessera_pg = servers.tessera_sqlalchemy_url.replace("+psycopg", "")
        print("per call: wall, the client's CPU share of it, the server part (wall - client CPU; mean, and p99 "
              "for Tessera), the server processes' CPU (ms); ratio = MLflow / Tessera", flush=True)  # fmt: skip
        print(HEADER, flush=True)
        for case in cases(args.quick):
            if not wanted(case.name):
                continue
            calls = case.build(tessera, case.tessera_calls)
            settle()
            floors = [commit_floor(tessera_pg)] if case.writes else []
            t = timed(tessera.pid, calls)
            calls = case.build(mlflow, case.mlflow_calls)
            settle()
            floors += [commit_floor(tessera_pg)] if case.writes else []
            m = timed(mlflow.pid, calls)
            results.append(_print_case(case.name, t, m, floors))
        if wanted("concurrent"):
            print(f"{'':<52} {'tessera':>12} {'mlflow':>12}", flush=True)
            rates, shares, cpus = {}, {}, {}
            for target in (tessera, mlflow):
                rates[target.name], shares[target.name], cpus[target.name] = bench_concurrent(
                    target, servers.api_key, args.clients, seconds
                )
            results.append(_row(f"log_batch, {args.clients} client processes", rates["tessera"], rates["mlflow"],
                                "metrics/s", True))  # fmt: skip
            results.append(_row("  clients' CPU share of the machine", shares["tessera"] * 100,
                                shares["mlflow"] * 100, "%", False))  # fmt: skip
            results.append(_row("  server CPU per 1000 metrics", cpus["tessera"], cpus["mlflow"], "ms", False))
        if wanted("loadgen"):
            headers = {"Authorization": f"Bearer {servers.api_key}"}
            rates, cpu_per_batch, pg_per_batch, client_per_batch = {}, {}, {}, {}
            for target in (tessera, mlflow):
                before, pg_before, client_before = cpu_seconds(target.pid), postgres_cpu_seconds(), time.process_time()
                rates[target.name], batches = bench_loadgen(target, headers, seconds, args.connections)
                cpu_per_batch[target.name] = (cpu_seconds(target.pid) - before) / batches * 1000
                pg_per_batch[target.name] = (postgres_cpu_seconds() - pg_before) / batches * 1000
                client_per_batch[target.name] = (time.process_time() - client_before) / batches * 1000
            for name, figures, unit in (
                ("log-batch, pre-encoded bodies (load generator)", rates, "metrics/s"),
                ("  server CPU per 1000-metric batch", cpu_per_batch, "ms"),
                # Where the rest of the two cores went: the database and the generator itself.
                ("  PostgreSQL CPU per batch (all backends)", pg_per_batch, "ms"),
                ("  load generator CPU per batch", client_per_batch, "ms"),
            ):
                results.append(_row(name, figures["tessera"], figures["mlflow"], unit, unit == "metrics/s"))
    print(f"load after: {os.getloadavg()}", flush=True)
    print(json.dumps(results))


if __name__ == "__main__":
    stopping.run(main)
