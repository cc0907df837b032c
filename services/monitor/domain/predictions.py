"""Logged predictions: Parquet files in the artifact store, indexed by a small table.

Why files and not rows: a check reads whole columns of a window (often millions of rows) and never
single rows. Parquet (zstd) keeps ~10x less than a row table, and pyarrow reads a window's files
column by column at hundreds of MB/s; the index (one row per file, by monitor and time) tells which
files overlap the window without listing the store. Each logged batch is first its own file; beat's
maintenance (`prediction_log`) merges a monitor's small files into day files and drops expired ones.
Keys are time-partitioned by hour, and a file's name starts with the time it was written, which lets
the orphan sweep tell a file whose index row is still being committed from one whose commit failed.
"""

from __future__ import annotations

import contextlib
import io
import uuid
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from sqlalchemy import select
from sqlalchemy.orm import Session
from sqlalchemy.sql import ColumnElement

from services.monitor.domain import reference
from services.monitor.domain.monitors import get_monitor
from services.monitor.domain.visibility import WRITE
from services.monitor.schemas import GroundTruthRow, PredictionRow
from shared.core.artifacts import ArtifactStore, safe_key
from shared.core.auth import Access
from shared.core.errors import InvalidParameter, NotFound
from shared.db.dialect import upsert_insert
from shared.db.models import ModelMonitoring, MonitorGroundTruth, MonitorPredictionBatch, Project

_TIMESTAMP = pa.timestamp("us", tz="UTC")
# Files of a window are fetched concurrently: with S3 the latency, not the bytes, is what costs.
_READ_THREADS = 8


def prediction_column(monitor: ModelMonitoring) -> str:
    return monitor.config["prediction_column"]


def _physical_types(monitor: ModelMonitoring) -> dict[str, str]:
    """Stored type per logged column. The prediction is stored even when it is not monitored for drift
    (the reference lacks it): as numbers for regression quality metrics, else as labels."""
    types = {name: column["dtype"] for name, column in monitor.column_schema["columns"].items()}
    quality = monitor.config.get("quality") or {}
    types.setdefault(prediction_column(monitor), "float" if quality.get("task") == "regression" else "string")
    return types


def rows_to_table(rows: Iterable[PredictionRow], monitor: ModelMonitoring, now: datetime) -> pa.Table:
    """JSON rows as a table of the stored columns; unknown or missing features are refused."""
    expected = _feature_names(monitor)
    columns: dict[str, list[Any]] = {name: [] for name in expected}
    predictions, request_ids, timestamps = [], [], []
    for index, row in enumerate(rows):
        unknown, missing = sorted(row.features.keys() - set(expected)), sorted(set(expected) - row.features.keys())
        if unknown or missing:
            raise InvalidParameter(
                f"rows[{index}]: features do not match the monitor's schema",
                details={"unknown": unknown, "missing": missing, "expected": expected},
            )
        for name in expected:
            columns[name].append(row.features[name])
        predictions.append(row.prediction)
        request_ids.append(row.request_id)
        timestamps.append(row.timestamp or now)
    arrays = {name: _array(values) for name, values in columns.items()}
    arrays[prediction_column(monitor)] = _array(predictions)
    arrays[reference.REQUEST_ID] = pa.array(request_ids, pa.string())
    arrays[reference.LOGGED_AT] = pa.array(timestamps, _TIMESTAMP)
    return _conform(pa.table(arrays), monitor)


def _array(values: list[Any]) -> pa.Array:
    try:
        return pa.array(values)
    except (pa.ArrowException, TypeError, ValueError, OverflowError):
        # Mixed kinds (numbers and text), or integers past 64 bits: as text, so the cast names the column.
        return pa.array([None if value is None else str(value) for value in values], pa.string())


def parquet_to_table(data: bytes, monitor: ModelMonitoring, now: datetime) -> pa.Table:
    """A Parquet body: the feature columns, the prediction column (optional unless monitored), and
    optional `request_id` (text) and `timestamp` columns."""
    table = reference.read_table_bytes(data, "The Parquet body")
    names = table.column_names
    predicted = prediction_column(monitor)
    expected = _feature_names(monitor) + ([predicted] if predicted in monitor.column_schema["columns"] else [])
    unknown = sorted(set(names) - set(expected) - {predicted, "request_id", "timestamp"})
    missing = sorted(set(expected) - set(names))
    if unknown or missing:
        raise InvalidParameter(
            "Columns do not match the monitor's schema",
            details={"unknown": unknown, "missing": missing, "expected": expected},
        )
    rows = table.num_rows
    columns = {name: table.column(name) for name in expected}
    columns[predicted] = table.column(predicted) if predicted in names else pa.nulls(rows)
    columns[reference.REQUEST_ID] = table.column("request_id") if "request_id" in names else pa.nulls(rows)
    columns[reference.LOGGED_AT] = (
        _cast("timestamp", table.column("timestamp"), _TIMESTAMP)
        if "timestamp" in names
        else pa.array([now] * rows, _TIMESTAMP)
    )
    return _conform(pa.table(columns), monitor)


def _feature_names(monitor: ModelMonitoring) -> list[str]:
    return [name for name in monitor.column_schema["columns"] if name != prediction_column(monitor)]


def _cast(name: str, column: pa.Array | pa.ChunkedArray, target: pa.DataType) -> pa.Array | pa.ChunkedArray:
    try:
        return pc.cast(column, target, safe=True)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        raise InvalidParameter(
            f"Column '{name}': {column.type} values do not fit its type {target}",
            details={"column": name, "given": str(column.type), "expected": str(target)},
        ) from None


def _conform(table: pa.Table, monitor: ModelMonitoring) -> pa.Table:
    """Every column in its stored type (the reference's own); 400 naming the first that does not fit."""
    types = _physical_types(monitor) | {reference.REQUEST_ID: "string"}
    columns = {
        name: _cast(name, table.column(name), reference.ARROW_TYPES[types[name]])
        if name in types
        else table.column(name)
        for name in table.column_names
    }
    return pa.table(columns)


def log_batch(
    session: Session, store: ArtifactStore, monitor: ModelMonitoring, table: pa.Table, now: datetime
) -> MonitorPredictionBatch:
    """Write a validated batch (from `rows_to_table` / `parquet_to_table`) and index it. Validation came
    first, so a refused batch writes nothing; a failed commit leaves an unindexed file, which the upkeep's
    orphan sweep removes once it is older than the grace period."""
    if table.num_rows == 0:
        raise InvalidParameter("The batch has no rows")
    logged_at = table.column(reference.LOGGED_AT)
    if logged_at.null_count:
        raise InvalidParameter("Column 'timestamp' has empty values")
    first_at, last_at = (value.as_py() for value in pc.min_max(logged_at).values())
    return store_batch(session, store, monitor, table, first_at, last_at, now)


def predictions_prefix(session: Session, monitor: ModelMonitoring) -> str:
    project = session.get_one(Project, monitor.project_id)
    return safe_key(reference.monitor_prefix(project.organization_id, project.id, monitor.id), "predictions")


def store_batch(
    session: Session,
    store: ArtifactStore,
    monitor: ModelMonitoring,
    table: pa.Table,
    first_at: datetime,
    last_at: datetime,
    now: datetime,
    row_group_size: int | None = None,
) -> MonitorPredictionBatch:
    """Write `table` as one file and index it. If indexing fails the file is removed at once; if the
    caller's commit fails later, the orphan sweep removes it (its name says when it was written)."""
    batch_id = uuid.uuid4()
    key = safe_key(
        predictions_prefix(session, monitor),
        first_at.strftime("%Y/%m/%d/%H"),
        f"{now.strftime(reference.KEY_TIME_FORMAT)}-{batch_id.hex}.parquet",
    )
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd", row_group_size=row_group_size)
    store.write(key, [buffer.getvalue()])
    del buffer
    batch = MonitorPredictionBatch(
        id=batch_id,
        monitor_id=monitor.id,
        first_at=first_at,
        last_at=last_at,
        row_count=table.num_rows,
        storage_key=key,
        created_at=now,
    )
    try:
        session.add(batch)
        session.flush()
    except Exception:
        delete_files(store, [key])
        raise
    return batch


def delete_files(store: ArtifactStore, keys: Iterable[str]) -> None:
    """Remove files; one already gone is fine (a retried task, or a sweep that got there first)."""
    for key in keys:
        with contextlib.suppress(NotFound):
            store.delete(key)


def read_window(
    session: Session,
    store: ArtifactStore,
    monitor: ModelMonitoring,
    start: datetime,
    end: datetime,
    columns: list[str] | None = None,
) -> pa.Table:
    """Every row logged in [start, end), from the files that overlap it. Only `columns` are decoded, by
    default the monitored ones (request ids and predictions too when quality is measured)."""
    wanted = [*monitor.column_schema["columns"]] if columns is None else list(columns)
    wanted.append(reference.LOGGED_AT)
    if columns is None and monitor.config.get("quality"):
        wanted += [prediction_column(monitor), reference.REQUEST_ID]
    overlapping = (
        MonitorPredictionBatch.monitor_id == monitor.id,
        MonitorPredictionBatch.last_at >= start,
        MonitorPredictionBatch.first_at < end,
    )
    try:
        window = read_files(store, _keys(session, overlapping), wanted, start, end)
    except NotFound:
        # Compaction replaced files between the index query and the read: the index now names the
        # merged file (its transaction committed before the old files were removed).
        window = read_files(store, _keys(session, overlapping), wanted, start, end)
    return window if window is not None else _empty_window(monitor)


class WindowColumns:
    """The rows logged in [start, end), read a few columns at a time (a drift check's `ColumnSource`):
    a check over a large window never holds all of its columns at once."""

    def __init__(
        self, session: Session, store: ArtifactStore, monitor: ModelMonitoring, start: datetime, end: datetime
    ) -> None:
        self._session, self._store, self._start, self._end = session, store, start, end
        self._overlapping = (
            MonitorPredictionBatch.monitor_id == monitor.id,
            MonitorPredictionBatch.last_at >= start,
            MonitorPredictionBatch.first_at < end,
        )
        self._empty = _empty_window(monitor)
        # Decodes only the logging times; a monitored column no file has yet (added to the schema after
        # these rows were logged) is missing from the window, as when the window is read whole.
        self._num_rows = self._read([]).num_rows
        present = self._present_names()
        self._names = [name for name in monitor.column_schema["columns"] if present is None or name in present]

    @property
    def names(self) -> list[str]:
        return self._names

    @property
    def num_rows(self) -> int:
        return self._num_rows

    def column_bytes(self, name: str) -> int:
        # Every value becomes at least a float64 once read; labels are counted as they are read.
        return self._num_rows * 8

    def read(self, names: Sequence[str]) -> pa.Table:
        return self._read(names).select(list(names))

    def _present_names(self) -> set[str] | None:
        """The columns of the window's files (their footers only); None when there are no files."""
        keys = _keys(self._session, self._overlapping)
        if not keys:
            return None
        present: set[str] = set()
        for key in keys:
            with contextlib.suppress(NotFound), self._store.open_read(key) as handle:
                present.update(pq.ParquetFile(handle).schema_arrow.names)
        return present

    def _read(self, names: Sequence[str]) -> pa.Table:
        """These columns and the logging times, with the (empty) columns of the files' schema."""
        wanted = [*names, reference.LOGGED_AT]
        try:
            window = read_files(self._store, _keys(self._session, self._overlapping), wanted, self._start, self._end)
        except NotFound:
            # Compaction replaced files since the index was read: the index now names the merged file.
            window = read_files(self._store, _keys(self._session, self._overlapping), wanted, self._start, self._end)
        return window if window is not None else self._empty


def _keys(session: Session, conditions: tuple[ColumnElement[bool], ...]) -> list[str]:
    return list(session.scalars(select(MonitorPredictionBatch.storage_key).where(*conditions)).all())


def read_files(
    store: ArtifactStore, keys: list[str], columns: list[str], start: datetime, end: datetime
) -> pa.Table | None:
    """The rows of these files logged in [start, end), files fetched in parallel (with S3 the latency,
    not the bytes, is what costs); None when there are no files. Row groups whose time range misses
    the window are not decoded: a compacted day file is read only in the hours a window covers."""
    if not keys:
        return None

    def read(key: str) -> pa.Table:
        # Opened for random access, not read whole: only the footer and the wanted columns of the wanted
        # row groups are fetched (ranged GETs on S3).
        with store.open_read(key) as handle:
            file = pq.ParquetFile(handle)
            present = set(file.schema_arrow.names)
            names = [name for name in dict.fromkeys(columns) if name in present]
            groups = _row_groups_between(file, start, end)
            return file.read_row_groups(groups, columns=names) if groups is not None else file.read(columns=names)

    with ThreadPoolExecutor(max_workers=min(_READ_THREADS, len(keys))) as pool:
        tables = list(pool.map(read, keys))
    # "permissive": batches logged before a schema change lack the newer columns (nulls there).
    window = pa.concat_tables(tables, promote_options="permissive")
    del tables
    logged_at = window.column(reference.LOGGED_AT)
    inside = pc.and_(
        pc.greater_equal(logged_at, pa.scalar(start, _TIMESTAMP)), pc.less(logged_at, pa.scalar(end, _TIMESTAMP))
    )
    return window.filter(inside)


def _row_groups_between(file: pq.ParquetFile, start: datetime, end: datetime) -> list[int] | None:
    """The row groups whose logging times can fall in [start, end), or None to read the whole file
    (a single row group, or no statistics to decide on)."""
    metadata = file.metadata
    if metadata.num_row_groups < 2:
        return None
    column = file.schema_arrow.get_field_index(reference.LOGGED_AT)
    groups = []
    for index in range(metadata.num_row_groups):
        statistics = metadata.row_group(index).column(column).statistics
        if statistics is None or not statistics.has_min_max:
            return None
        if statistics.max >= start and statistics.min < end:
            groups.append(index)
    return groups


def _empty_window(monitor: ModelMonitoring) -> pa.Table:
    fields = [pa.field(name, reference.ARROW_TYPES[dtype]) for name, dtype in _physical_types(monitor).items()]
    return pa.schema(
        [*fields, pa.field(reference.REQUEST_ID, pa.string()), pa.field(reference.LOGGED_AT, _TIMESTAMP)]
    ).empty_table()


def log_ground_truth(
    session: Session, access: Access, monitor_id: uuid.UUID, rows: list[GroundTruthRow], now: datetime
) -> int:
    """Upsert by request id: a corrected label replaces the earlier one."""
    monitor = get_monitor(session, access, monitor_id, WRITE)
    # Text as Arrow writes it, the way predictions are compared (1.0 -> "1", True -> "true").
    labels = pc.cast(_array([row.value for row in rows]), pa.string()).to_pylist()
    values = {row.request_id: label for row, label in zip(rows, labels, strict=True)}
    statement = upsert_insert(session, MonitorGroundTruth).values(
        [
            {"monitor_id": monitor.id, "request_id": rid, "value": value, "logged_at": now}
            for rid, value in values.items()
        ]
    )
    session.execute(
        statement.on_conflict_do_update(
            index_elements=["monitor_id", "request_id"],
            set_={"value": statement.excluded.value, "logged_at": statement.excluded.logged_at},
        )
    )
    return len(values)


def ground_truth_since(session: Session, monitor_id: uuid.UUID, start: datetime) -> pa.Table:
    """Labels logged since `start` (they arrive after the predictions they belong to)."""
    rows = session.execute(
        select(MonitorGroundTruth.request_id, MonitorGroundTruth.value).where(
            MonitorGroundTruth.monitor_id == monitor_id, MonitorGroundTruth.logged_at >= start
        )
    ).all()
    return pa.table(
        {
            reference.REQUEST_ID: pa.array([row[0] for row in rows], pa.string()),
            "truth": pa.array([row[1] for row in rows], pa.string()),
        }
    )
