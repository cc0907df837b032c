"""Upkeep of the logged-prediction files: compaction, retention, and removing files nothing indexes.

Every logged batch starts as its own small file, so a window of a busy monitor would mean thousands of
files to open. Compaction merges a monitor's small files of one UTC day (by first row) into files of up
to `target_rows` rows, sorted by logging time and cut into row groups, so a window reads a few files and
decodes only the row groups it covers. Retention drops files whose newest row is older than the
monitor's `retention_days` (or the platform's); a file goes whole, so a row can outlive the retention
by as much as its file spans (a day at most for compacted files).

Each step changes the index in the caller's transaction and says which files to delete once it has
committed (`replaced`) and which to delete if it does not (`written`): the index never names a missing
file, and the files a failed step wrote are removed. What a crash between the two leaves behind is
found by `orphan_keys`: files under the monitor's prefix that no index row names, written more than a
grace period ago (a file's name starts with its writing time, so one whose index row is still being
committed is left alone).
"""

from __future__ import annotations

import posixpath
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from sqlalchemy import delete, or_, select
from sqlalchemy.orm import Session

from services.monitor.domain import predictions, reference
from shared.core.artifacts import ArtifactStore
from shared.db.models import ModelMonitoring, MonitorPredictionBatch, Project

# Rows per row group of a compacted file: small enough that a window of an hour skips most of a day file.
COMPACTED_ROW_GROUP = 64 * 1024


@dataclass
class FileChanges:
    """Files to delete after the step's transaction commits (`replaced`), or if it fails (`written`)."""

    written: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)


def monitors_to_maintain(session: Session) -> list[uuid.UUID]:
    """Live monitors, and deleted ones whose files are not purged yet."""
    return list(
        session.scalars(
            select(ModelMonitoring.id).where(
                or_(ModelMonitoring.deleted_at.is_(None), ModelMonitoring.reference_uri.is_not(None))
            )
        ).all()
    )


def retention_for(monitor: ModelMonitoring, default_days: int) -> timedelta:
    return timedelta(days=monitor.config.get("retention_days") or default_days)


def purge_deleted(session: Session, monitor: ModelMonitoring) -> str | None:
    """For a deleted monitor: forget its batches and reference; returns its folder, to delete after the
    commit (reference, profile, prediction files, report pages). None when there is nothing to purge."""
    if monitor.deleted_at is None or monitor.reference_uri is None:
        return None
    session.execute(delete(MonitorPredictionBatch).where(MonitorPredictionBatch.monitor_id == monitor.id))
    # A purged monitor has no reference any more: that is what keeps it out of `monitors_to_maintain`.
    monitor.reference_uri = monitor.reference_profile_uri = None
    session.flush()
    return _monitor_prefix(session, monitor)


def _monitor_prefix(session: Session, monitor: ModelMonitoring) -> str:
    project = session.get_one(Project, monitor.project_id)
    return reference.monitor_prefix(project.organization_id, project.id, monitor.id)


def expire(session: Session, monitor: ModelMonitoring, now: datetime, default_days: int) -> FileChanges:
    """Unindex the files whose newest row is past the retention. Rows another worker holds (a running
    compaction) are skipped, and expire on the next run."""
    cutoff = now - retention_for(monitor, default_days)
    expired = session.execute(
        select(MonitorPredictionBatch.id, MonitorPredictionBatch.storage_key)
        .where(MonitorPredictionBatch.monitor_id == monitor.id, MonitorPredictionBatch.last_at < cutoff)
        .with_for_update(skip_locked=True)
    ).all()
    if expired:
        session.execute(
            delete(MonitorPredictionBatch).where(MonitorPredictionBatch.id.in_([row[0] for row in expired]))
        )
        session.flush()
    return FileChanges(replaced=[row[1] for row in expired])


def compact(
    session: Session,
    store: ArtifactStore,
    monitor: ModelMonitoring,
    now: datetime,
    target_rows: int,
    row_group_rows: int = COMPACTED_ROW_GROUP,
) -> FileChanges:
    """Merge the monitor's files under `target_rows` rows, per UTC day of their first row, into files of
    up to `target_rows` rows. The merged batches are locked (SKIP LOCKED), so two workers never merge
    the same file twice. A file with more rows than the rest of its group together waits until the rest
    has caught up (see `_worth_merging`); a day with a single small file is left as it is."""
    small = session.scalars(
        select(MonitorPredictionBatch)
        .where(MonitorPredictionBatch.monitor_id == monitor.id, MonitorPredictionBatch.row_count < target_rows)
        .order_by(MonitorPredictionBatch.first_at, MonitorPredictionBatch.id)
        .with_for_update(skip_locked=True)
    ).all()
    changes = FileChanges()
    try:
        for group in _groups(small, target_rows):
            merged = _merge(store, group)
            if merged is None:
                continue
            compacted = predictions.store_batch(
                session,
                store,
                monitor,
                merged,
                min(batch.first_at for batch in group),
                max(batch.last_at for batch in group),
                now,
                row_group_size=row_group_rows,
            )
            changes.written.append(compacted.storage_key)
            session.execute(
                delete(MonitorPredictionBatch).where(MonitorPredictionBatch.id.in_([batch.id for batch in group]))
            )
            changes.replaced.extend(batch.storage_key for batch in group)
        session.flush()
    except Exception:
        predictions.delete_files(store, changes.written)
        raise
    return changes


def _groups(batches: Sequence[MonitorPredictionBatch], target_rows: int) -> list[list[MonitorPredictionBatch]]:
    """Consecutive batches of one day, each group under `target_rows` rows; groups of one are dropped."""
    groups: list[list[MonitorPredictionBatch]] = []
    current: list[MonitorPredictionBatch] = []
    day: date | None = None
    rows = 0
    for batch in batches:
        batch_day = batch.first_at.date()
        if current and (batch_day != day or rows + batch.row_count > target_rows):
            groups.append(current)
            current, rows = [], 0
        current.append(batch)
        day, rows = batch_day, rows + batch.row_count
    groups.append(current)
    return [kept for kept in map(_worth_merging, groups) if len(kept) > 1]


def _worth_merging(group: list[MonitorPredictionBatch]) -> list[MonitorPredictionBatch]:
    """The group without its largest files while each holds more rows than the rest together: merging
    such a file now would mostly rewrite it. So a row is rewritten only when its file at least doubles,
    at most log2(target / batch rows) times, not at every upkeep run that finds a new batch of its day."""
    kept = sorted(group, key=lambda batch: batch.row_count)
    rest = sum(batch.row_count for batch in kept)
    while len(kept) > 1 and kept[-1].row_count > rest - kept[-1].row_count:
        rest -= kept.pop().row_count
    return kept


def _merge(store: ArtifactStore, group: list[MonitorPredictionBatch]) -> pa.Table | None:
    """The group's rows in logging order, or None if its files cannot be put in one table (a column's
    stored type changed with the reference in between): those stay as they are."""
    keys = [batch.storage_key for batch in group]
    tables = [pq.ParquetFile(pa.BufferReader(reference.read_stored(store, key))).read() for key in keys]
    try:
        merged = pa.concat_tables(tables, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return None
    del tables
    return merged.take(pc.sort_indices(merged, [(reference.LOGGED_AT, "ascending")]))


def orphan_keys(
    session: Session, store: ArtifactStore, monitor: ModelMonitoring, now: datetime, grace: timedelta
) -> list[str]:
    """Prediction files of the monitor that no index row names and that were written before
    `now - grace`. Files named before writing times were part of the name have no index row in flight."""
    prefix = predictions.predictions_prefix(session, monitor)
    stored = store.find(prefix)
    if not stored:
        return []
    indexed = set(
        session.scalars(
            select(MonitorPredictionBatch.storage_key).where(MonitorPredictionBatch.monitor_id == monitor.id)
        ).all()
    )
    return sorted(key for key in stored if key not in indexed and _written_before(key, now - grace))


def stale_reference_keys(
    session: Session, store: ArtifactStore, monitor: ModelMonitoring, now: datetime, grace: timedelta
) -> list[str]:
    """Reference versions (data and profile) a newer one replaced, written before `now - grace`: a
    check that started on an older version reads its profile once, at its start."""
    current = {monitor.reference_uri, monitor.reference_profile_uri}
    stored = store.find(reference.reference_folder(_monitor_prefix(session, monitor)))
    return sorted(key for key in stored if key not in current and _written_before(key, now - grace))


def _written_before(key: str, moment: datetime) -> bool:
    stamp = posixpath.basename(key).split("-", 1)[0]
    try:
        written = datetime.strptime(stamp, reference.KEY_TIME_FORMAT).replace(tzinfo=moment.tzinfo)
    except ValueError:
        return True
    return written < moment
