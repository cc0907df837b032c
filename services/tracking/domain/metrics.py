"""Metric logging and history: the hottest path of the platform.

A batch is validated as a whole first (nothing is written if any item is bad), then written with set
operations: the points with one COPY on PostgreSQL (an executemany elsewhere), the latest-value table
with one INSERT .. ON CONFLICT DO UPDATE whose WHERE keeps the point with the highest step, then the
latest timestamp. No ORM objects are built per point.

A point is stored once: the same (run, key, step, timestamp, value) sent again is dropped by a unique
index, as MLflow's store drops it by its primary key (mlflow's `log_model` re-sends a run's points
tagged with the model's id; those are kept against the model, not twice in the run's history).
"""

from __future__ import annotations

import base64
import binascii
import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import orjson
from psycopg.errors import UniqueViolation
from sqlalchemy import BindParameter, bindparam, func, select, text, tuple_
from sqlalchemy.orm import Session

from services.tracking.domain import runs
from services.tracking.domain.ids import parse_model_id
from services.tracking.domain.validation import (
    parse_double,
    parse_int64,
    validate_batch_sizes,
    validate_key,
)
from shared.core.auth import Access
from shared.core.errors import InvalidParameter, NotFound
from shared.db.dialect import UpsertInsert, insert_for
from shared.db.models import (
    Experiment,
    ExperimentRun,
    LoggedModel,
    LoggedModelMetric,
    RunLatestMetric,
    RunMetric,
)

BULK_INTERVAL_MAX_RUNS = 100
BULK_INTERVAL_DEFAULT_POINTS = 320
# Below this many points one INSERT statement beats setting up a COPY.
_COPY_THRESHOLD = 16


@dataclass(slots=True)
class MetricPoint:
    key: str
    value: float
    timestamp: int
    step: int
    model_id: uuid.UUID | None = None
    dataset_name: str | None = None
    dataset_digest: str | None = None


def parse_metric(item: dict, index: int | None = None) -> MetricPoint:
    """One metric from its protobuf JSON form ({"key", "value", "timestamp", "step", ...})."""
    where = f"metrics[{index}]" if index is not None else "metric"
    if not isinstance(item, dict):
        raise InvalidParameter(f"Invalid value for {where}: expected an object")
    key = item.get("key")
    if "value" not in item:
        raise InvalidParameter(f"Missing value for required parameter '{where}.value'")
    model_id = item.get("model_id")
    return MetricPoint(
        key=validate_key(key, "metric"),
        value=parse_double(item["value"], f"metric '{key}'"),
        timestamp=parse_int64(item.get("timestamp"), f"{where}.timestamp"),
        step=parse_int64(item.get("step"), f"{where}.step", default=0),
        model_id=parse_model_id(model_id) if model_id else None,
        dataset_name=item.get("dataset_name") or None,
        dataset_digest=item.get("dataset_digest") or None,
    )


def parse_metrics(items: list) -> list[MetricPoint]:
    """A batch of metrics. This runs for every point ingested, so the common shape (objects with a
    float value, int timestamp and step, no model) is checked column by column, each distinct key
    once; any other batch goes through the per-item parser, which names the offending item."""
    plain = _plain_metrics(items)
    return plain if plain is not None else [parse_metric(item, index) for index, item in enumerate(items)]


_FLOAT, _INT = frozenset({float}), frozenset({int})


def _plain_metrics(items: list) -> list[MetricPoint] | None:
    if not all(type(item) is dict and "model_id" not in item for item in items):
        return None
    values = [item.get("value") for item in items]
    timestamps = [item.get("timestamp") for item in items]
    steps = [item.get("step", 0) for item in items]
    if not (set(map(type, values)) <= _FLOAT and set(map(type, timestamps)) <= _INT and set(map(type, steps)) <= _INT):
        return None
    keys = [item.get("key") for item in items]
    for key in set(keys):
        validate_key(key, "metric")
    return list(map(MetricPoint, keys, values, timestamps, steps))


def _copy_literal(value: float) -> str:
    if math.isfinite(value):
        return repr(value)
    if value != value:
        return "NaN"
    return "Infinity" if value > 0 else "-Infinity"


COPY_POINTS = "COPY run_metrics (run_id, key, value, is_nan, step, timestamp) FROM STDIN"


def copy_rows(run_id: uuid.UUID, points: list[MetricPoint]) -> str:
    """The points in COPY's text format. Keys passed validate_key (no tab, newline or backslash), so they
    need no escaping."""
    run = str(run_id)
    if all(math.isfinite(p.value) for p in points):
        return "".join(f"{run}\t{p.key}\t{p.value!r}\tf\t{p.step}\t{p.timestamp}\n" for p in points)
    return "".join(
        f"{run}\t{p.key}\t{_copy_literal(p.value)}\t{'t' if p.value != p.value else 'f'}\t{p.step}\t{p.timestamp}\n"
        for p in points
    )


def _copy_points(session: Session, run_id: uuid.UUID, points: list[MetricPoint]) -> None:
    # SQLAlchemy types the driver's connection as optional; a session's open connection has one.
    driver = session.connection().connection.driver_connection
    with driver.cursor() as cursor, cursor.copy(COPY_POINTS) as copy:  # type: ignore[union-attr]
        copy.write(copy_rows(run_id, points))


def _copy_new_points(session: Session, run_id: uuid.UUID, points: list[MetricPoint]) -> None:
    """COPY cannot skip a point that is already stored. A batch that repeats one (rare: a client re-sending)
    is rolled back to the savepoint and inserted again, skipping what is there; the common batch pays
    only the savepoint's two statements."""
    try:
        with session.begin_nested():
            _copy_points(session, run_id, points)
    except UniqueViolation:
        session.execute(_new_points_insert("postgresql"), _point_rows(run_id, points, store_nan=True))


def _point_rows(run_id: uuid.UUID, points: list[MetricPoint], *, store_nan: bool) -> list[dict]:
    # SQLite cannot store NaN: it becomes 0 with is_nan set, as in MLflow's store (see RunMetric).
    return [
        {
            "run_id": run_id,
            "key": p.key,
            "value": p.value if store_nan or p.value == p.value else 0.0,
            "is_nan": p.value != p.value,
            "step": p.step,
            "timestamp": p.timestamp,
        }
        for p in points
    ]


def latest_points(points: list[MetricPoint]) -> list[MetricPoint]:
    """Each key's point with the highest (step, timestamp) in this batch (the later one on a tie), in key
    order: concurrent batches on one run then lock latest-value rows in the same order (no deadlock)."""
    best: dict[str, MetricPoint] = {}
    for point in points:
        current = best.get(point.key)
        if current is None or (point.step, point.timestamp) >= (current.step, current.timestamp):
            best[point.key] = point
    return sorted(best.values(), key=lambda p: p.key)


def _latest_rows(run_id: uuid.UUID, points: list[MetricPoint]) -> list[dict]:
    """latest_points as rows; NaN kept as NULL + is_nan."""
    return [
        {
            "run_id": run_id,
            "key": p.key,
            "value": None if p.value != p.value else p.value,
            "is_nan": p.value != p.value,
            "step": p.step,
            "timestamp": p.timestamp,
        }
        for p in latest_points(points)
    ]


def _write_run_points(session: Session, run_id: uuid.UUID, points: list[MetricPoint]) -> None:
    dialect = session.get_bind().dialect
    latest = _latest_rows(run_id, points)
    if dialect.driver == "psycopg" and len(points) >= _COPY_THRESHOLD:
        _copy_new_points(session, run_id, points)
        session.execute(_latest_upsert(dialect.name), latest)
    elif dialect.name == "postgresql":
        # Small writes (a single log_metric): each point and its latest-value upsert in one statement
        # (built once, so compiled once), run as one executemany; in key order, like the upsert above.
        session.execute(
            _point_with_latest_upsert(),
            [
                {**row, "latest_value": None if row["is_nan"] else row["value"]}
                for row in sorted(_point_rows(run_id, points, store_nan=True), key=lambda r: r["key"])
            ],
        )
    else:
        session.execute(_new_points_insert(dialect.name), _point_rows(run_id, points, store_nan=False))
        session.execute(_latest_upsert(dialect.name), latest)


@lru_cache(maxsize=2)
def _new_points_insert(dialect_name: str) -> UpsertInsert:
    """INSERT of points that skips those already stored (the unique index on the point's identity)."""
    return insert_for(dialect_name, RunMetric.__table__).on_conflict_do_nothing()


@lru_cache(maxsize=2)
def _latest_upsert(dialect_name: str) -> UpsertInsert:
    """Built once per backend and run as an executemany: this statement runs on every log call."""
    statement = insert_for(dialect_name, RunLatestMetric.__table__)
    new = statement.excluded
    table = RunLatestMetric.__table__.c
    return statement.on_conflict_do_update(
        index_elements=["run_id", "key"],
        set_={"value": new.value, "is_nan": new.is_nan, "step": new.step, "timestamp": new.timestamp},
        where=tuple_(new.step, new.timestamp) >= tuple_(table.step, table.timestamp),
    )


@lru_cache(maxsize=1)
def _point_with_latest_upsert() -> UpsertInsert:
    """INSERT one point, and upsert it as its key's latest value, as one PostgreSQL statement: the point
    rides along as a data-modifying CTE."""
    columns = ("run_id", "key", "value", "is_nan", "step", "timestamp")
    new_point = _new_points_insert("postgresql").values({c: bindparam(c) for c in columns}).cte("new_point")
    latest: dict[str, BindParameter[Any]] = {c: bindparam("latest_value" if c == "value" else c) for c in columns}
    return _latest_upsert("postgresql").values(latest).add_cte(new_point)


def _log_model_metrics(session: Session, run: ExperimentRun, points: list[MetricPoint]) -> None:
    """Points that name a logged model are also kept against that model (same project only)."""
    model_ids = {p.model_id for p in points if p.model_id is not None}
    if not model_ids:
        return
    same_project = select(Experiment.project_id).where(Experiment.id == run.experiment_id).scalar_subquery()
    found = set(
        session.scalars(
            select(LoggedModel.id)
            .join(Experiment, Experiment.id == LoggedModel.experiment_id)
            .where(LoggedModel.id.in_(model_ids), Experiment.project_id == same_project)
        )
    )
    missing = model_ids - found
    if missing:
        raise NotFound(f"Logged model with ID 'm-{next(iter(missing)).hex}' not found")
    session.execute(
        # The same point logged twice against a model is kept once, as for the run.
        insert_for(session.get_bind().dialect.name, LoggedModelMetric.__table__).on_conflict_do_nothing(),
        [
            {
                "model_id": p.model_id,
                "run_id": run.id,
                "key": p.key,
                "value": None if p.value != p.value else p.value,
                "is_nan": p.value != p.value,
                "step": p.step,
                "timestamp": p.timestamp,
                "dataset_name": p.dataset_name,
                "dataset_digest": p.dataset_digest,
            }
            for p in points
            if p.model_id is not None
        ],
    )


def write_points(session: Session, run: ExperimentRun, points: list[MetricPoint]) -> None:
    if not points:
        return
    _log_model_metrics(session, run, points)
    _write_run_points(session, run.id, points)


def commit_without_wal_flush(session: Session) -> None:
    """This transaction's commit returns before PostgreSQL flushes it to disk (see Settings.
    tracking_async_metric_commit for the durability bound). Run before the transaction's first write."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SET LOCAL synchronous_commit = off"))


def log_metric(session: Session, access: Access, run_id: str | None, item: dict) -> None:
    point = parse_metric(item)
    run = runs.get_active_run_for_write(session, access, run_id)
    write_points(session, run, [point])


def log_batch(
    session: Session,
    access: Access,
    run_id: str | None,
    metrics: list,
    params: list,
    tags: list,
) -> None:
    """MLflow's LogBatch: everything is validated before the first write; params are checked against
    what the run already has before any point is written."""
    validate_batch_sizes(len(metrics), len(params), len(tags))
    points = parse_metrics(metrics)
    param_values = runs.validate_params([_pair(p) for p in params])
    tag_values = runs.validate_tags([_pair(t) for t in tags])
    run = runs.get_active_run_for_write(session, access, run_id)
    runs.log_params(session, run, param_values)
    write_points(session, run, points)
    runs.set_tags(session, run, tag_values)


def _pair(item: object) -> tuple[object, object]:
    if not isinstance(item, dict):
        raise InvalidParameter("Invalid value for params/tags: expected objects with 'key' and 'value'")
    return item.get("key"), item.get("value")


# --- history -----------------------------------------------------------------------------------------


def _encode_cursor(step: int, timestamp: int, point_id: int) -> str:
    return base64.urlsafe_b64encode(orjson.dumps([step, timestamp, point_id])).decode()


def _decode_cursor(token: str) -> tuple[int, int, int]:
    try:
        step, timestamp, point_id = orjson.loads(base64.urlsafe_b64decode(token.encode()))
    except (binascii.Error, ValueError, TypeError, orjson.JSONDecodeError):
        raise InvalidParameter(f"Invalid page token '{token}'") from None
    if not all(isinstance(v, int) for v in (step, timestamp, point_id)):
        raise InvalidParameter(f"Invalid page token '{token}'")
    return step, timestamp, point_id


def get_metric_history(
    session: Session,
    access: Access,
    run_id: str | None,
    key: str | None,
    *,
    max_results: object = None,
    page_token: str | None = None,
) -> tuple[list, str | None]:
    """Points of one metric in step order, as rows (value, is_nan, timestamp, step). Pages are keyset
    cursors (step, timestamp, id), so deep pages cost the same as the first."""
    if not key:
        raise InvalidParameter("Missing value for required parameter 'metric_key'")
    run = runs.get_run_row(session, access, run_id)
    limit = parse_int64(max_results, "max_results", default=0) or None
    if limit is not None and limit < 0:
        raise InvalidParameter(f"Invalid value {limit} for parameter 'max_results'")
    query = select(RunMetric.value, RunMetric.is_nan, RunMetric.timestamp, RunMetric.step, RunMetric.id).where(
        RunMetric.run_id == run.id, RunMetric.key == key
    )
    if page_token:
        query = query.where(
            tuple_(RunMetric.step, RunMetric.timestamp, RunMetric.id) > tuple_(*_decode_cursor(page_token))
        )
    query = query.order_by(RunMetric.step, RunMetric.timestamp, RunMetric.id)
    if limit is not None:
        query = query.limit(limit + 1)
    dialect = session.get_bind().dialect
    if dialect.driver == "psycopg":
        # A page can hold tens of thousands of points: the driver's tuples come from its C row loader,
        # and building SQLAlchemy rows over them cost several times the query itself.
        compiled = query.compile(dialect=dialect)
        driver = session.connection().connection.driver_connection
        with driver.cursor() as cursor:  # type: ignore[union-attr]  # (typed optional; an open connection has one)
            rows = cursor.execute(str(compiled), compiled.params).fetchall()
    else:
        rows = session.connection().execute(query).all()
    next_token = None
    if limit is not None and len(rows) > limit:
        rows = rows[:limit]
        _, _, timestamp, step, point_id = rows[-1]
        next_token = _encode_cursor(step, timestamp, point_id)
    return rows, next_token


def get_metric_history_bulk_interval(
    session: Session,
    access: Access,
    run_ids: list[str],
    key: str | None,
    *,
    start_step: object = None,
    end_step: object = None,
    max_results: object = None,
) -> list[tuple[str, Sequence[Any]]]:
    """For charts: each run's points between two steps, thinned evenly to at most `max_results`
    steps per run (first and last kept)."""
    if not key:
        raise InvalidParameter("Missing value for required parameter 'metric_key'")
    if not run_ids or len(run_ids) > BULK_INTERVAL_MAX_RUNS:
        raise InvalidParameter(f"GetMetricHistoryBulkInterval needs 1 to {BULK_INTERVAL_MAX_RUNS} run_ids")
    points_per_run = parse_int64(max_results, "max_results", default=BULK_INTERVAL_DEFAULT_POINTS)
    result = []
    for run_id in run_ids:
        run = runs.get_run_row(session, access, run_id)
        query = select(RunMetric.value, RunMetric.is_nan, RunMetric.timestamp, RunMetric.step).where(
            RunMetric.run_id == run.id, RunMetric.key == key
        )
        if start_step is not None:
            query = query.where(RunMetric.step >= parse_int64(start_step, "start_step"))
        if end_step is not None:
            query = query.where(RunMetric.step <= parse_int64(end_step, "end_step"))
        rows = session.execute(query.order_by(RunMetric.step, RunMetric.timestamp)).all()
        result.append((run.id.hex, _thin(rows, points_per_run)))
    return result


def _thin(rows: Sequence[Any], limit: int) -> Sequence[Any]:
    if len(rows) <= limit or limit < 2:
        return rows[: max(limit, 0)] if limit < 2 else rows
    stride = (len(rows) - 1) / (limit - 1)
    return [rows[round(i * stride)] for i in range(limit)]


@dataclass(frozen=True)
class MetricSummary:
    key: str
    latest_value: float | None
    latest_step: int
    latest_timestamp: int
    min_value: float | None
    max_value: float | None
    count: int


def metric_summaries(session: Session, access: Access, run_id: str) -> list[MetricSummary]:
    """Per metric of a run: the latest point plus min, max and count over its history (NaN excluded
    from min/max), in one aggregate query."""
    run = runs.get_run_row(session, access, run_id)
    finite = RunMetric.is_nan.is_(False)
    aggregates = (
        select(
            RunMetric.key,
            func.min(RunMetric.value).filter(finite).label("min_value"),
            func.max(RunMetric.value).filter(finite).label("max_value"),
            func.count().label("count"),
        )
        .where(RunMetric.run_id == run.id)
        .group_by(RunMetric.key)
        .subquery()
    )
    rows = session.execute(
        select(RunLatestMetric, aggregates.c.min_value, aggregates.c.max_value, aggregates.c.count)
        .join(aggregates, aggregates.c.key == RunLatestMetric.key)
        .where(RunLatestMetric.run_id == run.id)
        .order_by(RunLatestMetric.key)
    )
    return [
        MetricSummary(
            latest.key,
            float("nan") if latest.is_nan else latest.value,
            latest.step,
            latest.timestamp,
            min_value,
            max_value,
            count,
        )
        for latest, min_value, max_value, count in rows
    ]
