"""Periodic work runs once per time slot, however many beat processes ask for it.

Each periodic task first claims its slot (`floor(now / interval)`) with one INSERT ... ON CONFLICT:
the first claim inserts the row and runs; a second beat's claim of the same slot only counts itself
in `claims` and does nothing. The flush and the sweep are safe to overlap anyway (SKIP LOCKED), so
the claim saves duplicate work rather than guarding correctness.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import delete
from sqlalchemy.orm import Session

from services.notifier.domain.storage import upsert_insert
from shared.db.models import NotifierPeriodicRun, NotifierProcessedEvent

# Claims are only compared within a slot; old ones are history.
CLAIM_RETENTION = timedelta(hours=1)
# Past `ingest.unhandled_events`' one-day look-back, a processed-event row has no use left.
PROCESSED_EVENT_RETENTION = timedelta(days=2)


def claim_slot(session: Session, task: str, interval_s: float, now: datetime) -> bool:
    slot = int(now.timestamp() // interval_s)
    statement = upsert_insert(session, NotifierPeriodicRun).values(task=task, slot=slot, claims=1, claimed_at=now)
    claims = session.execute(
        statement.on_conflict_do_update(
            index_elements=["task", "slot"], set_={"claims": NotifierPeriodicRun.claims + 1}
        ).returning(NotifierPeriodicRun.claims)
    ).scalar_one()
    return claims == 1


def prune(session: Session, now: datetime) -> None:
    session.execute(delete(NotifierPeriodicRun).where(NotifierPeriodicRun.claimed_at < now - CLAIM_RETENTION))
    session.execute(
        delete(NotifierProcessedEvent).where(NotifierProcessedEvent.processed_at < now - PROCESSED_EVENT_RETENTION)
    )
