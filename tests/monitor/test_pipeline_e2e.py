"""End to end on real processes: `celery beat` (1-second monitor tick, set through settings env vars)
schedules checks, a real worker computes them on PostgreSQL with Redis as broker, a drifted window fires
an alert (and its `alert.firing` outbox event), a clean window resolves it; with two beats running,
each slot is still claimed once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from shared.db.models import Alert, MonitorCheckRun, OutboxEvent
from tests.conftest import ROOT, stop_process
from tests.monitor.test_api import csv_bytes, make_version, reference_frame, rows

BEAT_ENV = {"TESSERA_MONITOR_SCHEDULE_INTERVAL_S": "1", "TESSERA_LOG_LEVEL": "WARNING"}


@contextmanager
def beats(count: int, folder: Path) -> Iterator[None]:
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "tessera.worker:celery_app",
                "beat",
                "--loglevel=WARNING",
                "-s",
                str(folder / f"beat-{i}"),
                "--pidfile",
                str(folder / f"beat-{i}.pid"),
            ],
            cwd=ROOT,
            env={**os.environ, **BEAT_ENV},
            start_new_session=True,
        )
        for i in range(count)
    ]
    try:
        yield
        assert all(proc.poll() is None for proc in procs), "a beat process exited"
    finally:
        for proc in procs:
            stop_process(proc)


def wait_for(
    condition: Callable[[], object],
    timeout: float,
    every: Callable[[], None] | None = None,
    state: Callable[[], object] | None = None,
):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        if every:
            every()
        time.sleep(0.3)
    raise AssertionError(f"timed out; state: {state() if state else None}")


@pytest.fixture
def api(live_server, live_tenant) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live_server.url, headers=live_tenant.headers, timeout=30) as client:
        yield client


def _monitor(api, db, live_tenant, **spec) -> dict:
    with db.session_scope() as session:
        version_id = make_version(session, live_tenant.project_id).id
    body = {"name": f"e2e-{uuid.uuid4().hex[:6]}", "model_version_id": str(version_id), **spec}
    response = api.post(
        "/api/v1/monitors",
        data={"spec": json.dumps(body)},
        files={"reference": ("ref.csv", csv_bytes(reference_frame(300)))},
    )
    assert response.status_code == 201, response.text
    return response.json()


def test_beats_schedule_worker_checks_drift_fires_clean_resolves_each_slot_once(
    api, db, live_tenant, celery_worker, tmp_path
):
    monitor = _monitor(api, db, live_tenant, schedule_interval_s=1, window_s=3, min_rows=20)
    monitor_id = uuid.UUID(monitor["id"])
    log_url = f"/api/v1/monitors/{monitor_id}/predictions"

    def open_alert(session) -> Alert | None:
        # The first drift alert: a later check, while drifted rows are still logged, may open another.
        query = select(Alert).where(Alert.monitor_id == monitor_id, Alert.kind == "data_drift")
        return session.scalar(query.order_by(Alert.created_at).limit(1))

    def alert_status() -> str | None:
        with db.session_scope() as session:
            alert = open_alert(session)
            return alert.status if alert else None

    def runs() -> list:
        with db.session_scope() as session:
            query = select(MonitorCheckRun.status, MonitorCheckRun.error).where(
                MonitorCheckRun.monitor_id == monitor_id
            )
            return session.execute(query).all()

    drifted = reference_frame(100, seed=3).assign(x=lambda f: f.x + 4, y=lambda f: f.y * 4)
    # Two beat processes, as after a botched deploy: each slot must still be checked once.
    with beats(2, tmp_path):
        # Rows keep coming, as from a gateway: whenever the first check runs, its window has some.
        wait_for(
            lambda: alert_status() == "firing",
            timeout=30,
            state=runs,
            every=lambda: api.post(log_url, json=rows(drifted)).raise_for_status(),
        )
        # A clean stream; once the drifted rows leave the 3-second window a check resolves the alert.
        wait_for(
            lambda: alert_status() == "resolved",
            timeout=30,
            state=runs,
            every=lambda: api.post(
                log_url, json=rows(reference_frame(40, seed=int(time.time() * 10) % 1000))
            ).raise_for_status(),
        )

    with db.session_scope() as session:
        alert = open_alert(session)
        payloads = {
            event.event_type: event.payload
            for event in session.scalars(select(OutboxEvent).where(OutboxEvent.project_id == live_tenant.project_id))
            if event.payload.get("monitor_id") == str(monitor_id)
        }
        runs = session.scalars(select(MonitorCheckRun).where(MonitorCheckRun.monitor_id == monitor_id)).all()
    assert payloads["alert.firing"]["fingerprint"] == alert.fingerprint
    assert payloads["alert.firing"]["labels"]["monitor"] == monitor["name"]
    assert payloads["alert.resolved"]["status"] == "resolved"
    assert "drift.detected" in payloads
    assert {run.trigger for run in runs} == {"schedule"}
    assert {run.status for run in runs} <= {"done", "insufficient_data", "queued", "running"}
    slots = sorted(run.slot_time for run in runs)
    anchor = datetime.fromisoformat(monitor["created_at"])
    # Every run sits on its own slot of the monitor's 1-second grid: no slot ran twice.
    assert len(slots) == len(set(slots)) >= 2
    assert all((slot - anchor) % timedelta(seconds=1) == timedelta(0) for slot in slots)
    report = api.get(f"/api/v1/drift-reports/{alert.report_id}").json()
    assert report["dataset_drift"] is False
