"""Upkeep of logged-prediction files: compaction (same window, fewer files, per day, under the target),
retention, the orphan sweep, a failed index write, a deleted monitor's purge, the upkeep task on
committed data (files deleted only after the commit), two workers compacting at once, beat's entry."""

from __future__ import annotations

import posixpath
import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from services.monitor import tasks
from services.monitor.domain import checks, prediction_log, predictions, reference
from shared.core.artifacts import get_artifact_store
from shared.db.models import ModelMonitoring, MonitorPredictionBatch
from tests.monitor.test_api import MONITORS, create_monitor, make_version

DAY = datetime(2026, 3, 2, tzinfo=UTC)


@pytest.fixture
def store(settings):
    return get_artifact_store(settings)


@pytest.fixture
def monitor(client, db_session, tenant) -> ModelMonitoring:
    response = create_monitor(client, tenant.headers, make_version(db_session, tenant.project_id).id)
    assert response.status_code == 201, response.text
    return db_session.get(ModelMonitoring, uuid.UUID(response.json()["id"]))


def batch_table(monitor, start: datetime, rows: int, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    table = pa.table(
        {
            "x": rng.normal(0, 1, rows),
            "y": rng.normal(10, 2, rows),
            "c": rng.choice(["a", "b", "c"], rows).tolist(),
            "prediction": pa.nulls(rows, pa.string()),
            reference.REQUEST_ID: [f"{seed}-{i}" for i in range(rows)],
            reference.LOGGED_AT: pa.array(
                [start + timedelta(seconds=i) for i in range(rows)], pa.timestamp("us", tz="UTC")
            ),
        }
    )
    return predictions._conform(table, monitor)


def log(session, store, monitor, start: datetime, rows: int, seed: int) -> MonitorPredictionBatch:
    return predictions.log_batch(session, store, monitor, batch_table(monitor, start, rows, seed), start)


def batches(session, monitor) -> list[MonitorPredictionBatch]:
    return session.scalars(
        select(MonitorPredictionBatch)
        .where(MonitorPredictionBatch.monitor_id == monitor.id)
        .order_by(MonitorPredictionBatch.first_at)
    ).all()


def window_rows(session, store, monitor, start, end) -> list[tuple]:
    window = predictions.read_window(session, store, monitor, start, end)
    return sorted(zip(*(window.column(name).to_pylist() for name in ("x", "c", reference.LOGGED_AT)), strict=True))


def test_compaction_merges_a_days_small_files_and_the_window_reads_the_same_rows(db_session, store, monitor):
    # 12 batches of 50 rows on one day, 3 on the next; a target of 400 rows cuts the first day in two.
    first_day = [log(db_session, store, monitor, DAY + timedelta(hours=i), 50, i) for i in range(12)]
    next_day = [log(db_session, store, monitor, DAY + timedelta(days=1, hours=i), 50, 100 + i) for i in range(3)]
    start, end = DAY + timedelta(hours=2, minutes=30), DAY + timedelta(days=1, hours=1, seconds=20)
    before = window_rows(db_session, store, monitor, start, end)

    changes = prediction_log.compact(db_session, store, monitor, DAY + timedelta(days=2), 400, row_group_rows=16)

    merged = batches(db_session, monitor)
    assert [batch.row_count for batch in merged] == [400, 200, 150]
    assert [batch.first_at for batch in merged] == [DAY, DAY + timedelta(hours=8), DAY + timedelta(days=1)]
    assert sorted(changes.replaced) == sorted(batch.storage_key for batch in first_day + next_day)
    assert changes.written == [batch.storage_key for batch in merged]
    # Sorted by logging time in row groups, so a window decodes only the groups it covers.
    compacted = pq.ParquetFile(pa.BufferReader(reference.read_stored(store, merged[0].storage_key)))
    assert compacted.metadata.num_row_groups == 25
    logged = compacted.read(columns=[reference.LOGGED_AT]).column(0).to_pylist()
    assert logged == sorted(logged)
    predictions.delete_files(store, changes.replaced)
    assert not any(store.is_file(key) for key in changes.replaced)
    assert window_rows(db_session, store, monitor, start, end) == before
    # Nothing left to merge: a second run changes nothing.
    assert prediction_log.compact(db_session, store, monitor, DAY + timedelta(days=2), 400) == (
        prediction_log.FileChanges()
    )


def test_a_large_file_is_rewritten_only_once_the_new_rows_match_it(db_session, store, monitor):
    large = log(db_session, store, monitor, DAY, 300, 0)
    small = [log(db_session, store, monitor, DAY + timedelta(hours=1 + i), 20, 1 + i) for i in range(3)]
    # The three small files merge among themselves; the large one stays as it is.
    changes = prediction_log.compact(db_session, store, monitor, DAY, 1000)
    assert sorted(changes.replaced) == sorted(batch.storage_key for batch in small)
    assert sorted(batch.row_count for batch in batches(db_session, monitor)) == [60, 300]
    more = [log(db_session, store, monitor, DAY + timedelta(hours=5, minutes=i), 20, 10 + i) for i in range(12)]
    # 60 + 240 new rows now match the large file's 300: everything becomes one file.
    changes = prediction_log.compact(db_session, store, monitor, DAY, 1000)
    assert large.storage_key in changes.replaced and len(changes.replaced) == 14
    assert [batch.row_count for batch in batches(db_session, monitor)] == [600]
    assert all(batch.storage_key in changes.replaced for batch in more)


def test_retention_drops_files_past_the_monitors_or_the_platforms_days(client, db_session, tenant, store, monitor):
    old = log(db_session, store, monitor, DAY - timedelta(days=10), 20, 1)
    recent = log(db_session, store, monitor, DAY - timedelta(days=2), 20, 2)
    assert prediction_log.expire(db_session, monitor, DAY, default_days=30).replaced == []
    assert prediction_log.expire(db_session, monitor, DAY, default_days=7).replaced == [old.storage_key]
    updated = client.patch(f"{MONITORS}/{monitor.id}", data={"spec": '{"retention_days": 1}'}, headers=tenant.headers)
    assert updated.status_code == 200 and updated.json()["config"]["retention_days"] == 1
    db_session.refresh(monitor)
    assert prediction_log.expire(db_session, monitor, DAY, default_days=30).replaced == [recent.storage_key]
    assert batches(db_session, monitor) == []


def test_orphan_sweep_removes_unindexed_files_once_past_the_grace_period(db_session, store, monitor):
    indexed = log(db_session, store, monitor, DAY, 10, 1)
    folder = indexed.storage_key.rsplit("/", 1)[0]
    stale = f"{folder}/20260301T000000-{uuid.uuid4().hex}.parquet"  # its commit failed long ago
    in_flight = f"{folder}/{(DAY + timedelta(minutes=59)).strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex}.parquet"
    legacy = f"{folder}/{uuid.uuid4().hex}.parquet"  # named before the writing time was in the name
    for key in (stale, in_flight, legacy):
        store.write(key, [b"PAR1"])
    orphans = prediction_log.orphan_keys(db_session, store, monitor, DAY + timedelta(hours=1), timedelta(minutes=30))
    assert orphans == sorted([stale, legacy])


def test_replaced_reference_versions_are_swept_once_past_the_grace_period(db_session, store, monitor):
    folder = posixpath.dirname(monitor.reference_uri)
    now = datetime.now(UTC)
    replaced = [f"{folder}/20260301T000000-{uuid.uuid4().hex}{suffix}" for suffix in (".parquet", ".profile.npz")]
    just_replaced = f"{folder}/{(now - timedelta(minutes=10)).strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex}.parquet"
    legacy = f"{folder}/{uuid.uuid4().hex}.parquet"  # named before the writing time was in the name
    for key in (*replaced, just_replaced, legacy):
        store.write(key, [b"PAR1"])
    assert prediction_log.stale_reference_keys(db_session, store, monitor, now, timedelta(minutes=30)) == sorted(
        [*replaced, legacy]
    )
    # The monitor's own version is never stale, however old.
    later = prediction_log.stale_reference_keys(db_session, store, monitor, now + timedelta(days=1), timedelta(0))
    assert monitor.reference_uri not in later and monitor.reference_profile_uri not in later
    assert set(later) == {*replaced, just_replaced, legacy}


def test_a_failed_index_write_leaves_no_file(db_session, store, monitor, tenant):
    never_saved = ModelMonitoring(
        id=uuid.uuid4(), project_id=tenant.project_id, config=monitor.config, column_schema=monitor.column_schema
    )
    prefix = predictions.predictions_prefix(db_session, never_saved)
    table = batch_table(monitor, DAY, 10, 1)
    with pytest.raises(IntegrityError):  # the batch's monitor does not exist
        predictions.store_batch(db_session, store, never_saved, table, DAY, DAY, DAY)
    db_session.rollback()
    assert store.find(prefix) == []


def test_a_deleted_monitors_files_are_purged(client, db_session, tenant, store, monitor):
    log(db_session, store, monitor, DAY, 10, 1)
    prefix = reference.monitor_prefix(tenant.org_id, tenant.project_id, monitor.id)
    assert prediction_log.purge_deleted(db_session, monitor) is None  # live: nothing to purge
    assert client.delete(f"{MONITORS}/{monitor.id}", headers=tenant.headers).status_code == 204
    db_session.refresh(monitor)
    assert monitor.id in prediction_log.monitors_to_maintain(db_session)
    assert prediction_log.purge_deleted(db_session, monitor) == prefix
    predictions.delete_files(store, [prefix])
    assert batches(db_session, monitor) == [] and store.find(prefix) == []
    assert monitor.id not in prediction_log.monitors_to_maintain(db_session)


def test_the_upkeep_task_compacts_expires_and_sweeps_committed_data(db, live_tenant, store, monkeypatch):
    monkeypatch.setattr(tasks.settings(), "monitor_compaction_target_rows", 1000)
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    with db.session_scope() as session:
        monitor = committed_monitor(session, live_tenant, store)
        expired = log(session, store, monitor, today - timedelta(days=40), 10, 0)
        small = [log(session, store, monitor, today + timedelta(minutes=i), 10, i + 1) for i in range(5)]
        orphan = f"{expired.storage_key.rsplit('/', 1)[0]}/20000101T000000-{uuid.uuid4().hex}.parquet"
        store.write(orphan, [b"PAR1"])
        monitor_id = monitor.id
    try:
        tasks.maintain_prediction_log(str(monitor_id))
        with db.session_scope() as session:
            [merged] = batches(session, session.get(ModelMonitoring, monitor_id))
            assert merged.row_count == 50 and store.is_file(merged.storage_key)
        gone = [expired.storage_key, orphan, *(batch.storage_key for batch in small)]
        assert not any(store.is_file(key) for key in gone)
    finally:
        with db.session_scope() as session:
            session.delete(session.get(ModelMonitoring, monitor_id))


def test_the_upkeep_task_purges_a_deleted_monitor(db, live_tenant, store):
    with db.session_scope() as session:
        monitor = committed_monitor(session, live_tenant, store)
        logged = log(session, store, monitor, DAY, 10, 0)
        monitor.deleted_at = DAY
        monitor_id = monitor.id
    try:
        tasks.maintain_prediction_log(str(monitor_id))
        with db.session_scope() as session:
            monitor = session.get(ModelMonitoring, monitor_id)
            assert monitor.reference_uri is None and batches(session, monitor) == []
            assert monitor_id not in prediction_log.monitors_to_maintain(session)
        assert not store.is_file(logged.storage_key)
        assert store.find(reference.monitor_prefix(live_tenant.org_id, live_tenant.project_id, monitor_id)) == []
    finally:
        with db.session_scope() as session:
            session.delete(session.get(ModelMonitoring, monitor_id))


def test_two_workers_never_merge_the_same_files(db, live_tenant, store):
    with db.session_scope() as session:
        monitor = committed_monitor(session, live_tenant, store)
        for i in range(4):
            log(session, store, monitor, DAY + timedelta(minutes=i), 10, i)
        monitor_id = monitor.id
    try:
        with db.session_scope() as first, db.session_scope() as second:
            taken = prediction_log.compact(first, store, first.get(ModelMonitoring, monitor_id), DAY, 1000)
            # The second worker skips the rows the first one holds: nothing to merge.
            idle = prediction_log.compact(second, store, second.get(ModelMonitoring, monitor_id), DAY, 1000)
            assert len(taken.replaced) == 4 and idle == prediction_log.FileChanges()
    finally:
        with db.session_scope() as session:
            session.delete(session.get(ModelMonitoring, monitor_id))


def test_beat_schedules_the_upkeep():
    from tessera.worker import celery_app

    entry = celery_app.conf.beat_schedule["monitor-prediction-log-upkeep"]
    assert entry["task"] == "monitor.maintain_prediction_logs"
    assert entry["schedule"] == timedelta(seconds=600)


def committed_monitor(session, tenant, store) -> ModelMonitoring:
    """A monitor straight in the database (the API's transaction would not be committed)."""
    schema = {"columns": {name: {"type": kind, "dtype": dtype} for name, kind, dtype in COLUMNS}}
    monitor = ModelMonitoring(
        id=uuid.uuid4(),
        project_id=tenant.project_id,
        name=f"m-{uuid.uuid4().hex[:6]}",
        model_version_id=make_version(session, tenant.project_id).id,
        schedule_interval_s=3600,
        config={"prediction_column": "prediction", "quality": None},
        column_schema=schema,
        reference_uri="unused",
    )
    session.add(monitor)
    session.flush()
    return monitor


COLUMNS = [("x", "numerical", "float"), ("y", "numerical", "float"), ("c", "categorical", "string")]


def test_a_check_of_a_monitor_purged_meanwhile_fails_with_a_reason(db_session, tenant, store, monitor):
    """The purge clears the reference while a worker is between reading the window and loading the
    profile: the run fails with a message for the API, not with a crash of the worker."""
    log(db_session, store, monitor, DAY, 10, 1)
    monitor.min_rows = 1
    monitor.reference_uri = monitor.reference_profile_uri = None
    db_session.flush()
    job = checks.CheckJob(uuid.uuid4(), monitor.id, DAY, DAY, DAY + timedelta(days=1))
    with pytest.raises(checks.CheckFailed, match="deleted while this check ran"):
        checks.split(db_session, store, job, shard_columns=1, memory_mb=64)
    window = checks.read_window(db_session, store, job)
    with pytest.raises(checks.CheckFailed, match="deleted while this check ran"):
        checks.compute(db_session, store, job, window, 64, None)
