"""The outbox: events exist exactly when their transaction commits, and the relay publishes each to
its subscribers, keeping it for the next sweep when the broker fails."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from shared.core import events
from shared.db.base import utcnow
from shared.db.models import OutboxEvent


@pytest.fixture
def subscription():
    events.subscribe("test.*", "tests.record_event")
    yield
    events._subscriptions.remove(("test.*", "tests.record_event"))


def _pending(session) -> list[OutboxEvent]:
    return session.scalars(select(OutboxEvent).where(OutboxEvent.published_at.is_(None))).all()


def test_event_of_a_rolled_back_transaction_never_exists(db_session, tenant):
    tx_db = db_session.info["tx_db"]
    with pytest.raises(RuntimeError), tx_db.session_scope() as session:
        events.emit(session, "test.created", {"n": 1}, organization_id=tenant.org_id)
        raise RuntimeError("the change failed")
    assert not [e for e in _pending(db_session) if e.event_type == "test.created"]


def test_relay_publishes_each_event_to_matching_subscribers_once(db_session, tenant, subscription, monkeypatch):
    # The relay, not a direct hand-off after commit, is what this test watches: no subscriber takes events
    # directly (the notifier, when the platform's worker app is loaded, takes every event type that way).
    monkeypatch.setattr(events, "_direct_tasks", set())
    first = events.emit(db_session, "test.created", {"n": 1}, organization_id=tenant.org_id)
    other = events.emit(db_session, "other.thing", {"n": 2}, organization_id=tenant.org_id)
    db_session.flush()
    published: list[tuple[str, str]] = []
    while events.relay_pending(
        db_session, lambda task, event_ids: published.extend((task, event_id) for event_id in event_ids)
    ):
        pass
    db_session.expire_all()
    ours = [(task, event_id) for task, event_id in published if event_id in (str(first.id), str(other.id))]
    assert ("tests.record_event", str(first.id)) in ours
    assert ("tests.record_event", str(other.id)) not in ours
    assert db_session.get(OutboxEvent, first.id).published_at is not None
    assert db_session.get(OutboxEvent, other.id).published_at is not None
    assert events.relay_pending(db_session, lambda *a: published.append(a)) == 0


def test_broker_failure_keeps_events_for_the_next_sweep(db_session, tenant, subscription):
    event = events.emit(db_session, "test.created", {"n": 1}, organization_id=tenant.org_id)
    db_session.commit()

    def broker_down(task, event_ids):
        raise ConnectionError("redis is restarting")

    tx_db = db_session.info["tx_db"]
    with pytest.raises(ConnectionError), tx_db.session_scope() as session:
        events.relay_pending(session, broker_down)
    db_session.expire_all()
    assert db_session.get(OutboxEvent, event.id).published_at is None

    published = []
    with tx_db.session_scope() as session:
        events.relay_pending(session, lambda task, event_ids: published.extend(event_ids))
    assert str(event.id) in published


def test_pruning_deletes_events_published_before_the_cutoff_in_batches_and_keeps_unpublished_ones(db_session, tenant):
    now = utcnow()

    def emit(published_days_ago: float | None) -> OutboxEvent:
        row = events.emit(db_session, "test.created", {}, organization_id=tenant.org_id)
        row.created_at = now - timedelta(days=10)
        row.published_at = None if published_days_ago is None else now - timedelta(days=published_days_ago)
        return row

    old = [emit(8), emit(9), emit(10)]
    recent, unpublished = emit(6), emit(None)
    db_session.flush()
    ids = [row.id for row in [*old, recent, unpublished]]
    cutoff = now - timedelta(days=7)
    assert events.prune_published(db_session, cutoff, limit=2) == 2
    assert events.prune_published(db_session, cutoff, limit=2) == 1
    assert events.prune_published(db_session, cutoff, limit=2) == 0
    left = set(db_session.scalars(select(OutboxEvent.id).where(OutboxEvent.id.in_(ids))))
    assert left == {recent.id, unpublished.id}
