"""Pydantic field types the services' request schemas share."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator, AwareDatetime


def _in_utc(value: datetime) -> datetime:
    try:
        return value.astimezone(UTC)
    except OverflowError:
        # A time at the edge of the calendar ("9999-12-31T23:59:59-14:00") has no UTC value: a 4xx, not a 500.
        raise ValueError("timestamp out of range") from None


# A time with its offset (a naive one is refused), kept in UTC.
Timestamp = Annotated[AwareDatetime, AfterValidator(_in_utc)]
