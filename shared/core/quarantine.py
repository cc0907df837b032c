"""Failure isolation for every consumer that takes a batch of ids (events, deliveries, groups).

A batch is first handled whole, in the consumer's usual transaction(s). If that raises, each item is
handled alone, so the rest of the batch goes through; an item that fails alone gets a dead letter
(`dead_letters`: the consumer, the item, its organization, the error, the attempts) and is queued again
alone after a backoff. After `quarantine_max_attempts` failures it is quarantined: its consumer skips it
(the notifier's sweep no longer re-sends it, the relay no longer publishes it) until someone replays it
(`POST /api/v1/orgs/{org}/dead-letters/{id}/replay`) after a fix; a replayed item that then goes through
is marked resolved. A poison item therefore costs its own retries only — never another item's, nor
another organization's.

Failures that are not the item's fault — the database or the broker unreachable — are not counted
against it: they propagate, and the consumer's own redelivery (relay, sweeps) retries the batch later.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy import ColumnElement, ColumnExpressionArgument, Exists, Select, case, exists, func, select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import InstrumentedAttribute, Session

from shared.core.errors import InvalidState, NotFound
from shared.db.base import utcnow
from shared.db.dialect import upsert_insert
from shared.db.models import DeadLetter

log = structlog.get_logger(__name__)

RETRYING = "retrying"
QUARANTINED = "quarantined"
REPLAYING = "replaying"
RESOLVED = "resolved"
STATES = (RETRYING, QUARANTINED, REPLAYING, RESOLVED)
# What a dead letter keeps of an error (a traceback's last line, a driver message).
MAX_ERROR_CHARS = 2000
_DEAD = DeadLetter.__table__


@dataclass(frozen=True)
class Consumer:
    """A batch consumer: its task name, and where its items' organization is read (id and
    organization_id columns of the items' table)."""

    task: str
    item_id: ColumnElement[Any] | InstrumentedAttribute[Any]
    organization_id: ColumnElement[Any] | InstrumentedAttribute[Any]


def is_transient(exc: BaseException, broker_errors: tuple[type[BaseException], ...] = ()) -> bool:
    """Not the item's fault: the broker is unreachable (`broker_errors`, the messaging library's) or the
    database connection was lost."""
    if isinstance(exc, (ConnectionError, TimeoutError, *broker_errors)):
        return True
    return isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)


def quarantined(consumer_task: str, item_id: ColumnExpressionArgument[uuid.UUID]) -> Exists:
    """A criterion: the item (by its id column) is quarantined from `consumer_task`; for queries that
    pick a consumer's work, so quarantined items are not picked again."""
    return exists().where(_DEAD.c.consumer == consumer_task, _DEAD.c.item_id == item_id, _DEAD.c.state == QUARANTINED)


def known_states(session: Session, consumer_task: str, item_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, str]:
    rows = session.execute(
        select(_DEAD.c.item_id, _DEAD.c.state).where(_DEAD.c.consumer == consumer_task, _DEAD.c.item_id.in_(item_ids))
    )
    return dict(rows.tuples().all())


def record_failure(
    session: Session, consumer: Consumer, item_id: uuid.UUID, error: str, now: datetime, max_attempts: int
) -> DeadLetter:
    """Count one failure of the item alone; quarantined once `max_attempts` are reached."""
    organization_id = session.scalar(select(consumer.organization_id).where(consumer.item_id == item_id))
    statement = upsert_insert(session, _DEAD)
    attempts = _DEAD.c.attempts + 1
    session.execute(
        statement.values(
            id=uuid.uuid4(),
            consumer=consumer.task,
            item_id=item_id,
            organization_id=organization_id,
            state=QUARANTINED if max_attempts <= 1 else RETRYING,
            attempts=1,
            error=error[:MAX_ERROR_CHARS],
            created_at=now,
            last_failed_at=now,
        ).on_conflict_do_update(
            index_elements=["consumer", "item_id"],
            set_={
                "attempts": attempts,
                "error": statement.excluded.error,
                "last_failed_at": now,
                "resolved_at": None,
                "state": case((attempts >= max_attempts, QUARANTINED), else_=RETRYING),
            },
        )
    )
    return session.scalars(
        select(DeadLetter)
        .where(DeadLetter.consumer == consumer.task, DeadLetter.item_id == item_id)
        .execution_options(populate_existing=True)
    ).one()


def mark_resolved(session: Session, consumer_task: str, item_ids: Sequence[uuid.UUID], now: datetime) -> None:
    session.execute(
        update(_DEAD)
        .where(_DEAD.c.consumer == consumer_task, _DEAD.c.item_id.in_(item_ids), _DEAD.c.state != RESOLVED)
        .values(state=RESOLVED, resolved_at=now)
    )


def retry_delay(attempts: int, base_s: float) -> float:
    """Backoff before the item's next try alone: base, 2 x base, 4 x base… at most 10 minutes."""
    return min(base_s * 2 ** max(attempts - 1, 0), 600.0)


class Screen:
    """The pre-check of a batch, run by its consumer in the transaction that handles it (no transaction
    of its own): `screen(session, ids)` drops the quarantined items and remembers the known states, so
    that items that go through after earlier failures are marked resolved."""

    def __init__(self, consumer_task: str) -> None:
        self.consumer_task = consumer_task
        self.states: dict[uuid.UUID, str] = {}

    def __call__(self, session: Session, item_ids: Sequence[uuid.UUID]) -> list[uuid.UUID]:
        self.states.update(known_states(session, self.consumer_task, item_ids))
        return [item_id for item_id in item_ids if self.states.get(item_id) != QUARANTINED]


def run_isolated(
    consumer: Consumer,
    item_ids: Sequence[str | uuid.UUID],
    process: Callable[[list[uuid.UUID]], None],
    *,
    session_scope: Callable[[], AbstractContextManager[Session]],
    requeue: Callable[[uuid.UUID, float], None],
    max_attempts: int,
    retry_base_s: float,
    broker_errors: tuple[type[BaseException], ...] = (),
) -> None:
    """Run `process` on the batch; if it fails, on each item alone (see module doc). `process` opens its
    own transactions, after a pre-check in a transaction of its own; `requeue(item_id, countdown_s)` sends
    the consumer's task for one item later."""

    def screened(ids: list[uuid.UUID], screen: Screen) -> None:
        with session_scope() as session:
            runnable = screen(session, ids)
        if runnable:
            process(runnable)

    run_screened(
        consumer,
        item_ids,
        screened,
        session_scope=session_scope,
        requeue=requeue,
        max_attempts=max_attempts,
        retry_base_s=retry_base_s,
        broker_errors=broker_errors,
    )


def run_screened(
    consumer: Consumer,
    item_ids: Sequence[str | uuid.UUID],
    process: Callable[[list[uuid.UUID], Screen], None],
    *,
    session_scope: Callable[[], AbstractContextManager[Session]],
    requeue: Callable[[uuid.UUID, float], None],
    max_attempts: int,
    retry_base_s: float,
    broker_errors: tuple[type[BaseException], ...] = (),
) -> None:
    """`run_isolated` for a consumer that screens its items itself: `process(ids, screen)` calls
    `screen(session, ids)` first in its own first transaction and handles only the ids it returns."""
    ids = list(dict.fromkeys(uuid.UUID(str(item_id)) for item_id in item_ids))
    if not ids:
        return
    screen = Screen(consumer.task)
    try:
        process(ids, screen)
        succeeded = ids
    except Exception as exc:
        if is_transient(exc, broker_errors):
            raise
        if len(ids) == 1:
            _failed(consumer, ids[0], exc, session_scope, requeue, max_attempts, retry_base_s)
            return
        log.warning("quarantine.batch_failed", consumer=consumer.task, items=len(ids), error=_describe(exc))
        succeeded = []
        for item_id in ids:
            try:
                process([item_id], screen)
            except Exception as item_exc:
                if is_transient(item_exc, broker_errors):
                    raise
                _failed(consumer, item_id, item_exc, session_scope, requeue, max_attempts, retry_base_s)
            else:
                succeeded.append(item_id)
    # Those that went through after failing before (a quarantined item was screened out, not run).
    recovered = [item_id for item_id in succeeded if screen.states.get(item_id) in (RETRYING, REPLAYING)]
    if recovered:
        with session_scope() as session:
            mark_resolved(session, consumer.task, recovered, utcnow())


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _failed(
    consumer: Consumer,
    item_id: uuid.UUID,
    exc: BaseException,
    session_scope: Callable[[], AbstractContextManager[Session]],
    requeue: Callable[[uuid.UUID, float], None],
    max_attempts: int,
    retry_base_s: float,
) -> None:
    with session_scope() as session:
        letter = record_failure(session, consumer, item_id, _describe(exc), utcnow(), max_attempts)
        attempts, state = letter.attempts, letter.state
    log.warning(
        "quarantine.item_failed",
        consumer=consumer.task,
        item_id=str(item_id),
        attempts=attempts,
        state=state,
        error=_describe(exc)[:300],
    )
    if state == RETRYING:
        requeue(item_id, retry_delay(attempts, retry_base_s))


# --- Reading and replaying (the API) -------------------------------------------------------------


def get(session: Session, organization_id: uuid.UUID, dead_letter_id: uuid.UUID) -> DeadLetter:
    letter = session.get(DeadLetter, dead_letter_id)
    if letter is None or letter.organization_id != organization_id:
        raise NotFound(f"Dead letter {dead_letter_id} not found")
    return letter


def listing(organization_id: uuid.UUID, *, state: str | None = None, consumer: str | None = None) -> Select[DeadLetter]:
    stmt = select(DeadLetter).where(DeadLetter.organization_id == organization_id)
    if state is not None:
        stmt = stmt.where(DeadLetter.state == state)
    if consumer is not None:
        stmt = stmt.where(DeadLetter.consumer == consumer)
    return stmt


def replay(session: Session, letter: DeadLetter, now: datetime) -> DeadLetter:
    """Give a quarantined (or still retrying) item a fresh set of attempts; `due_replays` hands it back to
    its consumer."""
    if letter.state == RESOLVED:
        raise InvalidState("This item went through already; there is nothing to replay")
    letter.state = REPLAYING
    letter.attempts = 0
    letter.replayed_at = now
    session.flush()
    return letter


def due_replays(session: Session, limit: int = 500) -> list[tuple[str, uuid.UUID]]:
    """(consumer, item id) of the replayed items, now marked retrying: the caller queues each alone. A
    lost message leaves the item retrying; the consumer's own sweep (or another replay) brings it back."""
    rows = session.execute(
        update(_DEAD)
        .where(_DEAD.c.id.in_(select(_DEAD.c.id).where(_DEAD.c.state == REPLAYING).limit(limit)))
        .values(state=RETRYING)
        .returning(_DEAD.c.consumer, _DEAD.c.item_id)
    )
    return [(row.consumer, row.item_id) for row in rows]


def counts(session: Session) -> list[tuple[str, str, int]]:
    """(consumer, state, count) over every organization, for /metrics."""
    stmt = select(_DEAD.c.consumer, _DEAD.c.state, func.count()).group_by(_DEAD.c.consumer, _DEAD.c.state)
    return [(consumer, state, count) for consumer, state, count in session.execute(stmt)]
