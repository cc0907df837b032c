"""Periodic work runs at most once per interval, however many beat processes ask for it.

Each task has one row with the time it last ran. A run is claimed by one atomic UPDATE that moves
`last_run_at` to now only if the last run is at least most of an interval ago; a second beat's tick
inside that interval finds the condition false (the row lock makes the two updates take turns) and
does nothing. Beat ticks are never early, so one beat alone is never refused. The flush and the
sweep would be safe to overlap anyway (SKIP LOCKED); the claim saves duplicate work.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import case, delete, select, update
from sqlalchemy.orm import Session

from shared.db.dialect import upsert_insert
from shared.db.models import NotifierPeriodicRun, NotifierProcessedEvent

# A tick this close to the previous run belongs to the same interval (beats drift by milliseconds).
SAME_INTERVAL = 0.8
# Past `ingest.LOST_EVENT_LOOK_BACK` (a day), a processed-event row has no use left.
PROCESSED_EVENT_RETENTION = timedelta(days=2)
_NEVER = datetime(1970, 1, 1, tzinfo=UTC)


def claim_run(session: Session, task: str, interval_s: float, now: datetime) -> bool:
    session.execute(
        upsert_insert(session, NotifierPeriodicRun)
        .values(task=task, last_run_at=_NEVER, runs=0, requests=0)
        .on_conflict_do_nothing(index_elements=["task"])
    )
    due = NotifierPeriodicRun.last_run_at <= now - timedelta(seconds=interval_s * SAME_INTERVAL)
    last_run_at = session.execute(
        update(NotifierPeriodicRun)
        .where(NotifierPeriodicRun.task == task)
        .values(
            requests=NotifierPeriodicRun.requests + 1,
            runs=NotifierPeriodicRun.runs + case((due, 1), else_=0),
            last_run_at=case((due, now), else_=NotifierPeriodicRun.last_run_at),
        )
        .returning(NotifierPeriodicRun.last_run_at)
    ).scalar_one()
    return last_run_at == now


def prune(session: Session, now: datetime) -> None:
    session.execute(
        delete(NotifierProcessedEvent).where(NotifierProcessedEvent.processed_at < now - PROCESSED_EVENT_RETENTION)
    )


def checkpoint(session: Session, task: str) -> datetime | None:
    return session.scalar(select(NotifierPeriodicRun.checkpoint).where(NotifierPeriodicRun.task == task))


def move_checkpoint(session: Session, task: str, at: datetime) -> None:
    session.execute(update(NotifierPeriodicRun).where(NotifierPeriodicRun.task == task).values(checkpoint=at))
