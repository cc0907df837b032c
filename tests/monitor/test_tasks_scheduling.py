"""Slot claims and run claims in the database: once per slot (also for two racing beats on PostgreSQL),
paused monitors skipped, late ticks skip missed slots, lost messages and dead workers re-sent."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, select

from services.monitor.domain import alerts, checks
from services.monitor.domain.schedule import next_slot
from shared.db.models import Alert, ModelMonitoring, MonitorCheckRun, MonitorCheckShard
from tests.monitor.test_api import make_version

T0 = datetime(2026, 1, 1, tzinfo=UTC)
LEASE = timedelta(minutes=15)


def add_monitor(session, project_id, **fields) -> ModelMonitoring:
    version = make_version(session, project_id)
    monitor = ModelMonitoring(
        id=uuid.uuid4(),
        project_id=project_id,
        name=f"m-{uuid.uuid4().hex[:6]}",
        model_version_id=version.id,
        schedule_interval_s=60,
        next_check_at=T0 + timedelta(seconds=60),
        created_at=T0,
        config={},
        column_schema={},
        **fields,
    )
    session.add(monitor)
    session.flush()
    return monitor


def runs_of(session, monitor) -> list[MonitorCheckRun]:
    return session.scalars(select(MonitorCheckRun).where(MonitorCheckRun.monitor_id == monitor.id)).all()


def test_a_due_slot_is_claimed_once_and_late_ticks_skip_missed_slots(db_session, tenant):
    monitor = add_monitor(db_session, tenant.project_id)
    paused = add_monitor(db_session, tenant.project_id, enabled=False)
    assert checks.claim_due_slots(db_session, T0 + timedelta(seconds=30)) == []
    late = T0 + timedelta(seconds=200)  # slots at 60, 120, 180 are due; only the oldest is run
    [run_id] = checks.claim_due_slots(db_session, late)
    assert checks.claim_due_slots(db_session, late) == []
    db_session.refresh(monitor)
    assert monitor.next_check_at == T0 + timedelta(seconds=240)
    [run] = runs_of(db_session, monitor)
    assert (run.id, run.slot_time, run.status) == (run_id, T0 + timedelta(seconds=60), "queued")
    assert runs_of(db_session, paused) == []


def test_two_beats_racing_on_postgres_claim_once(db, live_tenant):
    """Beat A claims and holds its transaction open; beat B's tick blocks on the row, then finds it moved."""
    with db.session_scope() as session:
        monitor_id = add_monitor(session, live_tenant.project_id).id
    now = T0 + timedelta(seconds=61)
    first, second = db.sessionmaker(), db.sessionmaker()
    try:
        claimed_first = checks.claim_due_slots(first, now)
        claimed_second: list = []
        racer = threading.Thread(target=lambda: claimed_second.extend(checks.claim_due_slots(second, now)))
        racer.start()
        racer.join(0.5)
        assert racer.is_alive()  # waiting for beat A's row lock
        first.commit()
        racer.join(10)
        second.commit()
        assert len(claimed_first) == 1 and claimed_second == []
    finally:
        first.close()
        second.close()
        with db.session_scope() as session:
            session.execute(delete(ModelMonitoring).where(ModelMonitoring.id == monitor_id))


def test_runs_are_claimed_by_state_and_stranded_ones_sent_again(db_session, tenant):
    monitor = add_monitor(db_session, tenant.project_id, window_s=600)
    [run_id] = checks.claim_due_slots(db_session, T0 + timedelta(seconds=61))
    assert checks.stranded_runs(db_session, T0 + timedelta(seconds=90), timedelta(seconds=60), LEASE) == []
    # The message was lost: still queued a minute later.
    assert checks.stranded_runs(db_session, T0 + timedelta(seconds=125), timedelta(seconds=60), LEASE) == [run_id]
    job = checks.start(db_session, run_id, T0 + timedelta(seconds=130), LEASE)
    assert job.window_end - job.window_start == timedelta(seconds=600)
    assert checks.start(db_session, run_id, T0 + timedelta(seconds=131), LEASE) is None  # a duplicate delivery
    # The worker died mid-run: after the lease the run is sent again and can be taken over.
    after_lease = T0 + timedelta(seconds=130) + LEASE + timedelta(seconds=1)
    assert checks.stranded_runs(db_session, after_lease, timedelta(seconds=60), LEASE) == [run_id]
    assert checks.start(db_session, run_id, after_lease, LEASE) is not None
    assert monitor.id == job.monitor_id


def test_cron_and_interval_slots():
    assert next_slot(interval_s=60, cron=None, anchor=T0, after=T0 - timedelta(hours=1)) == T0
    assert next_slot(interval_s=60, cron=None, anchor=T0, after=T0 + timedelta(seconds=60)) == T0 + timedelta(
        seconds=120
    )
    assert next_slot(interval_s=None, cron="0 * * * *", anchor=T0, after=T0 + timedelta(minutes=1)) == T0 + timedelta(
        hours=1
    )


def test_a_late_check_of_an_older_slot_leaves_the_alert_to_the_newer_slots_verdict(db_session, tenant):
    monitor = add_monitor(db_session, tenant.project_id, window_s=600)
    slots = [T0 + timedelta(seconds=60 * number) for number in (1, 2, 3)]
    db_session.add_all(
        MonitorCheckRun(id=uuid.uuid4(), monitor_id=monitor.id, slot_time=slot, trigger="schedule", status="queued")
        for slot in slots
    )
    db_session.flush()
    jobs = {
        run.slot_time: checks.start(db_session, run.id, run.slot_time + timedelta(seconds=1), LEASE)
        for run in runs_of(db_session, monitor)
    }

    def finish(slot: datetime, firing: bool, at: datetime) -> None:
        finding = alerts.Finding(alerts.DATA_DRIFT, firing, "warning", "Data drift", {})
        result = checks.CheckResult(uuid.uuid4(), checks.DONE, {"current_rows": 100}, [finding])
        checks.finish(db_session, jobs[slot], result, at, "http://tessera.test")

    def drift_alerts() -> list[tuple[str, datetime | None]]:
        query = select(Alert).where(Alert.monitor_id == monitor.id).order_by(Alert.created_at)
        return [(alert.status, alert.resolved_at) for alert in db_session.scalars(query)]

    finish(slots[0], firing=True, at=T0 + timedelta(seconds=200))
    finish(slots[2], firing=False, at=T0 + timedelta(seconds=250))
    resolved = [("resolved", T0 + timedelta(seconds=250))]
    assert drift_alerts() == resolved
    # The middle slot's check ends last and still sees drift: its report is kept, the alert stays resolved.
    finish(slots[1], firing=True, at=T0 + timedelta(seconds=300))
    assert drift_alerts() == resolved
    assert {run.slot_time: run.status for run in runs_of(db_session, monitor)} == dict.fromkeys(slots, "done")
    assert all(run.report_id is not None for run in runs_of(db_session, monitor))


def test_a_shard_is_recorded_once_and_a_retaken_runs_old_tasks_find_nothing_to_do(db_session, tenant):
    add_monitor(db_session, tenant.project_id, window_s=600)
    [run_id] = checks.claim_due_slots(db_session, T0 + timedelta(seconds=61))
    started = T0 + timedelta(seconds=62)
    job = checks.start(db_session, run_id, started, LEASE)
    db_session.add_all(MonitorCheckShard(run_id=run_id, number=number, columns=[f"c{number}"]) for number in range(2))
    db_session.flush()
    assert checks.resume(db_session, run_id, started) == job
    assert checks.record_shard(db_session, run_id, 0, {"columns": {"c0": "first"}}, started) is False
    # A redelivered shard: its results were recorded, the second ones are dropped.
    assert checks.record_shard(db_session, run_id, 0, {"columns": {"c0": "again"}}, started) is False
    assert checks.record_shard(db_session, run_id, 1, {"columns": {"c1": "first"}}, started) is True
    shards = db_session.scalars(select(MonitorCheckShard).where(MonitorCheckShard.run_id == run_id)).all()
    assert [shard.result["columns"] for shard in shards] == [{"c0": "first"}, {"c1": "first"}]
    # After the lease the run is retaken: tasks of the first claim no longer find it.
    retaken = started + LEASE + timedelta(seconds=1)
    assert checks.start(db_session, run_id, retaken, LEASE) is not None
    assert checks.resume(db_session, run_id, started) is None
    assert checks.resume(db_session, run_id, retaken).window_end == retaken
