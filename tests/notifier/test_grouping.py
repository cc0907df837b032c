"""Alertmanager's group timing and dedup, driven by an explicit clock."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from services.notifier.domain.alerts import Alert
from services.notifier.domain.grouping import (
    FlushDecision,
    GroupState,
    GroupTiming,
    NotificationLogEntry,
    NotifyReason,
    decide_flush,
    default_send_resolved,
    group_key,
    group_labels,
    notify_reason,
)
from services.notifier.domain.matchers import parse_matchers
from services.notifier.domain.muting import Silence, TimeInterval, is_muted, is_silenced
from tests.notifier.builders import T0, make_alert

TIMING = GroupTiming()  # 30 s / 5 min / 4 h
SECOND = timedelta(seconds=1)
MINUTE = timedelta(minutes=1)


def _after_flush(state: GroupState, decision: FlushDecision, now) -> GroupState:
    """What the caller stores after a flush whose delivery went through."""
    return replace(state, last_flush_at=now, last_notification=decision.log_entry or state.last_notification)


def _decide(state: GroupState, alerts: list[Alert], now, **options) -> FlushDecision:
    return decide_flush(state, alerts, now, timing=TIMING, **{"send_resolved": True, **options})


def test_group_labels_and_key():
    labels = {"alertname": "DriftDetected", "model": "churn", "severity": "high", "quote": 'a"b'}
    assert group_labels(labels, ["model", "missing"]) == {"model": "churn"}
    assert group_labels(labels, ["..."]) == labels
    assert group_labels(labels, []) == {}
    assert group_key("rule-1", labels, ["severity", "model"]) == 'rule-1:{model="churn",severity="high"}'
    assert group_key("rule-1", labels, ["quote"]) == 'rule-1:{quote="a\\"b"}'
    assert group_key("rule-1", labels, []) == "rule-1:{}"
    other_severity = {**labels, "severity": "critical"}
    assert group_key("r", labels, ["model"]) == group_key("r", other_severity, ["model"])
    assert group_key("r", labels, ["..."]) != group_key("r", other_severity, ["..."])


def test_first_flush_waits_for_group_wait_then_ticks_every_group_interval():
    alert = make_alert(starts_at=T0)
    state = GroupState(created_at=T0, first_alert_starts_at=T0)

    early = _decide(state, [alert], T0 + 10 * SECOND)
    assert not early.flush_now and early.next_flush_at == T0 + 30 * SECOND

    first = _decide(state, [alert], T0 + 30 * SECOND)
    assert first.flush_now and first.reason is NotifyReason.FIRST_NOTIFICATION
    assert first.deliver == (alert,)
    assert first.next_flush_at == T0 + 30 * SECOND + 5 * MINUTE
    assert first.log_entry == NotificationLogEntry(T0 + 30 * SECOND, frozenset({alert.fingerprint}), frozenset())

    # A late worker: the next tick counts from the actual flush, as Alertmanager's timer reset does.
    late = _decide(state, [alert], T0 + 45 * SECOND)
    assert late.next_flush_at == T0 + 45 * SECOND + 5 * MINUTE


def test_old_alert_skips_group_wait():
    state = GroupState(created_at=T0, first_alert_starts_at=T0 - 10 * MINUTE)
    decision = _decide(state, [make_alert(starts_at=T0 - 10 * MINUTE)], T0)
    assert decision.flush_now and decision.reason is NotifyReason.FIRST_NOTIFICATION


def test_new_alert_waits_for_next_tick_and_notifies_with_whole_group():
    first_alert = make_alert("DriftDetected", starts_at=T0)
    state = GroupState(created_at=T0, first_alert_starts_at=T0)
    flush_at = T0 + 30 * SECOND
    state = _after_flush(state, _decide(state, [first_alert], flush_at), flush_at)

    second_alert = make_alert("AccuracyDropped", starts_at=T0 + MINUTE)
    alerts = [first_alert, second_alert]
    assert not _decide(state, alerts, T0 + 2 * MINUTE).flush_now
    decision = _decide(state, alerts, flush_at + 5 * MINUTE)
    assert decision.reason is NotifyReason.NEW_ALERTS_IN_GROUP
    assert set(decision.deliver) == set(alerts)


def test_unchanged_group_repeats_on_the_first_tick_after_repeat_interval():
    alert = make_alert(starts_at=T0)
    state = GroupState(created_at=T0, first_alert_starts_at=T0)
    now = T0 + 30 * SECOND
    sent_at = now
    state = _after_flush(state, _decide(state, [alert], now), now)

    repeats = []
    while now < sent_at + timedelta(hours=4, minutes=10):
        now = state.last_flush_at + TIMING.group_interval
        decision = _decide(state, [alert], now)
        if decision.reason.should_notify:
            repeats.append((now - sent_at, decision.is_repeat))
        state = _after_flush(state, decision, now)
    # At exactly 4 h the log entry is not yet *older* than repeat_interval (Alertmanager: Before()).
    assert repeats == [(timedelta(hours=4, minutes=5), True)]
    # The repeat refreshed the log entry; the next repeat counts from it.
    assert state.last_notification.sent_at == sent_at + timedelta(hours=4, minutes=5)


def test_partial_resolution_depends_on_send_resolved():
    stays = make_alert("DriftDetected", starts_at=T0)
    resolves = make_alert("AccuracyDropped", starts_at=T0, ends_at=T0 + 2 * MINUTE)
    state = GroupState(created_at=T0, first_alert_starts_at=T0)
    flush_at = T0 + 30 * SECOND
    state = _after_flush(state, _decide(state, [stays, resolves], flush_at), flush_at)
    tick = flush_at + 5 * MINUTE

    slack = _decide(state, [stays, resolves], tick, send_resolved=True)
    assert slack.reason is NotifyReason.NEW_RESOLVED_ALERTS
    assert set(slack.deliver) == {stays, resolves}
    assert slack.drop_resolved == {resolves.fingerprint} and not slack.delete_group

    email = _decide(state, [stays, resolves], tick, send_resolved=False)
    assert email.reason is NotifyReason.DO_NOT_NOTIFY and email.deliver == ()
    assert email.drop_resolved == {resolves.fingerprint}


def test_all_resolved_notifies_or_only_records_and_deletes_group():
    alert = make_alert(starts_at=T0)
    state = GroupState(created_at=T0, first_alert_starts_at=T0)
    flush_at = T0 + 30 * SECOND
    state = _after_flush(state, _decide(state, [alert], flush_at), flush_at)
    resolved = replace(alert, ends_at=T0 + MINUTE)
    tick = flush_at + 5 * MINUTE

    slack = _decide(state, [resolved], tick, send_resolved=True)
    assert slack.reason is NotifyReason.ALL_ALERTS_RESOLVED and slack.deliver == (resolved,)
    assert slack.delete_group

    email = _decide(state, [resolved], tick, send_resolved=False)
    assert email.reason is NotifyReason.ALL_ALERTS_RESOLVED and email.deliver == ()
    # Recorded anyway, so the notification log no longer lists the alert as firing.
    assert email.log_entry == NotificationLogEntry(tick, frozenset(), frozenset({alert.fingerprint}))
    assert email.delete_group


def test_notify_reason_edge_cases():
    fired = NotificationLogEntry(T0, frozenset({"a"}), frozenset())
    all_resolved = NotificationLogEntry(T0, frozenset(), frozenset({"a"}))
    args = {"send_resolved": True, "repeat_interval": timedelta(hours=4), "now": T0 + MINUTE}
    # Fired and resolved between two flushes: the receiver never heard of it.
    assert notify_reason(None, set(), {"a"}, **args) is NotifyReason.DO_NOT_NOTIFY
    assert notify_reason(all_resolved, set(), {"a"}, **args) is NotifyReason.DO_NOT_NOTIFY
    # After an all-resolved notification, a firing alert starts the group over.
    assert notify_reason(all_resolved, {"a"}, set(), **args) is NotifyReason.FIRST_NOTIFICATION
    assert notify_reason(fired, {"a"}, set(), **args) is NotifyReason.DO_NOT_NOTIFY
    # Fewer firing alerts (one vanished without resolving) is not news.
    assert notify_reason(NotificationLogEntry(T0, frozenset({"a", "b"}), frozenset()), {"a"}, set(), **args) is (
        NotifyReason.DO_NOT_NOTIFY
    )


def test_empty_group_is_deleted_on_its_tick():
    state = GroupState(created_at=T0, first_alert_starts_at=T0)
    decision = _decide(state, [], T0 + 30 * SECOND)
    assert decision.flush_now and decision.delete_group and not decision.reason.should_notify


def test_defaults_follow_alertmanager():
    assert default_send_resolved("slack") and default_send_resolved("webhook")
    assert not default_send_resolved("email")
    assert GroupTiming.from_seconds(30, 300, 14400) == GroupTiming()


def test_silenced_alerts_are_held_back_until_the_silence_ends():
    silence = Silence(
        matchers=tuple(parse_matchers('alertname="AccuracyDropped"')),
        starts_at=T0,
        ends_at=T0 + 10 * MINUTE,
        created_by="ana@example.com",
        comment="known issue",
    )
    drift, accuracy = make_alert("DriftDetected"), make_alert("AccuracyDropped")
    state = GroupState(created_at=T0, first_alert_starts_at=T0)

    def silenced_at(now, alerts):
        return {alert.fingerprint for alert in alerts if is_silenced(alert.labels, [silence], now)}

    now = T0 + 30 * SECOND
    only_silenced = _decide(state, [accuracy], now, silenced=silenced_at(now, [accuracy]))
    assert only_silenced.reason is NotifyReason.DO_NOT_NOTIFY and only_silenced.log_entry is None
    assert not only_silenced.delete_group

    first = _decide(state, [drift, accuracy], now, silenced=silenced_at(now, [drift, accuracy]))
    assert first.deliver == (drift,) and first.log_entry.firing == {drift.fingerprint}
    state = _after_flush(state, first, now)

    now += 5 * MINUTE
    assert _decide(state, [drift, accuracy], now, silenced=silenced_at(now, [drift, accuracy])).deliver == ()
    now += 5 * MINUTE + SECOND  # the silence has ended
    unsilenced = _decide(state, [drift, accuracy], now, silenced=silenced_at(now, [drift, accuracy]))
    assert unsilenced.reason is NotifyReason.NEW_ALERTS_IN_GROUP
    assert set(unsilenced.deliver) == {drift, accuracy}


def test_mute_window_defers_the_notification_to_the_first_tick_after_it():
    # T0 is 13:00 in Berlin; the window covers the first tick (13:00:30) but not the second.
    lunch = TimeInterval.from_dict(
        {"times": [{"start_time": "13:00", "end_time": "13:03"}], "location": "Europe/Berlin"}
    )
    alert = make_alert()
    state = GroupState(created_at=T0, first_alert_starts_at=T0)
    now = T0 + 30 * SECOND
    muted = _decide(state, [alert], now, muted=is_muted([lunch], now))
    assert muted.flush_now and muted.reason is NotifyReason.DO_NOT_NOTIFY and muted.log_entry is None
    state = _after_flush(state, muted, now)

    now = muted.next_flush_at
    assert not is_muted([lunch], now)
    after = _decide(state, [alert], now, muted=False)
    assert after.reason is NotifyReason.FIRST_NOTIFICATION and after.deliver == (alert,)
