"""A check of many columns split into column shards, run by two real Celery worker processes: the same
report as one task computing every column, written once even when the combining task is delivered twice;
the split itself (shards by width and by window size)."""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta

import httpx
import numpy as np
import pandas as pd
import pytest
from celery import Celery
from sqlalchemy import func, select

from services.monitor.domain import checks
from shared.core.artifacts import get_artifact_store
from shared.core.celery_app import celery_config
from shared.db.base import utcnow
from shared.db.models import DataDriftReport, MonitorCheckRun, MonitorCheckShard
from tests.conftest import start_worker, stop_process, wait_for
from tests.monitor.test_api import csv_bytes, make_version

COLUMNS = 40
SHARD_COLUMNS = 10
pytestmark = pytest.mark.usefixtures("only_private_workers")


def features(rows: int, seed: int, shift: float) -> pd.DataFrame:
    generator = np.random.default_rng(seed)
    # Every fourth column moves; a few are labels, so categorical tests run in the shards too.
    data = {
        f"f{index:02d}": generator.normal(shift * (index % 4 == 0), 1, rows).round(3) for index in range(COLUMNS - 4)
    }
    for index in range(COLUMNS - 4, COLUMNS):
        data[f"f{index:02d}"] = generator.choice(["a", "b", "c"] if shift == 0 else ["a", "b", "c", "d"], rows)
    return pd.DataFrame(data)


@pytest.fixture
def api(live_server, live_tenant) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live_server.url, headers=live_tenant.headers, timeout=60) as client:
        yield client


@pytest.fixture
def two_workers() -> Iterator[None]:
    env = {"TESSERA_MONITOR_CHECK_SHARD_COLUMNS": str(SHARD_COLUMNS)}
    workers = [start_worker(concurrency=1, extra_env=env) for _ in range(2)]
    try:
        time.sleep(2)
        assert all(worker.poll() is None for worker in workers), "a worker exited at start-up"
        yield
    finally:
        for worker in workers:
            stop_process(worker)


def test_a_check_sharded_over_two_workers_gives_the_report_of_one_task(api, db, live_tenant, settings, two_workers):
    with db.session_scope() as session:
        version_id = make_version(session, live_tenant.project_id).id
    spec = {"name": f"wide-{uuid.uuid4().hex[:6]}", "model_version_id": str(version_id), "min_rows": 20}
    created = api.post(
        "/api/v1/monitors",
        data={"spec": json.dumps(spec)},
        files={"reference": ("reference.csv", csv_bytes(features(3_000, seed=1, shift=0.0)))},
    )
    assert created.status_code == 201, created.text
    monitor_id = created.json()["id"]
    current = features(2_000, seed=2, shift=0.5)
    logged = api.post(
        f"/api/v1/monitors/{monitor_id}/predictions",
        json={"rows": [{"features": row} for row in current.to_dict(orient="records")]},
    )
    assert logged.status_code < 300, logged.text

    run = api.post(f"/api/v1/monitors/{monitor_id}/checks").json()
    progress: list[float] = []

    def finished() -> dict | None:
        state = api.get(f"/api/v1/monitors/{monitor_id}/checks/{run['id']}").json()
        progress.append(state["progress"])
        return state if state["status"] not in ("queued", "running") else None

    sharded_run = wait_for(finished, timeout=120, what="the sharded check", every=0.2)
    assert sharded_run["status"] == "done", sharded_run
    assert progress == sorted(progress) and progress[-1] == 1.0
    with db.session_scope() as session:
        shards = session.scalars(select(MonitorCheckShard).where(MonitorCheckShard.run_id == uuid.UUID(run["id"])))
        assert sorted(len(shard.columns) for shard in shards) == [SHARD_COLUMNS] * (COLUMNS // SHARD_COLUMNS)
    sharded = api.get(f"/api/v1/drift-reports/{sharded_run['report_id']}").json()

    # The same window checked by one task, in this process.
    store = get_artifact_store(settings)
    other = MonitorCheckRun(
        id=uuid.uuid4(), monitor_id=uuid.UUID(monitor_id), slot_time=utcnow(), trigger="manual", status="queued"
    )
    with db.session_scope() as session:
        session.add(other)
    with db.session_scope() as session:
        job = checks.start(session, other.id, utcnow(), timedelta(minutes=15))
        result = checks.compute(session, store, job, checks.read_window(session, store, job))
        checks.finish(session, job, result, utcnow(), settings.public_url)
    whole = api.get(f"/api/v1/drift-reports/{result.report_id}").json()
    assert whole["current_rows"] == sharded["current_rows"] == 2_000
    assert whole["number_of_drifted_columns"] == sharded["number_of_drifted_columns"] > 0
    assert whole["report"] == sharded["report"]

    # The combining task delivered again (a worker lost after writing): the run keeps its one report.
    app = Celery(set_as_current=False)
    app.conf.update(celery_config(settings, include=[], declarations=[]))
    with db.session_scope() as session:
        started_at = session.get(MonitorCheckRun, uuid.UUID(run["id"])).started_at
    app.send_task("monitor.combine_check", [run["id"], started_at.isoformat()])
    time.sleep(3)
    with db.session_scope() as session:
        reports = session.scalar(
            select(func.count()).select_from(DataDriftReport).where(DataDriftReport.monitor_id == uuid.UUID(monitor_id))
        )
        assert reports == 2
        assert session.get(MonitorCheckRun, uuid.UUID(run["id"])).report_id == uuid.UUID(sharded_run["report_id"])


def test_shards_by_width_and_by_window_size():
    names = [f"c{index}" for index in range(10)]
    assert checks.plan_shards(names, 1_000, 0, 1024) == [names]
    assert checks.plan_shards(names, 1_000, 4, 1024) == [names[0:4], names[4:8], names[8:]]
    # 10 columns of 20M rows: 1.6 GB of float64, two shards under a 1 GB bound even if 25 columns fit one.
    assert checks.plan_shards(names, 20_000_000, 25, 1024) == [names[:5], names[5:]]
    assert checks.plan_shards(names[:1], 10**9, 25, 64) == [names[:1]]
    assert os.environ.get("TESSERA_MONITOR_CHECK_SHARD_COLUMNS") is None
