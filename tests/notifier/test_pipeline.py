"""The pipeline in one process on the real database, with the clock passed in: events into groups,
Alertmanager's timers and dedup, silences, mute windows, send_resolved, one-shot events, and the
delivery state machine (retries scheduled in the database, Retry-After, 410, dead letters, email)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
from sqlalchemy import select

from services.notifier.domain import attempt_log, dispatch, intake, periodic
from services.notifier.domain.config import muting as config_muting
from services.notifier.domain.pipeline import flush_due_groups_by_id, handle_events
from services.notifier.schemas import PostableAlert
from shared.core import events
from shared.core.crypto import SecretBox
from shared.db.base import utcnow
from shared.db.migrate import upgrade
from shared.db.models import (
    Delivery,
    DeliveryAttempt,
    Notification,
    NotificationChannel,
    NotificationGroup,
    NotificationSilence,
    NotifierPeriodicRun,
    NotifierProcessedEvent,
    OutboxEvent,
)
from shared.db.session import Database
from tests import factories
from tests.notifier.builders import make_channel, make_rule, owner_access
from tests.notifier.conftest import Receiver, Reply, SmtpServer

LINK = "https://tessera.test"


class Pipeline:
    """Drives handler, flush and dispatch in the test's transaction, at times the test chooses."""

    def __init__(self, session, settings, tenant):
        self.session, self.settings, self.tenant = session, settings, tenant
        self.box = SecretBox(settings.encryption_keys)
        self.retry = attempt_log.RetryPolicy.from_settings(settings)

    def emit(self, event_type: str, at: datetime, **payload) -> list[uuid.UUID]:
        row = events.emit(
            self.session, event_type, payload, organization_id=self.tenant.org_id, project_id=self.tenant.project_id
        )
        row.created_at = at
        self.session.flush()
        return handle_events(self.session, [row.id], self.box, at, LINK).deliveries

    def flush(self, at: datetime) -> list[uuid.UUID]:
        """The periodic flush at `at`, over this test's groups only (other tests may leave due groups)."""
        own = select(NotificationGroup.id).where(NotificationGroup.organization_id == self.tenant.org_id)
        return flush_due_groups_by_id(self.session, self.session.scalars(own).all(), self.box, at, LINK).pending

    def attempt(self, delivery_id: uuid.UUID, at: datetime) -> Delivery | None:
        claimed = dispatch.claim(self.session, [delivery_id], self.box, self.retry, at)
        if not claimed:
            return None
        result = dispatch.send(claimed[0], self.settings, at)
        attempt_log.record(self.session, [(claimed[0], result)], started_at=at, retry=self.retry, now=at)
        return self.session.get(Delivery, delivery_id, populate_existing=True)

    def deliver(self, delivery_ids, at: datetime) -> list[Delivery | None]:
        return [self.attempt(delivery_id, at) for delivery_id in delivery_ids]


@pytest.fixture(scope="module")
def embedded_database(tmp_path_factory) -> Database:
    """The embedded default's database (a SQLite file), migrated once for the module."""
    url = f"sqlite:///{tmp_path_factory.mktemp('embedded') / 'tessera.db'}"
    upgrade(url)
    return Database(url)


@pytest.fixture
def pipeline(request, settings) -> Iterator[Pipeline]:
    """On PostgreSQL in the test's rolled-back transaction; tests marked with `ON_BOTH` run again on
    the embedded SQLite default (each with its own tenant), where the set-based SQL must hold too."""
    if getattr(request, "param", "postgresql") == "postgresql":
        yield Pipeline(request.getfixturevalue("db_session"), settings, request.getfixturevalue("tenant"))
        return
    session = request.getfixturevalue("embedded_database").sessionmaker()
    try:
        yield Pipeline(session, settings, factories.make_tenant(session, jwt_secret=settings.jwt_secret))
    finally:
        session.close()


ON_BOTH = pytest.mark.parametrize("pipeline", ["postgresql", "sqlite"], indirect=True)


@pytest.fixture
def now() -> datetime:
    # Real time: receivers verify webhook timestamps against their own clock.
    return utcnow()


def _firing(index: int, **labels) -> dict:
    return {"alertname": "DriftDetected", "severity": "high", "fingerprint": f"fp-{index}", "labels": labels}


def _bodies(receiver: Receiver) -> list[dict]:
    return [json.loads(request.body) for request in receiver.requests]


@ON_BOTH
def test_twenty_alerts_within_group_wait_make_one_grouped_message(pipeline, receiver, now):
    channel, _ = make_channel(pipeline.session, pipeline.box, pipeline.tenant, url=receiver.url())
    make_rule(pipeline.session, pipeline.tenant, [channel], group_by=["model"], group_wait_s=30)
    for index in range(20):
        assert pipeline.emit("alert.firing", now + timedelta(seconds=index), **_firing(index, model="churn")) == []
    assert pipeline.flush(now + timedelta(seconds=29)) == []
    delivery_ids = pipeline.flush(now + timedelta(seconds=30))
    assert len(delivery_ids) == 1
    [delivered] = pipeline.deliver(delivery_ids, now + timedelta(seconds=30))
    assert delivered.state == "delivered"
    [body] = _bodies(receiver)
    assert len(body["alerts"]) == 20 and body["group_labels"] == {"model": "churn"} and body["status"] == "firing"
    assert receiver.requests[0].headers["webhook-id"] == body["notification_id"] == str(delivered.notification_id)


def test_a_repeat_only_after_repeat_interval(pipeline, receiver, now):
    channel, _ = make_channel(pipeline.session, pipeline.box, pipeline.tenant, url=receiver.url())
    make_rule(pipeline.session, pipeline.tenant, [channel], group_wait_s=0, group_interval_s=60, repeat_interval_s=300)
    first = pipeline.emit("alert.firing", now, **_firing(1))
    assert len(first) == 1, "group_wait 0: flushed by the handler itself"
    sent_at = [0]
    for tick in range(1, 8):
        if pipeline.flush(now + timedelta(seconds=60 * tick)):
            sent_at.append(60 * tick)
    # Repeats are noticed on group_interval ticks: the first tick past 300 s after the last message.
    assert sent_at == [0, 360]
    # The same alert firing again is no news.
    assert pipeline.emit("alert.firing", now + timedelta(seconds=370), **_firing(1)) == []


def test_a_silenced_alert_sends_nothing(pipeline, receiver, now):
    channel, _ = make_channel(pipeline.session, pipeline.box, pipeline.tenant, url=receiver.url())
    make_rule(pipeline.session, pipeline.tenant, [channel], group_by=["model"], group_wait_s=0)
    pipeline.session.add(
        NotificationSilence(
            organization_id=pipeline.tenant.org_id,
            matchers=[{"name": "model", "type": "=", "value": "churn"}],
            starts_at=now - timedelta(minutes=1),
            ends_at=now + timedelta(hours=1),
            created_by="oncall@example.com",
            comment="retraining",
        )
    )
    assert pipeline.emit("alert.firing", now, **_firing(1, model="churn")) == []
    assert pipeline.flush(now + timedelta(minutes=10)) == []
    other = pipeline.emit("alert.firing", now, **_firing(2, model="fraud"))
    assert len(other) == 1


def test_resolved_messages_follow_send_resolved_per_channel(pipeline, receiver, smtp_server: SmtpServer, now):
    webhook, _ = make_channel(pipeline.session, pipeline.box, pipeline.tenant, url=receiver.url())
    email, _ = make_channel(
        pipeline.session,
        pipeline.box,
        pipeline.tenant,
        type="email",
        smtp_host="127.0.0.1",
        smtp_port=smtp_server.port,
        security="none",
        sender="tessera@alerts.example",
        recipients=["oncall@example.com"],
    )
    make_rule(pipeline.session, pipeline.tenant, [webhook, email], group_wait_s=0, group_interval_s=10)
    firing = pipeline.emit("alert.firing", now, **_firing(1))
    assert len(firing) == 2
    pipeline.deliver(firing, now)
    resolved_at = now + timedelta(seconds=5)
    assert pipeline.emit("alert.resolved", resolved_at, fingerprint="fp-1") == []
    resolved = pipeline.flush(now + timedelta(seconds=10))
    pipeline.deliver(resolved, now + timedelta(seconds=10))
    # Webhooks hear about the resolution (send_resolved defaults on); email does not (off).
    assert [body["status"] for body in _bodies(receiver)] == ["firing", "resolved"]
    assert len(smtp_server.sink.messages) == 1
    # The group is done: nothing more, ever, for it.
    assert pipeline.flush(now + timedelta(hours=5)) == []


@ON_BOTH
def test_one_shot_events_are_notified_once_without_a_resolved_echo(pipeline, receiver, now):
    channel, _ = make_channel(pipeline.session, pipeline.box, pipeline.tenant, url=receiver.url())
    make_rule(pipeline.session, pipeline.tenant, [channel], event_types=["deployment.*"], group_wait_s=0)
    sent = pipeline.emit("deployment.failed", now, deployment_name="churn-prod", summary="OOMKilled")
    pipeline.deliver(sent, now)
    [body] = _bodies(receiver)
    assert body["alerts"][0]["labels"]["severity"] == "critical" and body["alerts"][0]["labels"]["deployment"]
    assert pipeline.flush(now + timedelta(hours=5)) == []
    assert len(pipeline.emit("deployment.failed", now + timedelta(hours=5), deployment_name="churn-prod")) == 1


def test_a_mute_window_holds_messages_until_it_ends(client, pipeline, receiver, now):
    channel, _ = make_channel(pipeline.session, pipeline.box, pipeline.tenant, url=receiver.url())
    minute = now.hour * 60 + now.minute
    window = client.post(
        "/api/v1/silences/mute-windows",
        json={
            "name": "now",
            "time_intervals": [
                {
                    "times": [{"start_time": f"{minute // 60:02d}:{minute % 60:02d}", "end_time": "24:00"}],
                    "location": "UTC",
                }
            ],
        },
        headers=pipeline.tenant.headers,
    ).json()
    make_rule(
        pipeline.session,
        pipeline.tenant,
        [channel],
        group_wait_s=0,
        group_interval_s=60,
        mute_window_ids=[window["id"]],
    )
    assert pipeline.emit("alert.firing", now, **_firing(1)) == []
    next_day = now.replace(hour=0, minute=0) + timedelta(days=1)
    assert len(pipeline.flush(next_day)) == 1


def test_redelivered_events_are_handled_once(pipeline, receiver, now):
    channel, _ = make_channel(pipeline.session, pipeline.box, pipeline.tenant, url=receiver.url())
    make_rule(pipeline.session, pipeline.tenant, [channel], group_wait_s=0)
    row = events.emit(pipeline.session, "alert.firing", _firing(1), organization_id=pipeline.tenant.org_id)
    pipeline.session.flush()
    assert len(handle_events(pipeline.session, [row.id], pipeline.box, now, LINK).deliveries) == 1
    assert handle_events(pipeline.session, [row.id], pipeline.box, now, LINK).deliveries == []
    assert pipeline.session.scalar(select(NotifierProcessedEvent).where(NotifierProcessedEvent.event_id == row.id))


def test_a_burst_is_handled_in_one_batch_and_each_event_once(pipeline, receiver, now):
    channel, _ = make_channel(pipeline.session, pipeline.box, pipeline.tenant, url=receiver.url())
    make_rule(pipeline.session, pipeline.tenant, [channel], group_wait_s=0, group_by=["..."])
    burst = []
    for index in range(6):
        row = events.emit(
            pipeline.session, "alert.firing", _firing(index, n=str(index)), organization_id=pipeline.tenant.org_id
        )
        burst.append(row.id)
    pipeline.session.flush()
    assert len(handle_events(pipeline.session, burst[:4], pipeline.box, now, LINK).deliveries) == 4
    # A redelivered message finds nothing left to do; an overlapping one only its new events.
    assert handle_events(pipeline.session, burst[:4], pipeline.box, now, LINK).deliveries == []
    assert len(handle_events(pipeline.session, burst[2:], pipeline.box, now, LINK).deliveries) == 2
    own = select(Notification).where(Notification.organization_id == pipeline.tenant.org_id)
    assert len(pipeline.session.scalars(own).all()) == 6


@ON_BOTH
def test_an_alert_firing_then_resolved_in_one_batch_ends_resolved(pipeline, receiver, now):
    channel, _ = make_channel(pipeline.session, pipeline.box, pipeline.tenant, url=receiver.url())
    make_rule(pipeline.session, pipeline.tenant, [channel], group_wait_s=30, group_by=["model"])
    batch = [
        events.emit(pipeline.session, event_type, payload, organization_id=pipeline.tenant.org_id).id
        for event_type, payload in [
            ("alert.firing", _firing(1, model="churn", n="1")),
            ("alert.firing", _firing(2, model="churn", n="2")),
            ("alert.resolved", _firing(1, model="churn", n="1")),
        ]
    ]
    pipeline.session.flush()
    assert handle_events(pipeline.session, batch, pipeline.box, now, LINK).deliveries == []
    [delivery_id] = pipeline.flush(now + timedelta(seconds=30))
    pipeline.deliver([delivery_id], now + timedelta(seconds=30))
    [body] = _bodies(receiver)
    assert {alert["labels"]["n"]: alert["status"] for alert in body["alerts"]} == {"1": "resolved", "2": "firing"}


def test_published_events_lost_with_the_broker_are_found_again_from_the_sweeps_checkpoint(pipeline, now):
    session, minute = pipeline.session, timedelta(minutes=1)
    # A task row of its own: the sweep of a real beat elsewhere in the session keeps its checkpoint.
    task = f"sweep-{uuid.uuid4()}"
    periodic.claim_run(session, task, 1, now)

    def publish(at: datetime) -> uuid.UUID:
        row = events.emit(session, "drift.detected", {}, organization_id=pipeline.tenant.org_id)
        row.published_at = at
        session.flush()
        return row.id

    lost = publish(now - 5 * minute)
    assert intake.sweep_unhandled_events(session, task, now, minute) == [lost]
    # Still unhandled: the checkpoint waits at it, and the next sweep finds it again.
    assert periodic.checkpoint(session, task) == now - 5 * minute
    assert intake.sweep_unhandled_events(session, task, now, minute) == [lost]
    handle_events(session, [lost], pipeline.box, now, LINK)
    assert intake.sweep_unhandled_events(session, task, now, minute) == []
    # Nothing left behind: later sweeps start two requeue periods back, not a day back.
    assert periodic.checkpoint(session, task) == now - 2 * minute
    forgotten = publish(now - 10 * minute)
    # A relay that committed late (its published_at is up to one period old) is still caught.
    late = publish(now - 90 * timedelta(seconds=1))
    assert intake.sweep_unhandled_events(session, task, now, minute) == [late]
    # Without a checkpoint, the whole day is searched.
    assert [row.id for row in intake.unhandled_events(session, now, minute)] == [forgotten, late]


def test_a_firing_critical_alert_inhibits_the_warnings_of_its_cluster_until_it_resolves(pipeline, receiver, now):
    channel, _ = make_channel(pipeline.session, pipeline.box, pipeline.tenant, url=receiver.url())
    make_rule(
        pipeline.session,
        pipeline.tenant,
        [channel],
        group_by=["alertname", "cluster"],
        group_wait_s=0,
        group_interval_s=60,
    )
    config_muting.create_inhibit_rule(
        pipeline.session,
        owner_access(pipeline.session, pipeline.tenant),
        organization_id=pipeline.tenant.org_id,
        name="critical mutes warnings",
        source_matchers=["severity=critical"],
        target_matchers=["severity=warning"],
        equal=["cluster"],
    )

    def alert(name: str, severity: str, cluster: str) -> dict:
        return {
            "alertname": name,
            "severity": severity,
            "fingerprint": f"{name}-{cluster}",
            "labels": {"cluster": cluster},
        }

    down = pipeline.emit("alert.firing", now, **alert("ClusterDown", "critical", "eu"))
    assert pipeline.emit("alert.firing", now, **alert("HighLatency", "warning", "eu")) == [], "inhibited"
    other_cluster = pipeline.emit("alert.firing", now, **alert("HighLatency", "warning", "us"))
    pipeline.deliver(down + other_cluster, now)
    assert sorted((b["alerts"][0]["labels"]["alertname"], b["group_labels"]["cluster"]) for b in _bodies(receiver)) == [
        ("ClusterDown", "eu"),
        ("HighLatency", "us"),
    ]
    receiver.requests.clear()
    pipeline.emit("alert.resolved", now + timedelta(seconds=30), **alert("ClusterDown", "critical", "eu"))
    # The next tick: the cluster is back, so its warning is news now.
    pipeline.deliver(pipeline.flush(now + timedelta(seconds=60)), now + timedelta(seconds=60))
    sent = {(b["alerts"][0]["labels"]["alertname"], b["status"]) for b in _bodies(receiver)}
    assert sent == {("ClusterDown", "resolved"), ("HighLatency", "firing")}


def test_alerts_posted_as_prometheus_posts_them_fire_and_resolve_once_their_end_passes(pipeline, receiver, now):
    channel, _ = make_channel(pipeline.session, pipeline.box, pipeline.tenant, url=receiver.url())
    make_rule(
        pipeline.session,
        pipeline.tenant,
        [channel],
        event_types=["custom.alertmanager"],
        group_wait_s=0,
        group_interval_s=60,
        min_severity="critical",
    )
    minute = timedelta(minutes=1)

    def post(at: datetime, ends_in: timedelta, severity: str = "critical") -> list[uuid.UUID]:
        alert = PostableAlert.model_validate(
            {
                "labels": {"alertname": "HighLatency", "job": "api", "severity": severity},
                "annotations": {"summary": "p99 above 1 s"},
                "startsAt": now.isoformat(),
                "endsAt": (at + ends_in).isoformat(),
                "generatorURL": "http://prometheus:9090/graph?g0.expr=latency",
            }
        )
        posted = intake.post_alertmanager_alerts(
            pipeline.session, owner_access(pipeline.session, pipeline.tenant), [alert], at, 5 * minute
        )
        return handle_events(pipeline.session, [row.id for row in posted], pipeline.box, at, LINK).deliveries

    pipeline.deliver(post(now, 4 * minute), now)
    # Prometheus sends it again before its end: still firing, and its end moves on.
    assert post(now + 3 * minute, 4 * minute) == []
    assert all(pipeline.flush(now + tick * minute) == [] for tick in (1, 2, 3, 4, 5, 6))
    assert post(now + 6 * minute, 4 * minute, severity="warning") == [], "below the rule's min_severity"
    # Not posted again: resolved at the first tick past its end (3 + 4 minutes).
    pipeline.deliver(pipeline.flush(now + 7 * minute), now + 7 * minute)
    firing, resolved = _bodies(receiver)
    assert firing["status"] == "firing" and resolved["status"] == "resolved"
    [alert] = firing["alerts"]
    assert alert["labels"]["alertname"] == "HighLatency" and alert["labels"]["severity"] == "critical"
    assert alert["annotations"]["summary"] == "p99 above 1 s" and alert["url"].startswith("http://prometheus:9090/")
    assert resolved["alerts"][0]["fingerprint"] == alert["fingerprint"]


# --- the delivery state machine ------------------------------------------------------------------


def _one_delivery(pipeline, receiver, now) -> uuid.UUID:
    channel, _ = make_channel(pipeline.session, pipeline.box, pipeline.tenant, url=receiver.url())
    make_rule(pipeline.session, pipeline.tenant, [channel], group_wait_s=0)
    [delivery_id] = pipeline.emit("alert.firing", now, **_firing(1))
    return delivery_id


@ON_BOTH
def test_500_three_times_then_200_delivers_once_with_one_webhook_id(pipeline, receiver, now):
    receiver.script(Reply(500), Reply(500), Reply(500))
    delivery_id = _one_delivery(pipeline, receiver, now)
    at = now
    for _ in range(4):
        row = pipeline.attempt(delivery_id, at)
        if row.state == "delivered":
            break
        assert row.state == "pending" and row.queued_at is None and row.next_attempt_at > at
        # Not before it is due; then the sweeper hands it out again.
        assert pipeline.attempt(delivery_id, at) is None
        at = row.next_attempt_at
        assert attempt_log.due_for_dispatch(pipeline.session, pipeline.retry, at) == [delivery_id]
    assert row.state == "delivered" and row.total_attempts == 4
    assert len({request.headers["webhook-id"] for request in receiver.requests}) == 1
    assert len({request.body for request in receiver.requests}) == 1
    log = pipeline.session.scalars(select(DeliveryAttempt).where(DeliveryAttempt.delivery_id == delivery_id)).all()
    assert [(a.attempt, a.status_code) for a in sorted(log, key=lambda a: a.attempt)] == [
        (1, 500),
        (2, 500),
        (3, 500),
        (4, 200),
    ]
    # Delivered is final: no claim, no sweep.
    assert pipeline.attempt(delivery_id, at + timedelta(hours=1)) is None
    assert delivery_id not in attempt_log.due_for_dispatch(pipeline.session, pipeline.retry, at + timedelta(hours=1))


def test_retry_after_is_honoured(pipeline, receiver, now):
    receiver.script(Reply(429, headers={"retry-after": "120"}))
    row = pipeline.attempt(_one_delivery(pipeline, receiver, now), now)
    assert row.state == "pending" and row.next_attempt_at >= now + timedelta(seconds=120)


def test_410_disables_the_channel(pipeline, receiver, now):
    receiver.script(Reply(410, body=b"channel_is_archived"))
    row = pipeline.attempt(_one_delivery(pipeline, receiver, now), now)
    assert row.state == "failed"
    channel = pipeline.session.get(NotificationChannel, row.channel_id)
    assert not channel.enabled and "channel_is_archived" in channel.disabled_reason


def test_attempts_are_bounded_then_dead_lettered(pipeline, receiver, now):
    receiver.script(*[Reply(503)] * 10)
    delivery_id = _one_delivery(pipeline, receiver, now)
    at = now
    for _ in range(pipeline.retry.max_attempts):
        row = pipeline.attempt(delivery_id, at)
        at = row.next_attempt_at or at
    assert row.state == "dead" and row.attempts == pipeline.retry.max_attempts
    assert pipeline.attempt(delivery_id, at + timedelta(hours=1)) is None


def test_a_dead_workers_delivery_is_retried_after_its_lease(pipeline, receiver, now):
    delivery_id = _one_delivery(pipeline, receiver, now)
    assert dispatch.claim(pipeline.session, [delivery_id], pipeline.box, pipeline.retry, now)
    # The worker died before recording anything: in flight, its lease still running.
    assert pipeline.attempt(delivery_id, now + timedelta(seconds=1)) is None
    after_lease = now + pipeline.retry.lease + timedelta(seconds=1)
    assert attempt_log.due_for_dispatch(pipeline.session, pipeline.retry, after_lease) == [delivery_id]
    assert pipeline.attempt(delivery_id, after_lease).state == "delivered"


def test_email_keeps_its_message_id_across_retries_4xx_retried_5xx_permanent(pipeline, smtp_server, now):
    channel, _ = make_channel(
        pipeline.session,
        pipeline.box,
        pipeline.tenant,
        type="email",
        smtp_host="127.0.0.1",
        smtp_port=smtp_server.port,
        security="none",
        sender="tessera@alerts.example",
        recipients=["oncall@example.com", "ml@example.com"],
    )
    make_rule(pipeline.session, pipeline.tenant, [channel], group_wait_s=0, group_by=["..."])
    [first] = pipeline.emit("alert.firing", now, **_firing(1, model="churn"))
    smtp_server.sink.data_reply = "451 4.3.0 try again later"
    row = pipeline.attempt(first, now)
    assert row.state == "pending" and row.last_status_code == 451
    smtp_server.sink.data_reply = None
    assert pipeline.attempt(first, row.next_attempt_at).state == "delivered"
    [(envelope, message)] = smtp_server.sink.messages
    notification = pipeline.session.get(Notification, row.notification_id)
    expected = f"<notification.{notification.id}@alerts.example>"
    assert [offered["Message-ID"] for offered in smtp_server.sink.offered] == [expected, expected]
    assert message.is_multipart() and sorted(envelope.rcpt_tos) == ["ml@example.com", "oncall@example.com"]

    [second] = pipeline.emit("alert.firing", now, **_firing(2, model="fraud"))
    smtp_server.sink.data_reply = "554 5.7.1 rejected"
    assert pipeline.attempt(second, now).state == "failed"


def test_a_periodic_task_runs_once_per_interval_however_often_it_is_asked(db_session, now):
    task = f"test-{uuid.uuid4().hex[:8]}"
    asks = [now + timedelta(seconds=offset) for offset in (0, 0.3, 0.9, 1.0, 1.8, 2.0, 2.05)]
    assert [periodic.claim_run(db_session, task, 1.0, at) for at in asks] == [
        True,
        False,
        True,
        False,
        True,
        False,
        False,
    ]
    row = db_session.get(NotifierPeriodicRun, task)
    assert (row.runs, row.requests) == (3, 7)


def _disabled_by_410(pipeline, receiver, now, **rule_fields) -> NotificationChannel:
    channel, _ = make_channel(pipeline.session, pipeline.box, pipeline.tenant, url=receiver.url())
    make_rule(pipeline.session, pipeline.tenant, [channel], group_by=["model"], group_wait_s=0, **rule_fields)
    receiver.script(Reply(410, body=b"channel_is_archived"))
    [first] = pipeline.emit("alert.firing", now, **_firing(1, model="churn"))
    assert pipeline.attempt(first, now).state == "failed" and not channel.enabled
    return channel


def _dropped_after_disable(pipeline, now) -> Delivery:
    # A new alert in another group of the rule, for the disabled channel.
    assert pipeline.emit("alert.firing", now, **_firing(2, model="fraud")) == []
    [dropped] = pipeline.session.scalars(select(Delivery).where(Delivery.state == "dropped")).all()
    return dropped


def test_a_notification_for_a_disabled_channel_is_dropped_with_the_reason_and_counted(pipeline, receiver, now, client):
    _disabled_by_410(pipeline, receiver, now)
    dropped = _dropped_after_disable(pipeline, now)
    assert dropped.last_error.startswith("channel disabled: ") and "channel_is_archived" in dropped.last_error
    assert "tessera_notifier_deliveries_dropped 1.0" in client.get("/metrics").text


def test_a_dropped_notification_is_delivered_when_its_channel_is_re_enabled_within_the_repeat_interval(
    pipeline, receiver, now
):
    channel = _disabled_by_410(pipeline, receiver, now, repeat_interval_s=3600)
    dropped = _dropped_after_disable(pipeline, now)
    channel.enabled, channel.disabled_reason = True, None
    pipeline.session.flush()
    later = now + timedelta(minutes=59)
    assert attempt_log.due_for_dispatch(pipeline.session, pipeline.retry, later) == [dropped.id]
    assert pipeline.attempt(dropped.id, later).state == "delivered"
    assert _bodies(receiver)[-1]["alerts"][0]["labels"]["model"] == "fraud"


def test_a_dropped_notification_past_the_repeat_interval_stays_dropped(pipeline, receiver, now):
    channel = _disabled_by_410(pipeline, receiver, now, repeat_interval_s=3600)
    dropped = _dropped_after_disable(pipeline, now)
    channel.enabled = True
    pipeline.session.flush()
    assert attempt_log.due_for_dispatch(pipeline.session, pipeline.retry, now + timedelta(minutes=61)) == []
    assert pipeline.session.get(Delivery, dropped.id, populate_existing=True).state == "dropped"


@ON_BOTH
def test_a_change_to_a_rule_a_channel_or_a_silence_is_seen_by_the_next_batch(pipeline, receiver, now):
    """The configuration is cached per process; every change (update, soft delete, a new silence) is
    seen by the next event, however soon after it comes."""
    channel, _ = make_channel(pipeline.session, pipeline.box, pipeline.tenant, url=receiver.url())
    rule = make_rule(pipeline.session, pipeline.tenant, [channel], group_wait_s=0, group_by=["..."])
    assert len(pipeline.emit("alert.firing", now, **_firing(1))) == 1
    rule.event_types = ["deployment.*"]
    pipeline.session.flush()
    assert pipeline.emit("alert.firing", now, **_firing(2)) == [], "the rule no longer matches"
    rule.event_types = []
    channel.enabled = False
    pipeline.session.flush()
    assert pipeline.emit("alert.firing", now, **_firing(3)) == [], "to a disabled channel: dropped, not sent"
    channel.enabled = True
    pipeline.session.add(
        NotificationSilence(
            organization_id=pipeline.tenant.org_id,
            matchers=[{"name": "fp", "value": "4", "type": "="}],
            starts_at=now - timedelta(minutes=1),
            ends_at=now + timedelta(hours=1),
            created_by="ops@example.com",
            comment="maintenance",
        )
    )
    pipeline.session.flush()
    assert pipeline.emit("alert.firing", now, **_firing(4, fp="4")) == [], "silenced"
    assert len(pipeline.emit("alert.firing", now, **_firing(5, fp="5"))) == 1


def test_a_new_group_with_a_group_wait_gets_a_timer_for_its_end(pipeline, receiver, now):
    """The handler says when each group it opened is due, so the worker can flush it then rather than at
    the next periodic tick; a group due now has no timer, it is flushed in the same transaction."""
    channel, _ = make_channel(pipeline.session, pipeline.box, pipeline.tenant, url=receiver.url())
    make_rule(pipeline.session, pipeline.tenant, [channel], group_wait_s=30, group_by=["model"])
    make_rule(pipeline.session, pipeline.tenant, [channel], group_wait_s=0, group_by=["model"])
    row = events.emit(
        pipeline.session, "alert.firing", _firing(1, model="churn"), organization_id=pipeline.tenant.org_id
    )
    pipeline.session.flush()
    handled = handle_events(pipeline.session, [row.id], pipeline.box, now, LINK)
    assert len(handled.deliveries) == 1
    assert list(handled.timers.values()) == [now + timedelta(seconds=30)]
    [(group_id, due_at)] = handled.timers.items()
    early = due_at - timedelta(milliseconds=1)
    assert flush_due_groups_by_id(pipeline.session, [group_id], pipeline.box, early, LINK).pending == []
    assert len(flush_due_groups_by_id(pipeline.session, [group_id], pipeline.box, due_at, LINK).pending) == 1


def test_deliveries_for_a_task_that_sends_them_at_once_are_created_claimed(pipeline, receiver, now):
    """The handler that sends right after its commit gets its deliveries in flight already, with the lease
    a claim would give them: no one else claims them, and the first attempt is recorded as a claimed one."""
    channel, _ = make_channel(pipeline.session, pipeline.box, pipeline.tenant, url=receiver.url())
    make_rule(pipeline.session, pipeline.tenant, [channel], group_wait_s=0)
    row = events.emit(pipeline.session, "alert.firing", _firing(1), organization_id=pipeline.tenant.org_id)
    pipeline.session.flush()
    lease_until = now + pipeline.retry.lease
    handled = handle_events(pipeline.session, [row.id], pipeline.box, now, LINK, lease_until)
    [claimed] = handled.claimed
    assert handled.deliveries == []
    stored = pipeline.session.get(Delivery, claimed.delivery_id)
    assert (stored.state, stored.total_attempts, stored.lease_until) == ("in_flight", 1, lease_until)
    assert dispatch.claim(pipeline.session, [claimed.delivery_id], pipeline.box, pipeline.retry, now) == []
    result = dispatch.send(claimed, pipeline.settings, now)
    attempt_log.record(pipeline.session, [(claimed, result)], started_at=now, retry=pipeline.retry, now=now)
    delivered = pipeline.session.get(Delivery, claimed.delivery_id, populate_existing=True)
    assert delivered.state == "delivered"
    assert receiver.requests[0].headers["webhook-id"] == str(delivered.notification_id)


def test_an_event_not_yet_visible_is_left_for_the_handler_that_sees_it(db_session, tenant):
    """A hand-off that reaches a worker before the event is visible to it claims nothing, so the handler
    that does see the event (another worker, or the relay's later delivery) still takes it."""
    event_id = uuid.uuid4()
    now = utcnow()
    assert intake.take_events(db_session, [event_id], now) == []
    assert db_session.get(NotifierProcessedEvent, event_id) is None
    db_session.add(
        OutboxEvent(id=event_id, organization_id=tenant.org_id, event_type="custom.alertmanager", payload={})
    )
    db_session.flush()
    assert [row.id for row in intake.take_events(db_session, [event_id], now)] == [event_id]
    assert intake.take_events(db_session, [event_id], now) == []  # taken once
