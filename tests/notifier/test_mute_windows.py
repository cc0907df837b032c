from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.notifier.domain.muting import MuteWindowError, TimeInterval, is_muted

NEW_YORK = "America/New_York"


def _window(start: str, end: str, **constraints) -> TimeInterval:
    return TimeInterval.from_dict({"times": [{"start_time": start, "end_time": end}], **constraints})


def _muted_minutes(interval: TimeInterval, utc_start: datetime, hours: int) -> list[datetime]:
    minutes = (utc_start + timedelta(minutes=offset) for offset in range(hours * 60))
    return [moment for moment in minutes if interval.contains(moment)]


def test_spring_forward_skips_the_missing_local_hour():
    # 2026-03-08 in New York: 02:00 EST jumps to 03:00 EDT. Local midnight is 05:00 UTC.
    local_day = datetime(2026, 3, 8, 5, 0, tzinfo=UTC)
    assert _muted_minutes(_window("02:00", "03:00", location=NEW_YORK), local_day, 23) == []
    half_past_two = _muted_minutes(_window("02:30", "03:30", location=NEW_YORK), local_day, 23)
    # Only 03:00-03:30 EDT exists, i.e. 07:00-07:30 UTC.
    assert len(half_past_two) == 30 and half_past_two[0] == datetime(2026, 3, 8, 7, 0, tzinfo=UTC)
    # The day before, the same window is a full hour.
    assert len(_muted_minutes(_window("02:00", "03:00", location=NEW_YORK), local_day - timedelta(days=1), 24)) == 60


def test_fall_back_repeated_hour_is_muted_twice():
    # 2026-11-01 in New York: 01:00-02:00 happens in EDT (05:00 UTC) and again in EST (06:00 UTC).
    interval = _window("01:00", "02:00", location=NEW_YORK)
    muted = _muted_minutes(interval, datetime(2026, 11, 1, 4, 0, tzinfo=UTC), 25)
    assert len(muted) == 120
    assert interval.contains(datetime(2026, 11, 1, 5, 30, tzinfo=UTC))  # 01:30 EDT
    assert interval.contains(datetime(2026, 11, 1, 6, 30, tzinfo=UTC))  # 01:30 EST
    assert not interval.contains(datetime(2026, 11, 1, 7, 0, tzinfo=UTC))  # 02:00 EST


def test_weekdays_follow_the_local_calendar():
    business_hours = TimeInterval.from_dict({"weekdays": ["monday:friday"], "location": "Europe/Berlin"})
    sunday_23_30_utc = datetime(2026, 11, 29, 23, 30, tzinfo=UTC)  # Monday 00:30 in Berlin
    assert business_hours.contains(sunday_23_30_utc)
    assert not TimeInterval.from_dict({"weekdays": ["monday:friday"]}).contains(sunday_23_30_utc)


def test_end_of_day_and_start_inclusive_end_exclusive():
    evening = _window("17:00", "24:00")
    assert evening.contains(datetime(2026, 11, 25, 17, 0, tzinfo=UTC))
    assert evening.contains(datetime(2026, 11, 25, 23, 59, tzinfo=UTC))
    assert not evening.contains(datetime(2026, 11, 25, 16, 59, tzinfo=UTC))
    assert not _window("09:00", "17:00").contains(datetime(2026, 11, 25, 17, 0, tzinfo=UTC))


def test_negative_days_of_month_months_and_years():
    last_day = TimeInterval.from_dict({"days_of_month": ["-1"]})
    assert last_day.contains(datetime(2026, 2, 28, 12, tzinfo=UTC))
    assert not last_day.contains(datetime(2026, 2, 27, 12, tzinfo=UTC))
    assert last_day.contains(datetime(2028, 2, 29, 12, tzinfo=UTC))
    whole_month = TimeInterval.from_dict({"days_of_month": ["1:31"], "months": ["february"]})
    assert whole_month.contains(datetime(2026, 2, 28, 12, tzinfo=UTC))
    quarter = TimeInterval.from_dict({"months": ["january:march"], "years": ["2026:2027"]})
    assert quarter.contains(datetime(2027, 3, 31, 12, tzinfo=UTC))
    assert not quarter.contains(datetime(2026, 4, 1, 12, tzinfo=UTC))
    assert not quarter.contains(datetime(2028, 1, 1, 12, tzinfo=UTC))


def test_any_interval_mutes():
    nights = _window("00:00", "06:00")
    weekends = TimeInterval.from_dict({"weekdays": ["saturday", "sunday"]})
    wednesday_noon = datetime(2026, 11, 25, 12, tzinfo=UTC)
    assert not is_muted([nights, weekends], wednesday_noon)
    assert is_muted([nights, weekends], datetime(2026, 11, 28, 12, tzinfo=UTC))
    assert is_muted([nights, weekends], datetime(2026, 11, 25, 3, tzinfo=UTC))
    assert not is_muted([], wednesday_noon)


@pytest.mark.parametrize(
    "config",
    [
        {"weekdays": ["saturday:sunday"]},
        {"weekdays": ["funday"]},
        {"times": [{"start_time": "25:00", "end_time": "26:00"}]},
        {"times": [{"start_time": "10:00", "end_time": "09:00"}]},
        {"times": [{"start_time": "10:00"}]},
        {"days_of_month": ["0"]},
        {"days_of_month": ["-3:5"]},
        {"days_of_month": ["-1:-5"]},
        {"months": ["march:january"]},
        {"years": ["2027:2026"]},
        {"location": "Mars/Olympus_Mons"},
        {"hours": ["1"]},
    ],
)
def test_invalid_intervals_are_rejected(config: dict):
    with pytest.raises(MuteWindowError):
        TimeInterval.from_dict(config)


def test_naive_instants_are_refused():
    with pytest.raises(ValueError):
        _window("00:00", "06:00").contains(datetime(2026, 11, 25, 3))
