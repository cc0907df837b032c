"""Muting, the fourth stage: what holds a due group's alerts back — silences, inhibition, mute windows —
as Alertmanager's MuteStage and TimeMuteStage do, before the notification is decided.

`held_back` judges a batch of due groups: the fingerprints of their alerts that a silence covers or a
firing alert inhibits (left out of what is sent and logged; they stay in the group), and whether a mute
window of the group's rule contains now (nothing sent or logged at all). The semantics follow:

- Silences: mute alerts whose labels match, for a stretch of time (Alertmanager's silence/silence.go).

  A silence is active from `starts_at` to `ends_at`, both inclusive (Alertmanager's getState: pending
  before the start, expired after the end). Validation mirrors Alertmanager's: at least one matcher,
  and at least one matcher that does not match the empty string, so a silence cannot mute everything.
  Silenced alerts are dropped before grouping decisions are made, as Alertmanager's mute stage does.

- Mute windows: Alertmanager's time intervals (timeinterval/timeinterval.go), in an IANA time zone.

  A `TimeInterval` holds optional constraints (times of day, weekdays, days of month, months, years);
  an empty constraint means "any". An instant is inside when every given constraint holds for the
  instant's wall-clock time in `location`. A mute window is a list of intervals; it mutes when any
  interval contains the instant.

  Wall-clock semantics across DST, as in Alertmanager (`t.In(location)`, then hour and minute):
  - spring forward: local times that do not exist (02:00-03:00 in Europe/Berlin on the last Sunday of
    March) are never reached, so a window 02:00-03:00 is empty that day;
  - fall back: the repeated hour happens twice, so a window 02:00-03:00 lasts two real hours that day.

  Time ranges include their start minute and exclude their end minute ("24:00" ends the day);
  weekdays run Sunday (0) to Saturday (6); negative days of month count from the month's end (-1 is
  the last day), clamped to the month as Alertmanager does.

- Alertmanager's inhibition: while a source alert fires, target alerts that share its `equal` labels
  are muted (inhibit.go). Typical: a critical `ClusterDown` mutes the warnings of that cluster.

  Semantics kept from Alertmanager:
  - only firing source alerts inhibit, from anywhere in the organization (not only the target's group);
  - a label missing on both sides counts as equal (both are the empty string);
  - an alert never inhibits itself, and an alert that matches both sides of a rule is not inhibited by
    another alert that also matches both (no mutual muting: both stay visible);
  - inhibited alerts are treated like silenced ones when a group flushes (Alertmanager's MuteStage runs
    inhibition and silences together): left out of what is sent and of the notification log, so they are
    notified as new once nothing inhibits them any more.
"""

from __future__ import annotations

import calendar
import re
import uuid
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import (
    or_,
    select,
)
from sqlalchemy.orm import Session

from services.notifier.domain import records
from services.notifier.domain.alerts import Alert
from services.notifier.domain.matchers import Matcher, MatcherError, coerce_matchers, matches_all

if TYPE_CHECKING:
    from services.notifier.domain.config.cache import OrgConfig
    from services.notifier.domain.grouping import Group, GroupAlert
from shared.core.errors import InvalidParameter
from shared.db.models import (
    NotificationGroup,
    NotificationGroupAlert,
    NotificationInhibitRule,
    NotificationMuteWindow,
    NotificationSilence,
)

# --- silences (Alertmanager's silence/silence.go) ---------------------------------------------------


class SilenceError(InvalidParameter):
    """A silence that would be rejected by Alertmanager."""


class SilenceState(StrEnum):
    PENDING = "pending"
    ACTIVE = "active"
    EXPIRED = "expired"


@dataclass(frozen=True)
class Silence:
    matchers: tuple[Matcher, ...]
    starts_at: datetime
    ends_at: datetime
    created_by: str
    comment: str
    # The stored row's id, so the caller can say which silences muted an alert.
    id: str | None = None

    def __post_init__(self) -> None:
        if not self.matchers:
            raise SilenceError("a silence needs at least one matcher")
        if all(matcher.matches_value("") for matcher in self.matchers):
            raise SilenceError("at least one matcher must not match the empty string")
        if self.ends_at < self.starts_at:
            raise SilenceError("end time must not be before start time")
        if not self.created_by.strip() or not self.comment.strip():
            raise SilenceError("a silence needs an author and a comment")

    def state_at(self, now: datetime) -> SilenceState:
        if now < self.starts_at:
            return SilenceState.PENDING
        if now > self.ends_at:
            return SilenceState.EXPIRED
        return SilenceState.ACTIVE

    def silences(self, labels: Mapping[str, str], now: datetime) -> bool:
        return self.state_at(now) is SilenceState.ACTIVE and matches_all(self.matchers, labels)


def silenced_by(labels: Mapping[str, str], silences: Iterable[Silence], now: datetime) -> list[Silence]:
    return [silence for silence in silences if silence.silences(labels, now)]


def is_silenced(labels: Mapping[str, str], silences: Sequence[Silence], now: datetime) -> bool:
    return any(silence.silences(labels, now) for silence in silences)


# --- mute windows (Alertmanager's timeinterval/timeinterval.go) -----------------------------------


class MuteWindowError(InvalidParameter):
    """A time interval Alertmanager would refuse to load."""


WEEKDAYS = ("sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday")
MONTHS = (
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
)
_TIME_RE = re.compile(r"^([01][0-9]|2[0-3]):([0-5][0-9])$")


@dataclass(frozen=True)
class TimeRange:
    start_minute: int
    end_minute: int

    def contains(self, minute_of_day: int) -> bool:
        return self.start_minute <= minute_of_day < self.end_minute


@dataclass(frozen=True)
class InclusiveRange:
    begin: int
    end: int

    def contains(self, value: int) -> bool:
        return self.begin <= value <= self.end


@dataclass(frozen=True)
class TimeInterval:
    times: tuple[TimeRange, ...] = ()
    weekdays: tuple[InclusiveRange, ...] = ()
    days_of_month: tuple[InclusiveRange, ...] = ()
    months: tuple[InclusiveRange, ...] = ()
    years: tuple[InclusiveRange, ...] = ()
    location: str = "UTC"

    def __post_init__(self) -> None:
        try:
            ZoneInfo(self.location)
        except (ZoneInfoNotFoundError, ValueError):
            raise MuteWindowError(f"unknown time zone {self.location!r}") from None

    def contains(self, instant: datetime) -> bool:
        if instant.tzinfo is None:
            raise ValueError("instant must be timezone-aware")
        local = instant.astimezone(ZoneInfo(self.location))
        if self.times and not any(r.contains(local.hour * 60 + local.minute) for r in self.times):
            return False
        if self.days_of_month and not any(_day_in_range(r, local) for r in self.days_of_month):
            return False
        if self.months and not any(r.contains(local.month) for r in self.months):
            return False
        # Python counts Monday as 0; Alertmanager counts Sunday as 0.
        weekday = local.isoweekday() % 7
        if self.weekdays and not any(r.contains(weekday) for r in self.weekdays):
            return False
        return not self.years or any(r.contains(local.year) for r in self.years)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TimeInterval:
        """Alertmanager's config shape: `{"times": [{"start_time": "09:00", "end_time": "17:00"}],
        "weekdays": ["monday:friday"], "days_of_month": ["1:5", "-1"], "months": ["january:march"],
        "years": ["2026"], "location": "Europe/Berlin"}`."""
        unknown = set(data) - {"times", "weekdays", "days_of_month", "months", "years", "location"}
        if unknown:
            raise MuteWindowError(f"unknown time interval fields: {sorted(unknown)}")
        return cls(
            times=tuple(_parse_time_range(item) for item in data.get("times") or ()),
            weekdays=tuple(_parse_weekdays(item) for item in data.get("weekdays") or ()),
            days_of_month=tuple(_parse_days_of_month(item) for item in data.get("days_of_month") or ()),
            months=tuple(_parse_months(item) for item in data.get("months") or ()),
            years=tuple(_parse_years(item) for item in data.get("years") or ()),
            location=data.get("location") or "UTC",
        )


def _day_in_range(days: InclusiveRange, local: datetime) -> bool:
    days_in_month = calendar.monthrange(local.year, local.month)[1]
    begin = days_in_month + days.begin + 1 if days.begin < 0 else days.begin
    end = days_in_month + days.end + 1 if days.end < 0 else days.end
    if begin > days_in_month:
        return False
    # A range like 1:31 in February means up to the last day, not into March.
    begin, end = max(begin, 1), min(end, days_in_month)
    return begin <= local.day <= end


def _parse_minutes(text: str) -> int:
    text = text.strip()
    if text == "24:00":
        return 24 * 60
    found = _TIME_RE.match(text)
    if found is None:
        raise MuteWindowError(f"invalid time {text!r}, expected HH:MM")
    return int(found.group(1)) * 60 + int(found.group(2))


def _parse_time_range(item: Mapping[str, str]) -> TimeRange:
    if not item.get("start_time") or not item.get("end_time"):
        raise MuteWindowError("both start_time and end_time must be given")
    start, end = _parse_minutes(item["start_time"]), _parse_minutes(item["end_time"])
    if start >= end:
        raise MuteWindowError("start_time must be before end_time")
    return TimeRange(start_minute=start, end_minute=end)


def _split_range(text: str, member: Callable[[str], int]) -> InclusiveRange:
    parts = str(text).strip().lower().split(":")
    if len(parts) > 2:
        raise MuteWindowError(f"invalid range {text!r}")
    return InclusiveRange(begin=member(parts[0]), end=member(parts[-1]))


def _named_member(names: Sequence[str], offset: int, what: str) -> Callable[[str], int]:
    def member(token: str) -> int:
        if token in names:
            return names.index(token) + offset
        if token.lstrip("-").isdigit():
            return int(token)
        raise MuteWindowError(f"{token!r} is not a valid {what}")

    return member


def _parse_weekdays(text: str) -> InclusiveRange:
    weekdays = _split_range(text, _named_member(WEEKDAYS, 0, "weekday"))
    if not (0 <= weekdays.begin <= weekdays.end <= 6):
        raise MuteWindowError(f"invalid weekday range {text!r} (sunday:saturday order)")
    return weekdays


def _parse_days_of_month(text: str) -> InclusiveRange:
    days = _split_range(text, _named_member((), 0, "day of month"))
    for day in (days.begin, days.end):
        if day == 0 or not -31 <= day <= 31:
            raise MuteWindowError(f"{day} is not a valid day of the month")
    if days.begin < 0 < days.end:
        raise MuteWindowError("end day must be negative if start day is negative")
    # Always-empty ranges are refused, judged on a 28-day month as Alertmanager does.
    begin = 28 + days.begin if days.begin < 0 else days.begin
    end = 28 + days.end if days.end < 0 else days.end
    if begin > end:
        raise MuteWindowError(f"end day {days.end} is always before start day {days.begin}")
    return days


def _parse_months(text: str) -> InclusiveRange:
    months = _split_range(text, _named_member(MONTHS, 1, "month"))
    if not (1 <= months.begin <= months.end <= 12):
        raise MuteWindowError(f"invalid month range {text!r}")
    return months


def _parse_years(text: str) -> InclusiveRange:
    years = _split_range(text, _named_member((), 0, "year"))
    if years.begin <= 0 or years.begin > years.end:
        raise MuteWindowError(f"invalid year range {text!r}")
    return years


def is_muted(intervals: Iterable[TimeInterval], now: datetime) -> bool:
    return any(interval.contains(now) for interval in intervals)


# --- inhibition (Alertmanager's inhibit/inhibit.go) -----------------------------------------------


@dataclass(frozen=True)
class InhibitRule:
    source: tuple[Matcher, ...]
    target: tuple[Matcher, ...]
    equal: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.source or not self.target:
            # An empty side would match every alert: one firing alert would mute the whole organization.
            raise MatcherError("an inhibit rule needs source and target matchers")


@dataclass(frozen=True)
class _Source:
    fingerprint: str
    # Whether the source also matches the rule's target matchers (the two-sided case).
    two_sided: bool


class Inhibitor:
    """The rules of one organization with its firing alerts, indexed by the values of each rule's `equal`
    labels: asking about an alert costs a dictionary lookup per rule, not a scan of the sources."""

    def __init__(self, rules: Sequence[InhibitRule], firing: Iterable[Alert]) -> None:
        self.rules = list(rules)
        self._sources: list[dict[tuple[str, ...], list[_Source]]] = [defaultdict(list) for _ in self.rules]
        for alert in firing:
            for index, rule in enumerate(self.rules):
                if matches_all(rule.source, alert.labels):
                    self._sources[index][_values(alert.labels, rule.equal)].append(
                        _Source(alert.fingerprint, matches_all(rule.target, alert.labels))
                    )

    def inhibited_by(self, alert: Alert) -> list[str]:
        """Fingerprints of the firing alerts that inhibit `alert` (empty: it is not inhibited)."""
        found: list[str] = []
        for rule, sources in zip(self.rules, self._sources, strict=True):
            if not sources or not matches_all(rule.target, alert.labels):
                continue
            two_sided = matches_all(rule.source, alert.labels)
            found.extend(
                source.fingerprint
                for source in sources.get(_values(alert.labels, rule.equal), ())
                if source.fingerprint != alert.fingerprint and not (two_sided and source.two_sided)
            )
        return sorted(set(found))


def _values(labels: Mapping[str, str], names: Sequence[str]) -> tuple[str, ...]:
    return tuple(labels.get(name, "") for name in names)


# --- what is in force -----------------------------------------------------------------------------


def to_silence(row: NotificationSilence) -> Silence:
    return Silence(
        matchers=tuple(coerce_matchers(row.matchers)),
        starts_at=row.starts_at,
        ends_at=row.ends_at,
        created_by=row.created_by,
        comment=row.comment,
        id=str(row.id),
    )


def silences_in_force(
    session: Session, organization_ids: Collection[uuid.UUID], now: datetime
) -> dict[uuid.UUID, list[Silence]]:
    """Active silences per organization, in one query."""
    rows = session.scalars(
        select(NotificationSilence).where(
            NotificationSilence.organization_id.in_(organization_ids),
            NotificationSilence.starts_at <= now,
            NotificationSilence.ends_at >= now,
        )
    )
    by_org: dict[uuid.UUID, list[Silence]] = defaultdict(list)
    for row in rows:
        by_org[row.organization_id].append(to_silence(row))
    return by_org


def mute_intervals(session: Session, window_ids: Collection[str]) -> dict[str, list[TimeInterval]]:
    """Time intervals per mute window id, in one query."""
    if not window_ids:
        return {}
    rows = session.scalars(
        select(NotificationMuteWindow).where(NotificationMuteWindow.id.in_({uuid.UUID(i) for i in window_ids}))
    )
    return {str(row.id): [TimeInterval.from_dict(item) for item in row.time_intervals] for row in rows}


def to_inhibit_rule(row: NotificationInhibitRule) -> InhibitRule:
    return InhibitRule(
        source=tuple(coerce_matchers(row.source_matchers)),
        target=tuple(coerce_matchers(row.target_matchers)),
        equal=tuple(row.equal),
    )


def inhibit_rules(session: Session, organization_ids: Collection[uuid.UUID]) -> dict[uuid.UUID, list[InhibitRule]]:
    """The inhibit rules of each organization that has any, in one query."""
    rules_by_org: dict[uuid.UUID, list[InhibitRule]] = defaultdict(list)
    for row in session.scalars(
        select(NotificationInhibitRule).where(NotificationInhibitRule.organization_id.in_(organization_ids))
    ):
        rules_by_org[row.organization_id].append(to_inhibit_rule(row))
    return rules_by_org


def inhibitors(
    session: Session, rules_by_org: Mapping[uuid.UUID, Sequence[InhibitRule]], now: datetime
) -> dict[uuid.UUID, Inhibitor]:
    """Per organization with inhibit rules, its rules with the alerts firing in its active groups (one
    query; organizations without rules cost nothing)."""
    if not rules_by_org:
        return {}
    alerts, groups = records.table(NotificationGroupAlert), records.table(NotificationGroup)
    firing: dict[uuid.UUID, dict[str, Any]] = defaultdict(dict)
    for row in session.execute(
        select(
            groups.c.organization_id,
            alerts.c.labels,
            alerts.c.annotations,
            alerts.c.starts_at,
            alerts.c.ends_at,
            alerts.c.url,
        )
        .join(groups, groups.c.id == alerts.c.group_id)
        .where(
            groups.c.organization_id.in_(rules_by_org),
            groups.c.active.is_(True),
            or_(alerts.c.ends_at.is_(None), alerts.c.ends_at > now),
        )
    ):
        alert = records.alert_of(row)
        # The same alert in several rules' groups is one source.
        firing[row.organization_id][alert.fingerprint] = alert
    return {org_id: Inhibitor(rules, firing[org_id].values()) for org_id, rules in rules_by_org.items()}


@dataclass(frozen=True)
class Held:
    """What holds a group's alerts back at a flush."""

    # Fingerprints of the alerts a silence covers or a firing alert inhibits.
    silenced: frozenset[str]
    # A mute window of the group's rule contains now.
    muted: bool


def held_back(
    session: Session,
    groups: Sequence[Group],
    alerts: Mapping[uuid.UUID, Sequence[GroupAlert]],
    configs: Mapping[uuid.UUID, OrgConfig],
    now: datetime,
) -> dict[uuid.UUID, Held]:
    """Per group, what holds its alerts back now (one query for the firing alerts of organizations with
    inhibit rules, nothing else: silences and mute windows come with the configuration)."""
    rules_by_org = {org_id: config.inhibit_rules for org_id, config in configs.items() if config.inhibit_rules}
    inhibitors_by_org = inhibitors(session, rules_by_org, now)
    held = {}
    for group in groups:
        config = configs[group.organization_id]
        inhibitor = inhibitors_by_org.get(group.organization_id)
        rule = config.rule(group.rule_id)
        held[group.id] = Held(
            silenced=frozenset(
                held_alert.alert.fingerprint
                for held_alert in alerts.get(group.id, ())
                if is_silenced(held_alert.alert.labels, config.silences, now)
                or (inhibitor is not None and inhibitor.inhibited_by(held_alert.alert))
            ),
            muted=rule is not None and is_muted(config.muting_intervals(rule), now),
        )
    return held
