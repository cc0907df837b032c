"""Mute windows: Alertmanager's time intervals (timeinterval/timeinterval.go), in an IANA time zone.

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
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from shared.core.errors import InvalidParameter


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
