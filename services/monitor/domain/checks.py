"""Check runs: claimed slots, the run's lifecycle (queued -> running -> done | insufficient_data | failed)
and what a run produces (a drift report, its HTML page, alert changes).

Exactly one run per due slot: beat's tick moves `next_check_at` forward with one conditional UPDATE
(`WHERE next_check_at = <the slot it read>`); of two beats reading the same slot, the second's UPDATE
finds the row already moved and claims nothing. The run row is unique on (monitor, slot) as well.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pyarrow as pa
from sqlalchemy import ColumnElement, case, delete, or_, select, update
from sqlalchemy.orm import Session

from services.monitor.domain import alerts, predictions, quality, reference
from services.monitor.domain.drift import (
    ColumnStatus,
    DriftReport,
    ProfileFormatError,
    ReferenceProfile,
    bounded_drift_report,
    render_html,
)
from services.monitor.domain.drift.bounded import VALUE_BYTES
from services.monitor.domain.drift.engine import assemble_report
from services.monitor.domain.drift.report import column_dict, column_from_dict
from services.monitor.domain.monitors import describe, drift_options, get_monitor, monitor_rows, next_check_after
from services.monitor.domain.visibility import READ, WRITE
from shared.core.artifacts import ArtifactStore, safe_key
from shared.core.auth import Access
from shared.core.errors import NotFound, TesseraError
from shared.core.pagination import RowPage
from shared.core.settings import Settings
from shared.db.models import DataDriftReport, ModelMonitoring, MonitorCheckRun, MonitorCheckShard, Project
from shared.db.session import affected_rows

QUEUED, RUNNING, DONE, FAILED, INSUFFICIENT = "queued", "running", "done", "failed", "insufficient_data"
# The bound when the caller gives none (TESSERA_MONITOR_DRIFT_MEMORY_MB's default).
DRIFT_MEMORY_MB: int = Settings.model_fields["monitor_drift_memory_mb"].default
# Monitors claimed per beat tick; the rest wait for the next tick.
CLAIM_BATCH = 200
# A run's progress once it is split into shards (reading the window's logging times and the profile's
# header), and the part of it the shards' columns fill (the rest is the combining task's).
SPLIT_PROGRESS = 0.1
SHARDS_PROGRESS = 0.8


def claim_due_slots(session: Session, now: datetime) -> list[uuid.UUID]:
    """Turn every due slot into a queued run, once; returns the new run ids."""
    due = session.scalars(
        select(ModelMonitoring)
        .where(
            ModelMonitoring.enabled.is_(True),
            ModelMonitoring.deleted_at.is_(None),
            ModelMonitoring.next_check_at <= now,
        )
        .order_by(ModelMonitoring.next_check_at)
        .limit(CLAIM_BATCH)
    ).all()
    run_ids = []
    for monitor in due:
        slot = monitor.next_check_at
        assert slot is not None  # due: its slot is at or before now
        claimed = session.execute(
            update(ModelMonitoring)
            .where(ModelMonitoring.id == monitor.id, ModelMonitoring.next_check_at == slot)
            .values(next_check_at=next_check_after(monitor, now))
            .execution_options(synchronize_session=False)
        )
        if affected_rows(claimed) == 1:
            run_ids.append(_add_run(session, monitor.id, slot, "schedule", now).id)
    session.flush()
    return run_ids


def _add_run(session: Session, monitor_id: uuid.UUID, slot: datetime, trigger: str, now: datetime) -> MonitorCheckRun:
    run = MonitorCheckRun(
        id=uuid.uuid4(),
        monitor_id=monitor_id,
        slot_time=slot,
        trigger=trigger,
        status=QUEUED,
        progress=0.0,
        created_at=now,
        queued_at=now,
    )
    session.add(run)
    return run


def _abandoned(now: datetime, lease: timedelta) -> ColumnElement[bool]:
    """A run some worker started and did not finish within the lease: that worker is gone."""
    return (MonitorCheckRun.status == RUNNING) & (MonitorCheckRun.started_at < now - lease)


def stranded_runs(session: Session, now: datetime, requeue_after: timedelta, lease: timedelta) -> list[uuid.UUID]:
    """Runs whose message was lost (queued too long) or whose worker died (running past the lease):
    they are sent again; the run's own claim makes a duplicate delivery harmless."""
    rows = session.scalars(
        select(MonitorCheckRun)
        .where(
            or_(
                (MonitorCheckRun.status == QUEUED) & (MonitorCheckRun.queued_at < now - requeue_after),
                _abandoned(now, lease),
            )
        )
        .limit(CLAIM_BATCH)
        .with_for_update(skip_locked=True)
    ).all()
    for run in rows:
        run.queued_at = now
    session.flush()
    return [run.id for run in rows]


def request_check(session: Session, access: Access, monitor_id: uuid.UUID, now: datetime) -> MonitorCheckRun:
    """A manual ("run now") run, outside the schedule (which goes on unchanged)."""
    monitor = get_monitor(session, access, monitor_id, WRITE)
    run = _add_run(session, monitor.id, now, "manual", now)
    session.flush()
    describe(session, monitor, "monitor.check", {"run_id": str(run.id)})
    return run


def get_run(session: Session, access: Access, monitor_id: uuid.UUID, run_id: uuid.UUID) -> MonitorCheckRun:
    get_monitor(session, access, monitor_id, READ)
    run = session.get(MonitorCheckRun, run_id)
    if run is None or run.monitor_id != monitor_id:
        raise NotFound(f"Check run '{run_id}' does not exist")
    return run


def list_runs(
    session: Session, access: Access, monitor_id: uuid.UUID, *, page_token: str | None, max_results: int
) -> RowPage:
    return monitor_rows(session, access, monitor_id, MonitorCheckRun, page_token=page_token, max_results=max_results)


@dataclass(frozen=True)
class CheckJob:
    """What a started run needs, read once, so the long computation holds no transaction open."""

    run_id: uuid.UUID
    monitor_id: uuid.UUID
    # The slot the run checks: of two runs, the newer slot's findings decide the monitor's alerts.
    slot_time: datetime
    window_start: datetime
    window_end: datetime


def start(session: Session, run_id: uuid.UUID, now: datetime, lease: timedelta) -> CheckJob | None:
    """Claim the run for this worker; None if it is finished, or running elsewhere within its lease."""
    claimed = session.execute(
        update(MonitorCheckRun)
        .where(
            MonitorCheckRun.id == run_id,
            or_(MonitorCheckRun.status == QUEUED, _abandoned(now, lease)),
        )
        .values(status=RUNNING, started_at=now, progress=0.0)
        .returning(MonitorCheckRun.monitor_id, MonitorCheckRun.slot_time)
        .execution_options(synchronize_session=False)
    ).first()
    if claimed is None:
        return None
    monitor = session.get(ModelMonitoring, claimed.monitor_id)
    if monitor is None or monitor.deleted_at is not None:
        _finish_run(session, run_id, FAILED, now, error="The monitor was deleted")
        return None
    return CheckJob(run_id, monitor.id, claimed.slot_time, now - timedelta(seconds=monitor.window_s), now)


def set_progress(session: Session, run_id: uuid.UUID, progress: float) -> None:
    session.execute(
        update(MonitorCheckRun)
        .where(MonitorCheckRun.id == run_id, MonitorCheckRun.status == RUNNING)
        .values(progress=progress)
        .execution_options(synchronize_session=False)
    )


@dataclass
class CheckWindow:
    # The monitored columns, read a group at a time by the drift report.
    columns: predictions.WindowColumns
    # Predictions and request ids (only when quality is measured) and the labels that arrived.
    labelled: pa.Table | None
    truth: pa.Table | None


def read_window(session: Session, store: ArtifactStore, job: CheckJob) -> CheckWindow:
    monitor = session.get_one(ModelMonitoring, job.monitor_id)
    columns = predictions.WindowColumns(session, store, monitor, job.window_start, job.window_end)
    if not monitor.config["quality"]:
        return CheckWindow(columns, None, None)
    wanted = [predictions.prediction_column(monitor), reference.REQUEST_ID]
    labelled = predictions.read_window(session, store, monitor, job.window_start, job.window_end, columns=wanted)
    return CheckWindow(columns, labelled, predictions.ground_truth_since(session, monitor.id, job.window_start))


@dataclass
class CheckResult:
    report_id: uuid.UUID
    status: str
    report: dict[str, Any]
    findings: list[alerts.Finding]


def compute(
    session: Session,
    store: ArtifactStore,
    job: CheckJob,
    window: CheckWindow,
    memory_mb: int = DRIFT_MEMORY_MB,
    progress: Callable[[float], None] | None = None,
    threads: int | None = None,
) -> CheckResult:
    """The drift report (and the quality section) of the window, its HTML page stored next to the
    monitor's files; no database writes, so it can run outside any transaction. The window and the
    reference profile are read a group of columns at a time, to stay within `memory_mb`, each group's
    columns worked on by `threads` threads (default: one per core); `progress` gets the share of
    columns done after each group."""
    monitor = session.get_one(ModelMonitoring, job.monitor_id)
    report_id = uuid.uuid4()
    rows = window.columns.num_rows
    if rows < monitor.min_rows:
        report = {
            "status": INSUFFICIENT,
            "reason": f"{rows} rows in the window, the monitor needs {monitor.min_rows}",
            "current_rows": rows,
            "columns": {},
        }
        return CheckResult(report_id, INSUFFICIENT, report, [])
    drift = _drift_report(store, monitor, window.columns, memory_mb, progress, threads=threads)
    return _check_result(session, store, monitor, window, drift)


def _drift_report(
    store: ArtifactStore,
    monitor: ModelMonitoring,
    columns: predictions.WindowColumns,
    memory_mb: int,
    progress: Callable[[float], None] | None,
    shard: Sequence[str] | None = None,
    threads: int | None = None,
) -> DriftReport:
    """The drift report of the window (of the `shard`'s columns only, if given); `progress` gets the share
    of these columns done after each group."""
    try:
        with store.open_read(_profile_uri(monitor)) as handle:
            return bounded_drift_report(
                ReferenceProfile.read(handle),
                columns,
                memory_mb * 2**20,
                drift_options(monitor),
                progress=None if progress is None else lambda step: progress(step.columns_done / step.columns),
                columns=shard,
                threads=threads,
            )
    except (NotFound, ProfileFormatError) as error:
        raise CheckFailed(f"The reference profile cannot be read: {error}") from None


def _profile_uri(monitor: ModelMonitoring) -> str:
    """Where the monitor's reference profile is; a monitor purged while its check ran has none."""
    if monitor.reference_profile_uri is None:
        raise CheckFailed("The monitor was deleted while this check ran")
    return monitor.reference_profile_uri


def _check_result(
    session: Session, store: ArtifactStore, monitor: ModelMonitoring, window: CheckWindow, drift: DriftReport
) -> CheckResult:
    """The run's result from its drift report: the quality section, the findings, the HTML page."""
    report_id = uuid.uuid4()
    report = drift.to_dict()
    findings: list[alerts.Finding] = []
    status = INSUFFICIENT if drift.status == ColumnStatus.INSUFFICIENT_DATA else DONE
    if drift.status == ColumnStatus.OK:
        findings.append(_drift_finding(monitor, report))
    quality_config = monitor.config["quality"]
    if quality_config and window.truth is not None and window.labelled is not None:
        prediction = predictions.prediction_column(monitor)
        section = quality.evaluate(quality_config, window.labelled, prediction, window.truth)
        report["quality"] = section
        if section["status"] == "ok":
            findings.append(_quality_finding(quality_config, section))
    project = session.get_one(Project, monitor.project_id)
    store.write(
        html_key(project, monitor.id, report_id),
        [render_html(drift, title=f"Data drift: {monitor.name}").encode()],
    )
    return CheckResult(report_id, status, report, findings)


def plan_shards(names: Sequence[str], rows: int, shard_columns: int, memory_mb: int) -> list[list[str]]:
    """Consecutive columns in shards of at most `shard_columns` (0: one shard), and at least as many
    shards as the window's values (8 bytes each) fill the memory bound; never more than one per column."""
    if shard_columns <= 0 or not names:
        return [list(names)]
    by_width = math.ceil(len(names) / shard_columns)
    by_size = math.ceil(rows * len(names) * VALUE_BYTES / (memory_mb * 2**20))
    count = min(len(names), max(by_width, by_size))
    size = math.ceil(len(names) / count)
    return [list(names[start : start + size]) for start in range(0, len(names), size)]


def split(session: Session, store: ArtifactStore, job: CheckJob, shard_columns: int, memory_mb: int) -> int:
    """Split a large check into column shards (rows of `MonitorCheckShard`); the number of shards to
    queue, 0 when the run is checked in one task (small, or too few rows for a verdict)."""
    monitor = session.get_one(ModelMonitoring, job.monitor_id)
    rows = predictions.WindowColumns(session, store, monitor, job.window_start, job.window_end).num_rows
    if rows < monitor.min_rows:
        return 0
    try:
        with store.open_read(_profile_uri(monitor)) as handle:
            names = list(ReferenceProfile.read(handle).columns)
    except (NotFound, ProfileFormatError):
        return 0  # the one-task path reports it
    shards = plan_shards(names, rows, shard_columns, memory_mb)
    if len(shards) < 2:
        return 0
    # A run retaken after its worker was lost starts its shards over.
    session.execute(delete(MonitorCheckShard).where(MonitorCheckShard.run_id == job.run_id))
    session.add_all(
        MonitorCheckShard(run_id=job.run_id, number=number, columns=columns) for number, columns in enumerate(shards)
    )
    set_progress(session, job.run_id, SPLIT_PROGRESS)
    return len(shards)


def resume(session: Session, run_id: uuid.UUID, started_at: datetime) -> CheckJob | None:
    """The job of a sharded run, for its shard and combining tasks; None once the run has finished, failed,
    or was retaken by a later claim (whose own tasks then do the work)."""
    run = session.get(MonitorCheckRun, run_id)
    if run is None or run.status != RUNNING or run.started_at != started_at:
        return None
    monitor = session.get_one(ModelMonitoring, run.monitor_id)
    return CheckJob(run.id, run.monitor_id, run.slot_time, started_at - timedelta(seconds=monitor.window_s), started_at)


def compute_shard(
    session: Session,
    store: ArtifactStore,
    job: CheckJob,
    number: int,
    memory_mb: int = DRIFT_MEMORY_MB,
    progress: Callable[[float], None] | None = None,
    threads: int | None = None,
) -> dict[str, Any] | None:
    """The results of the shard's columns; None when an earlier delivery already recorded them.
    `progress` gets, after each group of columns, the share of all the run's columns it finished."""
    shards = {shard.number: shard for shard in _shards(session, job.run_id)}
    shard = shards.get(number)
    if shard is None or shard.finished_at is not None:
        return None
    monitor = session.get_one(ModelMonitoring, job.monitor_id)
    columns = predictions.WindowColumns(session, store, monitor, job.window_start, job.window_end)
    weight = len(shard.columns) / sum(len(other.columns) for other in shards.values())
    reported = 0.0

    def shard_progress(share: float) -> None:
        nonlocal reported
        if progress is not None and share > reported:
            progress(weight * (share - reported))
            reported = share

    drift = _drift_report(store, monitor, columns, memory_mb, shard_progress, shard.columns, threads)
    return {
        "columns": {name: column_dict(column) for name, column in drift.columns.items()},
        "reference_rows": drift.reference_rows,
        "current_rows": drift.current_rows,
    }


def _shards(session: Session, run_id: uuid.UUID) -> list[MonitorCheckShard]:
    query = select(MonitorCheckShard).where(MonitorCheckShard.run_id == run_id).order_by(MonitorCheckShard.number)
    return list(session.scalars(query))


def record_shard(
    session: Session, run_id: uuid.UUID, number: int, result: dict[str, Any] | None, now: datetime
) -> bool:
    """Store a shard's results (once: a redelivered shard's are dropped); whether every shard of the run
    is now done. Under the run's row lock, so of two shards finishing together one sees the other's."""
    session.scalars(select(MonitorCheckRun.id).where(MonitorCheckRun.id == run_id).with_for_update()).one_or_none()
    shard = session.get(MonitorCheckShard, (run_id, number))
    if shard is not None and shard.finished_at is None and result is not None:
        shard.result, shard.finished_at = result, now
        session.flush()
    return all(shard.finished_at is not None for shard in _shards(session, run_id))


def add_progress(session: Session, run_id: uuid.UUID, amount: float) -> None:
    """Shards running side by side each add their part (one UPDATE: no lost increments)."""
    session.execute(
        update(MonitorCheckRun)
        .where(MonitorCheckRun.id == run_id, MonitorCheckRun.status == RUNNING)
        .values(progress=case((MonitorCheckRun.progress + amount > 1.0, 1.0), else_=MonitorCheckRun.progress + amount))
        .execution_options(synchronize_session=False)
    )


def combine(session: Session, store: ArtifactStore, job: CheckJob) -> CheckResult:
    """The run's result from its shards' results, as one task computing every column would give it."""
    monitor = session.get_one(ModelMonitoring, job.monitor_id)
    shards = _shards(session, job.run_id)
    columns = {
        name: column_from_dict(column)
        for shard in shards
        if shard.result is not None
        for name, column in shard.result["columns"].items()
    }
    first = shards[0].result or {}
    drift = assemble_report(columns, drift_options(monitor), first["reference_rows"], first["current_rows"])
    return _check_result(session, store, monitor, read_window(session, store, job), drift)


class CheckFailed(TesseraError):
    """A check that cannot run (unreadable reference): the run fails with this message, no alert changes."""


def _drift_finding(monitor: ModelMonitoring, report: dict[str, Any]) -> alerts.Finding:
    share = report["drift_share"]
    drifted = sorted(name for name, column in report["columns"].items() if column["drift"])
    return alerts.Finding(
        kind=alerts.DATA_DRIFT,
        firing=report["dataset_drift"],
        severity=alerts.severity_for(share, monitor.config["severity_bands"]),
        title=f"Data drift on {monitor.name}: {report['number_of_drifted_columns']} of "
        f"{report['number_of_columns']} columns drifted ({share:.0%})",
        details={"drift_share": share, "drifted_columns": drifted, "current_rows": report["current_rows"]},
    )


def _quality_finding(config: dict[str, Any], section: dict[str, Any]) -> alerts.Finding:
    violations = section["violations"]
    return alerts.Finding(
        kind=alerts.QUALITY,
        firing=bool(violations),
        severity=config["severity"],
        title="Model quality below threshold: "
        + ", ".join(f"{metric}={found['value']:.4g}" for metric, found in sorted(violations.items())),
        details={"metrics": section["metrics"], "violations": violations, "rows": section["rows"]},
    )


def finish(session: Session, job: CheckJob, result: CheckResult, now: datetime, public_url: str) -> None:
    """Store the report and apply its findings in one transaction, under the monitor's row lock. A run
    that finishes after a run of a newer slot (a late worker, a redelivered message) keeps its report but
    leaves the alerts as the newer verdict set them. A run already finished is left as it is."""
    monitor = session.scalars(
        select(ModelMonitoring).where(ModelMonitoring.id == job.monitor_id).with_for_update()
    ).one()
    status = session.scalar(select(MonitorCheckRun.status).where(MonitorCheckRun.id == job.run_id).with_for_update())
    if status != RUNNING:
        return  # finished by an earlier delivery of the same task: one report per run
    report = result.report
    session.add(
        DataDriftReport(
            id=result.report_id,
            monitor_id=monitor.id,
            status=result.status,
            dataset_drift=report.get("dataset_drift"),
            drift_share=report.get("drift_share"),
            number_of_columns=report.get("number_of_columns", 0),
            number_of_drifted_columns=report.get("number_of_drifted_columns", 0),
            current_rows=report["current_rows"],
            window_start=job.window_start,
            window_end=job.window_end,
            report=report,
            created_at=now,
        )
    )
    session.flush()
    if not _newer_verdict_exists(session, job):
        alerts.apply_findings(session, monitor, result.report_id, result.findings, now, public_url)
    monitor.last_check_at = now
    _finish_run(session, job.run_id, result.status, now, report_id=result.report_id)


def _newer_verdict_exists(session: Session, job: CheckJob) -> bool:
    newer = select(MonitorCheckRun.id).where(
        MonitorCheckRun.monitor_id == job.monitor_id,
        MonitorCheckRun.status == DONE,
        MonitorCheckRun.slot_time > job.slot_time,
    )
    return session.scalar(newer.limit(1)) is not None


def fail(session: Session, run_id: uuid.UUID, error: str, now: datetime) -> None:
    _finish_run(session, run_id, FAILED, now, error=error[:2000])


def _finish_run(
    session: Session,
    run_id: uuid.UUID,
    status: str,
    now: datetime,
    *,
    error: str | None = None,
    report_id: uuid.UUID | None = None,
) -> None:
    session.execute(
        update(MonitorCheckRun)
        .where(MonitorCheckRun.id == run_id)
        .values(status=status, progress=1.0, finished_at=now, error=error, report_id=report_id)
        .execution_options(synchronize_session=False)
    )


def html_key(project: Project, monitor_id: uuid.UUID, report_id: uuid.UUID) -> str:
    return safe_key(
        reference.monitor_prefix(project.organization_id, project.id, monitor_id), "reports", f"{report_id.hex}.html"
    )
