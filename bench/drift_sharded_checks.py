"""A monitor's drift check split into column shards over Celery workers: one worker against two.

    .venv/bin/python bench/drift_sharded_checks.py [--rows 1000000] [--columns 100] [--shard-columns 10] [--quick]

Private to the run: a scratch PostgreSQL database (migrated, dropped at the end), a redis-server on a
random port and a data folder (the artifact store), removed at the end. A monitor of `--columns` float64
columns gets a reference and one logged window of `--rows` rows each, then the same check runs

- unsharded, on one worker (`TESSERA_MONITOR_CHECK_SHARD_COLUMNS=0`);
- in shards of `--shard-columns` columns, on one worker, then on two.

Each worker has one pool process and works on one column at a time (`TESSERA_MONITOR_DRIFT_THREADS=1`),
so the workers, not a check's threads, share the cores. Per configuration it prints the time from
queueing the check to its end, the CPU seconds of the worker processes (all their processes: the
machine's load moves this far less than the time) and the load average; and whether the reports are
equal. `--quick`: 100k rows. The last line printed is a JSON object with every figure.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import stopping

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RUN_ID = uuid.uuid4().hex[:8]
PG_SERVER = os.environ.get("TESSERA_BENCH_PG_SERVER", "postgresql+psycopg://postgres@127.0.0.1:5432")
DB_NAME = f"tessera_bench_shards_{RUN_ID}"
DATA_DIR = Path(tempfile.mkdtemp(prefix=f"tessera-bench-{RUN_ID}-"))
# Rows logged per file, as a busy model's batches would be after the upkeep's compaction.
FILE_ROWS = 250_000


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


REDIS_PORT = _free_port()
# Configuration reaches Tessera only through TESSERA_* settings: set before it is imported, for this
# process and the workers alike.
os.environ.update(
    {
        "TESSERA_DATABASE_URL": f"{PG_SERVER}/{DB_NAME}",
        "TESSERA_BROKER_URL": f"redis://127.0.0.1:{REDIS_PORT}/0",
        "TESSERA_DATA_DIR": str(DATA_DIR),
        "TESSERA_LOG_LEVEL": "WARNING",
        "TESSERA_MONITOR_DRIFT_THREADS": "1",
    }
)

from celery import Celery  # noqa: E402
from sqlalchemy import create_engine, select, text  # noqa: E402

from services.monitor.domain import monitors, predictions  # noqa: E402
from services.monitor.schemas import MonitorCreate  # noqa: E402
from shared.core.artifacts import get_artifact_store  # noqa: E402
from shared.core.auth import Access, Principal  # noqa: E402
from shared.core.celery_app import celery_config  # noqa: E402
from shared.core.settings import get_settings  # noqa: E402
from shared.db.base import utcnow  # noqa: E402
from shared.db.migrate import upgrade  # noqa: E402
from shared.db.models import (  # noqa: E402
    DataDriftReport,
    Model,
    ModelVersion,
    MonitorCheckRun,
    Organization,
    OrganizationMembership,
    Project,
    User,
)
from shared.db.session import get_database  # noqa: E402


def _columns(rows: int, columns: int, seed: int, shift: float) -> pa.Table:
    """Every third column moves by `shift` standard deviations; half the columns are rounded (ties)."""
    generator = np.random.default_rng(seed)
    arrays = {
        f"f{index:03d}": generator.normal(shift * (index % 3 == 0), 1, rows).round(2 + 4 * (index % 2))
        for index in range(columns)
    }
    return pa.table(arrays)


def _set_up_monitor(rows: int, columns: int) -> uuid.UUID:
    """A monitor with its reference and one window of logged rows (written as the logging API does)."""
    database = get_database(get_settings().database_url)
    store = get_artifact_store(get_settings())
    reference_data = _columns(rows, columns, seed=1, shift=0.0)
    upload = io.BytesIO()
    pq.write_table(reference_data, upload)
    with database.session_scope() as session:
        user = User(email=f"bench-{RUN_ID}@example.com", full_name="Bench")
        org = Organization(name="Bench", slug=f"bench-{RUN_ID}", settings={})
        session.add_all([user, org])
        session.flush()
        project = Project(organization_id=org.id, name="Default", slug="default")
        session.add_all([OrganizationMembership(organization_id=org.id, user_id=user.id, role="owner"), project])
        session.flush()
        model = Model(id=uuid.uuid4(), project_id=project.id, name="bench")
        version = ModelVersion(id=uuid.uuid4(), model_id=model.id, version=1)
        session.add_all([model, version])
        session.flush()
        access = Access(session, Principal(user_id=user.id, email=user.email))
        # Checked by hand only: a schedule far away, a window of a day.
        spec = MonitorCreate(name="wide", model_version_id=version.id, min_rows=10, schedule_interval_s=86400)
        monitor = monitors.create_monitor(
            session, access, store, spec, monitors.ReferenceUpload(upload.getvalue(), "reference.parquet"), utcnow()
        )
        monitor_id = monitor.id
    del upload, reference_data
    current = _columns(rows, columns, seed=2, shift=0.15)
    with database.session_scope() as session:
        monitor = session.get(monitors.ModelMonitoring, monitor_id)
        for start in range(0, rows, FILE_ROWS):
            body = io.BytesIO()
            pq.write_table(current.slice(start, FILE_ROWS), body)
            now = utcnow()
            predictions.log_batch(
                session, store, monitor, predictions.parquet_to_table(body.getvalue(), monitor, now), now
            )
    return monitor_id


def _celery_worker(name: str, shard_columns: int) -> subprocess.Popen:
    command = [sys.executable, "-m", "celery", "-A", "tessera.worker:celery_app", "worker", "--loglevel=WARNING"]
    command += ["--concurrency=1", "--without-gossip", "--without-mingle", "--hostname", f"{name}-{RUN_ID}@%h"]
    env = {**os.environ, "TESSERA_MONITOR_CHECK_SHARD_COLUMNS": str(shard_columns)}
    return subprocess.Popen(command, cwd=ROOT, env=env, start_new_session=True, stdout=subprocess.DEVNULL)


def _wait_ready(app: Celery, count: int, timeout: float = 120) -> None:
    """Until `count` workers answer a ping: started, imported and connected (slow on a loaded machine)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(app.control.ping(timeout=1.0)) >= count:
            return
    raise RuntimeError(f"{count} workers did not start within {timeout:.0f} s")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _cpu_seconds(pgids: set[int]) -> float:
    """User + system CPU so far of every process in these process groups (a worker and its pool)."""
    ticks = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(fields[2]) in pgids:
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def _check(app: Celery, monitor_id: uuid.UUID, workers: list[subprocess.Popen], timeout: float) -> dict[str, Any]:
    """Queue a check as the API's run-now does; wait for its end."""
    database = get_database(get_settings().database_url)
    run_id = uuid.uuid4()
    with database.session_scope() as session:
        now = utcnow()
        session.add(MonitorCheckRun(id=run_id, monitor_id=monitor_id, slot_time=now, trigger="manual", status="queued"))
    pgids = {worker.pid for worker in workers}
    cpu_before, load_before = _cpu_seconds(pgids), os.getloadavg()[0]
    started = time.perf_counter()
    app.send_task("monitor.run_check", [str(run_id)])
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with database.session_scope() as session:
            run = session.get(MonitorCheckRun, run_id)
            if run.status not in ("queued", "running"):
                seconds = time.perf_counter() - started
                report = session.scalar(select(DataDriftReport.report).where(DataDriftReport.id == run.report_id))
                return {
                    "status": run.status,
                    "error": run.error,
                    "seconds": seconds,
                    "worker_cpu_seconds": _cpu_seconds(pgids) - cpu_before,
                    "load": max(load_before, os.getloadavg()[0]),
                    "report": report,
                }
        time.sleep(0.2)
    raise RuntimeError(f"the check did not finish within {timeout:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows of the reference and of the window")
    parser.add_argument("--columns", type=int, default=100)
    parser.add_argument("--shard-columns", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="100k rows")
    parser.add_argument("--timeout", type=float, default=1800)
    options = parser.parse_args()
    rows = 100_000 if options.quick else options.rows

    redis = subprocess.Popen(
        ["redis-server", "--port", str(REDIS_PORT), "--save", "", "--appendonly", "no", "--bind", "127.0.0.1"],
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )
    admin = create_engine(f"{PG_SERVER}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{DB_NAME}"'))
    app = Celery(set_as_current=False)
    app.conf.update(celery_config(get_settings(), include=[], declarations=[]))
    results: dict[str, Any] = {"rows": rows, "columns": options.columns, "shard_columns": options.shard_columns}
    try:
        upgrade(get_settings().database_url)
        started = time.perf_counter()
        monitor_id = _set_up_monitor(rows, options.columns)
        print(
            f"{rows:,} rows x {options.columns} columns a side, set up in {time.perf_counter() - started:.0f} s; "
            f"{os.cpu_count()} cores, load {' '.join(f'{value:.2f}' for value in os.getloadavg())}",
            flush=True,
        )
        configurations = {
            "unsharded, 1 worker": (1, 0),
            f"shards of {options.shard_columns}, 1 worker": (1, options.shard_columns),
            f"shards of {options.shard_columns}, 2 workers": (2, options.shard_columns),
        }
        reports = []
        for name, (count, shard_columns) in configurations.items():
            workers = [_celery_worker(f"bench{index}", shard_columns) for index in range(count)]
            try:
                _wait_ready(app, count)
                measured = _check(app, monitor_id, workers, options.timeout)
            finally:
                for worker in workers:
                    _stop(worker)
            reports.append(measured.pop("report"))
            results[name] = measured
            print(
                f"  {name:<26} {measured['status']:<5} {measured['seconds']:7.1f} s  "
                f"worker CPU {measured['worker_cpu_seconds']:7.1f} s  (load {measured['load']:.1f})",
                flush=True,
            )
        one, two = (results[name]["seconds"] for name in list(configurations)[1:])
        results["speed_up_2_workers"] = one / two
        results["reports_equal"] = all(report == reports[0] for report in reports)
        print(f"  2 workers vs 1: {one / two:.2f}x faster; reports equal: {results['reports_equal']}", flush=True)
        print(json.dumps(results))
    finally:
        _stop(redis)
        get_database.cache_clear()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)'))
        shutil.rmtree(DATA_DIR, ignore_errors=True)


if __name__ == "__main__":
    stopping.run(main)
