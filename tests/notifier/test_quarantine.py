"""Poison items: refused at intake when the API can tell, else quarantined by the consumer while the rest
of their batch (and every later batch) is delivered — through a real worker, Redis, PostgreSQL and an
HTTP receiver; listed, counted and replayed through the API."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import httpx
import pytest
from sqlalchemy import delete, func, select, update

import services.notifier.tasks  # noqa: F401  (installs the outbox nudge in this process)
from shared.core import events
from shared.core.crypto import SecretBox
from shared.db.models import DeadLetter, Delivery, NotificationRule, OutboxEvent
from tests.conftest import ROOT, free_port, stop_process, wait_for
from tests.notifier.builders import make_channel, make_rule


def test_an_alert_with_an_oversized_label_is_refused_at_intake_naming_the_label(client, tenant):
    alerts = [{"labels": {"alertname": "Big", "blob": "x" * 8000}}]
    answer = client.post("/api/v2/alerts", json=alerts, headers=tenant.headers)
    assert answer.status_code == 422, answer.text
    assert answer.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    assert "blob" in answer.json()["message"] and "2048" in answer.json()["message"]


def test_a_custom_event_whose_labels_are_not_a_mapping_is_refused_at_intake(client, tenant):
    answer = client.post(
        "/api/v1/events", json={"event_type": "custom.poison", "payload": {"labels": ["x"]}}, headers=tenant.headers
    )
    assert answer.status_code == 422 and "labels" in answer.json()["message"]


def _emit(session, org_id, count: int, start: int) -> list[str]:
    ids = []
    for index in range(start, start + count):
        labels = {"alertname": "Load", "n": str(index), "blob": "y" * 2000, "blob2": "z" * 2000}
        payload = {"status": "firing", "labels": labels}
        ids.append(str(events.emit(session, "custom.load", payload, organization_id=org_id).id))
    return ids


@pytest.fixture
def rules_removed_after(db, live_tenant):
    """The test's committed rules (with their groups) are deleted at its end: other tests flush at future
    times and count notifications of any rule."""
    yield
    with db.session_scope() as session:
        session.execute(delete(NotificationRule).where(NotificationRule.organization_id == live_tenant.org_id))


@pytest.mark.usefixtures("celery_worker", "rules_removed_after")
def test_a_poison_event_is_quarantined_while_a_hundred_others_in_its_and_later_batches_are_delivered(
    db, settings, live_server, live_tenant, receiver
):
    box = SecretBox(settings.encryption_keys)
    with db.session_scope() as session:
        channel, _ = make_channel(session, box, live_tenant, url=receiver.url())
        # One group per alert, keyed by every label: a key of 4,000+ bytes, over what a btree row may hold.
        make_rule(session, live_tenant, [channel], group_by=["..."], group_wait_s=0, event_types=["custom.*"])
    with db.session_scope() as session:
        first = _emit(session, live_tenant.org_id, 50, 0)
        # Written straight into the outbox (as a producer that bypasses the API's checks could): its
        # labels are no mapping, so the notifier's handler fails on it.
        poison = events.emit(
            session,
            "custom.load",
            {"status": "firing", "labels": ["not", "a", "mapping"]},
            organization_id=live_tenant.org_id,
        )
        first += _emit(session, live_tenant.org_id, 50, 50)
        poison_id = poison.id
    with db.session_scope() as session:
        later = _emit(session, live_tenant.org_id, 100, 100)
    assert len(first) == 100 and len(later) == 100

    def delivered() -> set[str]:
        return {alert["labels"]["n"] for request in receiver.requests for alert in json.loads(request.body)["alerts"]}

    assert wait_for(lambda: len(delivered()) == 200, timeout=90, what="200 alerts delivered")

    def letter() -> DeadLetter | None:
        with db.session_scope() as session:
            return session.scalar(select(DeadLetter).where(DeadLetter.item_id == poison_id))

    quarantined = wait_for(
        lambda: (row := letter()) is not None and row.state == "quarantined" and row,
        timeout=60,
        what="the poison event quarantined",
    )
    assert quarantined.consumer == "notifier.handle_events" and quarantined.attempts == settings.quarantine_max_attempts
    assert quarantined.organization_id == live_tenant.org_id and "AttributeError" in quarantined.error

    with httpx.Client(base_url=live_server.url, headers=live_tenant.headers, timeout=10) as api:
        listing = api.get(f"/api/v1/orgs/{live_tenant.org_id}/dead-letters", params={"state": "quarantined"})
        assert listing.status_code == 200, listing.text
        assert [item["item_id"] for item in listing.json()["items"]] == [str(poison_id)]
        assert listing.json()["next_page_token"] is None
        metrics = api.get("/metrics").text
        assert 'tessera_dead_letters{consumer="notifier.handle_events",state="quarantined"}' in metrics

        # The producer is fixed (here: the event's payload), then the item is replayed and goes through.
        with db.session_scope() as session:
            session.execute(
                update(OutboxEvent)
                .where(OutboxEvent.id == poison_id)
                .values(payload={"status": "firing", "labels": {"alertname": "Load", "n": "fixed"}})
            )
        replayed = api.post(f"/api/v1/orgs/{live_tenant.org_id}/dead-letters/{quarantined.id}/replay")
        assert replayed.status_code == 200 and replayed.json()["state"] == "replaying", replayed.text
    wait_for(lambda: "fixed" in delivered(), timeout=30, what="the replayed event delivered")
    assert wait_for(lambda: letter().state == "resolved", timeout=10, what="the dead letter resolved")
    assert len(delivered()) == 201
    with db.session_scope() as session:
        states = session.execute(
            select(Delivery.state, func.count())
            .where(Delivery.organization_id == live_tenant.org_id)
            .group_by(Delivery.state)
        ).all()
    assert dict(states) == {"delivered": 201}


@pytest.fixture
def server_without_broker(live_tenant):
    """The notifier served in its own process, its broker a Redis port nothing listens on."""
    port = free_port()
    env = {**os.environ, "TESSERA_BROKER_URL": f"redis://127.0.0.1:{free_port()}/0"}
    command = [sys.executable, "-m", "tessera", "serve", "notifier", "--port", str(port)]
    proc = subprocess.Popen(command, cwd=ROOT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return httpx.get(f"{url}/healthz", timeout=5).status_code in (200, 503)
        except httpx.TransportError:
            return False

    try:
        wait_for(up, timeout=60, what="the notifier serving")
        yield url
    finally:
        stop_process(proc)


def test_with_the_broker_down_alert_intake_answers_within_100_ms_and_healthz_says_so(
    server_without_broker, live_tenant, db
):
    alert = [{"labels": {"alertname": "BrokerDown", "severity": "critical"}}]
    with httpx.Client(base_url=server_without_broker, headers=live_tenant.headers, timeout=10) as api:
        api.post("/api/v2/alerts", json=alert)  # the first request warms the process's caches
        timings = []
        for _ in range(10):
            started = time.perf_counter()
            answer = api.post("/api/v2/alerts", json=alert)
            timings.append(time.perf_counter() - started)
            assert answer.status_code == 200, answer.text
        health = api.get("/healthz")
    # Waiting on the broker cost ~6 s a request; a scheduler hiccup on a busy machine may cost one request a
    # few tens of milliseconds more, which is no wait on the broker.
    assert sorted(timings)[-2] < 0.1 and max(timings) < 1.0, timings
    assert health.status_code == 503 and health.json()["checks"]["broker"].startswith("error")
    with db.session_scope() as session:
        waiting = session.scalar(
            select(func.count()).where(
                OutboxEvent.organization_id == live_tenant.org_id, OutboxEvent.published_at.is_(None)
            )
        )
    # The outbox holds them for the relay once the broker is back.
    assert waiting == 11
