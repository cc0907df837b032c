"""Reading a monitor's window of logged predictions before and after compaction.

    .venv/bin/python bench/prediction_log_compaction.py [--batches 1000] [--rows 1000]

Logs `--batches` batches of `--rows` rows (10 numerical columns and 1 categorical, one batch a minute
over one UTC day) through the monitor's own `predictions.log_batch`, times `predictions.read_window` on
the whole day and on one hour, runs `prediction_log.compact` (the beat upkeep's step), deletes the
replaced files, and times the same reads again. The index is a scratch SQLite database and the store a
local folder, both in a temporary directory removed at the end; each read is the median of `--repeat`.
The last line printed is a JSON object with all figures and the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
from sqlalchemy import func, select

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import stopping

from services.monitor.domain import prediction_log, predictions, reference
from shared.core.artifacts import ArtifactStore
from shared.db.migrate import upgrade
from shared.db.models import ModelMonitoring, MonitorPredictionBatch, Organization, Project
from shared.db.session import Database

DAY = datetime(2026, 3, 2, tzinfo=UTC)
FEATURES = [f"f{index}" for index in range(10)]


def make_monitor(session) -> ModelMonitoring:
    organization = Organization(name="Bench", slug=f"bench-{uuid.uuid4().hex[:6]}", settings={})
    session.add(organization)
    session.flush()
    project = Project(organization_id=organization.id, name="Bench", slug="bench")
    session.add(project)
    session.flush()
    columns = {name: {"type": "numerical", "dtype": "float"} for name in FEATURES}
    columns["segment"] = {"type": "categorical", "dtype": "string"}
    monitor = ModelMonitoring(
        project_id=project.id,
        name="bench",
        schedule_interval_s=3600,
        column_schema={"columns": columns, "prediction_column": None},
        config={"prediction_column": "prediction", "quality": None},
        reference_uri="unused",
    )
    session.add(monitor)
    session.flush()
    return monitor


def batch(monitor: ModelMonitoring, start: datetime, rows: int, generator: np.random.Generator) -> pa.Table:
    columns: dict[str, pa.Array] = {name: pa.array(generator.normal(0, 1, rows)) for name in FEATURES}
    columns["segment"] = pa.array(generator.choice(["a", "b", "c", "d"], rows))
    columns["prediction"] = pa.array(generator.random(rows).round(3).astype(str))
    columns[reference.REQUEST_ID] = pa.array([uuid.uuid4().hex for _ in range(rows)])
    offsets = np.sort(generator.integers(0, 60_000_000, rows)).astype("timedelta64[us]")
    columns[reference.LOGGED_AT] = pa.array(np.datetime64(start.replace(tzinfo=None), "us") + offsets).cast(
        pa.timestamp("us", tz="UTC")
    )
    return predictions._conform(pa.table(columns), monitor)


def timed_read(db: Database, store: ArtifactStore, monitor_id: uuid.UUID, start, end, repeat: int) -> dict:
    seconds, rows = [], 0
    for _ in range(repeat):
        with db.session_scope() as session:
            monitor = session.get(ModelMonitoring, monitor_id)
            started = time.perf_counter()
            rows = predictions.read_window(session, store, monitor, start, end).num_rows
            seconds.append(time.perf_counter() - started)
    return {"seconds": statistics.median(seconds), "rows": rows}


def file_count(db: Database, monitor_id: uuid.UUID) -> int:
    with db.session_scope() as session:
        logged = select(func.count()).select_from(MonitorPredictionBatch)
        return session.scalar(logged.where(MonitorPredictionBatch.monitor_id == monitor_id))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=1000)
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    arguments = parser.parse_args()
    load = os.getloadavg()
    print(f"load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} cores", flush=True)
    with tempfile.TemporaryDirectory(prefix="prediction-log-bench-") as folder:
        url = f"sqlite:///{folder}/index.db"
        upgrade(url)
        db = Database(url)
        store = ArtifactStore(f"{folder}/artifacts")
        generator = np.random.default_rng(7)
        started = time.perf_counter()
        with db.session_scope() as session:
            monitor = make_monitor(session)
            monitor_id = monitor.id
            for index in range(arguments.batches):
                start = DAY + timedelta(minutes=index)
                predictions.log_batch(session, store, monitor, batch(monitor, start, arguments.rows, generator), start)
        logged = time.perf_counter() - started
        day, hour = (DAY, DAY + timedelta(days=1)), (DAY + timedelta(hours=5), DAY + timedelta(hours=6))
        figures: dict = {"batches": arguments.batches, "rows_per_batch": arguments.rows, "log_seconds": logged}
        figures["before"] = {
            "files": file_count(db, monitor_id),
            "day": timed_read(db, store, monitor_id, *day, arguments.repeat),
            "hour": timed_read(db, store, monitor_id, *hour, arguments.repeat),
        }
        started = time.perf_counter()
        with db.session_scope() as session:
            changes = prediction_log.compact(
                session, store, session.get(ModelMonitoring, monitor_id), DAY + timedelta(days=1), 1_000_000
            )
        predictions.delete_files(store, changes.replaced)
        figures["compaction_seconds"] = time.perf_counter() - started
        figures["after"] = {
            "files": file_count(db, monitor_id),
            "day": timed_read(db, store, monitor_id, *day, arguments.repeat),
            "hour": timed_read(db, store, monitor_id, *hour, arguments.repeat),
        }
        db.dispose()
    figures["load"] = os.getloadavg()[0]
    for moment in ("before", "after"):
        entry = figures[moment]
        print(
            f"{moment:<6} {entry['files']:>5} files: day window {entry['day']['rows']:>9,} rows in "
            f"{entry['day']['seconds']:.2f} s, one hour {entry['hour']['rows']:>7,} rows in "
            f"{entry['hour']['seconds']:.3f} s",
            flush=True,
        )
    print(f"compaction {figures['compaction_seconds']:.1f} s; load average after {figures['load']:.2f}")
    print(json.dumps(figures))


if __name__ == "__main__":
    stopping.run(main)
