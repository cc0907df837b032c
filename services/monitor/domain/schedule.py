"""When a monitor's next check is due: fixed intervals anchored at the monitor's creation, or cron (UTC)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from croniter import croniter

from shared.core.errors import InvalidParameter


def validate_cron(expression: str) -> str:
    if not croniter.is_valid(expression):
        raise InvalidParameter(f"schedule_cron: '{expression}' is not a valid cron expression")
    return expression


def next_slot(*, interval_s: int | None, cron: str | None, anchor: datetime, after: datetime) -> datetime:
    """The first slot strictly after `after`. Interval slots sit on `anchor + k * interval`, so every
    beat process computes the same slots and a late tick skips missed ones instead of bunching them."""
    if cron:
        return croniter(cron, after.astimezone(UTC)).get_next(datetime)
    step = timedelta(seconds=interval_s or 0)
    if step <= timedelta(0):
        raise InvalidParameter("A monitor needs schedule_interval_s or schedule_cron")
    if after < anchor:
        return anchor
    return anchor + step * ((after - anchor) // step + 1)
