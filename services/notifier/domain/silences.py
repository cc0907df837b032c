"""Silences: mute alerts whose labels match, for a stretch of time (Alertmanager's silence/silence.go).

A silence is active from `starts_at` to `ends_at`, both inclusive (Alertmanager's getState: pending
before the start, expired after the end). Validation mirrors Alertmanager's: at least one matcher,
and at least one matcher that does not match the empty string, so a silence cannot mute everything.
Silenced alerts are dropped before grouping decisions are made, as Alertmanager's mute stage does.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from services.notifier.domain.matchers import Matcher, matches_all
from shared.core.errors import InvalidParameter


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
