"""Alertmanager's grouping and flush timing, as pure functions of state and an explicit `now`.

How this maps onto Alertmanager (dispatch/dispatch.go, notify/dedup_stage.go, notify/retry_stage.go):

- Aggregation group: alerts of one route (here: a rule and channel) with equal values of the
  `group_by` labels share a group (`getGroupLabels`). `group_by: ["..."]` groups by all labels, i.e.
  one group per alert; an empty `group_by` puts every alert of the route in one group.
- Group timer (`aggrGroup.run`): a new group flushes `group_wait` after it was created, or at once if
  the alert that created it started more than `group_wait` before (an "old enough" alert, e.g. after
  a restart). After each flush the timer is reset to `group_interval` from that flush, whether or not
  anything was sent. Alerts added later never reset the timer; they wait for the next tick.
  `GroupState.created_at`, `.first_alert_starts_at` and `.last_flush_at` carry exactly this.
- Dedup (`DedupStage.needsUpdate`), evaluated on every tick against the notification log entry of
  the last notification (`NotificationLogEntry`: firing and resolved fingerprints, time sent):
  no entry -> notify if anything fires; a firing alert not in the last firing set -> notify; nothing
  fires any more but the last notification had firing alerts -> notify ("all resolved", regardless
  of send_resolved, so the log is cleared); with send_resolved, a resolved alert not in the last
  resolved set -> notify; otherwise notify only if the last notification is older than
  `repeat_interval`. Repeats are therefore only noticed on ticks, so the effective repeat period is
  `repeat_interval` rounded up to a multiple of `group_interval`, as in Alertmanager.
- send_resolved (`RetryStage.exec`): off -> resolved alerts are not delivered, and a notification
  with only resolved alerts is not delivered at all, yet its log entry is still recorded.
- Inhibition, silences and mute windows come before dedup (`MuteStage`, `TimeMuteStage`): inhibited
  and silenced alerts are left out of what is sent and logged (they stay in the group), and inside a
  mute window nothing is
  sent or logged at all, so firing alerts go out on the first tick after the window.
- After a flush, resolved alerts are removed from the group and an empty group is deleted
  (`aggrGroup.flush` -> `DeleteIfNotModified`); in Alertmanager only when the pipeline did not fail.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from services.notifier.domain.alerts import Alert

GROUP_BY_ALL = "..."

DEFAULT_GROUP_WAIT = timedelta(seconds=30)
DEFAULT_GROUP_INTERVAL = timedelta(minutes=5)
DEFAULT_REPEAT_INTERVAL = timedelta(hours=4)


def default_send_resolved(channel_type: str) -> bool:
    """Alertmanager's defaults: resolved notices on for Slack and webhooks, off for email."""
    return channel_type != "email"


@dataclass(frozen=True)
class GroupTiming:
    group_wait: timedelta = DEFAULT_GROUP_WAIT
    group_interval: timedelta = DEFAULT_GROUP_INTERVAL
    repeat_interval: timedelta = DEFAULT_REPEAT_INTERVAL

    @classmethod
    def from_seconds(cls, group_wait_s: int, group_interval_s: int, repeat_interval_s: int) -> GroupTiming:
        return cls(
            group_wait=timedelta(seconds=group_wait_s),
            group_interval=timedelta(seconds=group_interval_s),
            repeat_interval=timedelta(seconds=repeat_interval_s),
        )


def group_labels(labels: Mapping[str, str], group_by: Sequence[str]) -> dict[str, str]:
    if GROUP_BY_ALL in group_by:
        return dict(labels)
    return {name: labels[name] for name in group_by if name in labels}


def group_key(route: str, labels: Mapping[str, str], group_by: Sequence[str]) -> str:
    """Stable key of the group an alert falls into, e.g. `rule-7:{model="churn",severity="high"}`."""
    selected = group_labels(labels, group_by)
    rendered = ",".join(f"{name}={json.dumps(selected[name])}" for name in sorted(selected))
    return f"{route}:{{{rendered}}}"


def group_key_digest(key: str) -> str:
    """The fixed-size form of a group key that the database indexes (a key renders user-supplied labels,
    of any length)."""
    return hashlib.sha256(key.encode()).hexdigest()


class NotifyReason(StrEnum):
    FIRST_NOTIFICATION = "first_notification"
    NEW_ALERTS_IN_GROUP = "new_alerts_in_group"
    ALL_ALERTS_RESOLVED = "all_alerts_resolved"
    NEW_RESOLVED_ALERTS = "new_resolved_alerts"
    REPEAT_INTERVAL_ELAPSED = "repeat_interval_elapsed"
    DO_NOT_NOTIFY = "do_not_notify"

    @property
    def should_notify(self) -> bool:
        return self is not NotifyReason.DO_NOT_NOTIFY


@dataclass(frozen=True)
class NotificationLogEntry:
    """What the last notification of a group to a channel covered (Alertmanager's nflog entry)."""

    sent_at: datetime
    firing: frozenset[str]
    resolved: frozenset[str]


def notify_reason(
    last: NotificationLogEntry | None,
    firing: Collection[str],
    resolved: Collection[str],
    *,
    send_resolved: bool,
    repeat_interval: timedelta,
    now: datetime,
) -> NotifyReason:
    """Whether the group's current alerts (fingerprint sets) warrant a notification; see module doc."""
    if last is None:
        return NotifyReason.FIRST_NOTIFICATION if firing else NotifyReason.DO_NOT_NOTIFY
    if not last.firing.issuperset(firing):
        # After an all-resolved notification the group starts over.
        return NotifyReason.NEW_ALERTS_IN_GROUP if last.firing else NotifyReason.FIRST_NOTIFICATION
    if not firing:
        # If the receiver never heard of these alerts firing, it need not hear that they resolved.
        return NotifyReason.ALL_ALERTS_RESOLVED if last.firing else NotifyReason.DO_NOT_NOTIFY
    if send_resolved and not last.resolved.issuperset(resolved):
        return NotifyReason.NEW_RESOLVED_ALERTS
    if last.sent_at < now - repeat_interval:
        return NotifyReason.REPEAT_INTERVAL_ELAPSED
    return NotifyReason.DO_NOT_NOTIFY


@dataclass(frozen=True)
class GroupState:
    created_at: datetime
    # starts_at of the alert that created the group: an old alert skips group_wait.
    first_alert_starts_at: datetime
    # When the group's timer last fired, whether or not a notification went out.
    last_flush_at: datetime | None = None
    last_notification: NotificationLogEntry | None = None


def next_flush_at(state: GroupState, timing: GroupTiming) -> datetime:
    if state.last_flush_at is not None:
        return state.last_flush_at + timing.group_interval
    if state.first_alert_starts_at + timing.group_wait < state.created_at:
        return state.created_at
    return state.created_at + timing.group_wait


@dataclass(frozen=True)
class FlushDecision:
    flush_now: bool
    # When to evaluate the group again; store it as the group's next tick.
    next_flush_at: datetime
    reason: NotifyReason = NotifyReason.DO_NOT_NOTIFY
    # What to send. Empty while `reason.should_notify` means: send nothing, but record `log_entry`.
    deliver: tuple[Alert, ...] = ()
    # Becomes the group's `last_notification` once the notification is delivered (or needs no delivery).
    log_entry: NotificationLogEntry | None = None
    # Resolved alerts to remove from the group after the flush; `delete_group` if none remain.
    drop_resolved: frozenset[str] = field(default_factory=frozenset)
    delete_group: bool = False

    @property
    def is_repeat(self) -> bool:
        return self.reason is NotifyReason.REPEAT_INTERVAL_ELAPSED


def decide_flush(
    state: GroupState,
    alerts: Sequence[Alert],
    now: datetime,
    *,
    timing: GroupTiming,
    send_resolved: bool,
    silenced: Collection[str] = frozenset(),
    muted: bool = False,
) -> FlushDecision:
    """Run the group's timer at `now`: not due yet, or a flush with what to send and record.

    `alerts` are all alerts in the group, `silenced` the fingerprints of those an active silence
    covers (`silences.is_silenced`), `muted` whether a mute window contains `now`
    (`mute_windows.is_muted`). The caller stores `now` as `last_flush_at` when `flush_now` is true,
    and renders the notification with `created_at=now`, so alert statuses agree with this decision.
    """
    due_at = next_flush_at(state, timing)
    if now < due_at:
        return FlushDecision(flush_now=False, next_flush_at=due_at)

    ordered = sorted(alerts, key=lambda alert: sorted(alert.labels.items()))
    all_resolved = frozenset(alert.fingerprint for alert in ordered if alert.is_resolved_at(now))
    visible = [alert for alert in ordered if alert.fingerprint not in silenced]
    firing = frozenset(alert.fingerprint for alert in visible if not alert.is_resolved_at(now))
    resolved = frozenset(alert.fingerprint for alert in visible if alert.is_resolved_at(now))
    reason = NotifyReason.DO_NOT_NOTIFY
    if visible and not muted:
        reason = notify_reason(
            state.last_notification,
            firing,
            resolved,
            send_resolved=send_resolved,
            repeat_interval=timing.repeat_interval,
            now=now,
        )
    deliver: tuple[Alert, ...] = ()
    log_entry = None
    if reason.should_notify:
        log_entry = NotificationLogEntry(sent_at=now, firing=firing, resolved=resolved)
        if send_resolved:
            deliver = tuple(visible)
        elif firing:
            deliver = tuple(alert for alert in visible if alert.fingerprint in firing)
    return FlushDecision(
        flush_now=True,
        next_flush_at=now + timing.group_interval,
        reason=reason,
        deliver=deliver,
        log_entry=log_entry,
        drop_resolved=all_resolved,
        delete_group=len(all_resolved) == len(ordered),
    )
