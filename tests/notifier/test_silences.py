from __future__ import annotations

from datetime import timedelta

import pytest

from services.notifier.domain.matchers import parse_matchers
from services.notifier.domain.muting import Silence, SilenceError, SilenceState, is_silenced, silenced_by
from tests.notifier.builders import T0


def _silence(matchers: str, start_offset_min: int = 0, hours: int = 2, silence_id: str | None = None) -> Silence:
    return Silence(
        matchers=tuple(parse_matchers(matchers)),
        starts_at=T0 + timedelta(minutes=start_offset_min),
        ends_at=T0 + timedelta(minutes=start_offset_min, hours=hours),
        created_by="ana@example.com",
        comment="retraining churn model",
        id=silence_id,
    )


def test_active_window_is_inclusive_at_both_ends():
    silence = _silence('model="churn"')
    labels = {"model": "churn", "severity": "high"}
    assert silence.state_at(T0 - timedelta(seconds=1)) is SilenceState.PENDING
    assert is_silenced(labels, [silence], T0)
    assert is_silenced(labels, [silence], T0 + timedelta(hours=2))
    assert silence.state_at(T0 + timedelta(hours=2, seconds=1)) is SilenceState.EXPIRED
    assert not is_silenced(labels, [silence], T0 + timedelta(hours=2, seconds=1))


def test_all_matchers_must_match_and_any_silence_suffices():
    narrow = _silence('model="churn", severity=~"warning|info"', silence_id="s1")
    broad = _silence('project="fraud"', silence_id="s2")
    assert not is_silenced({"model": "churn", "severity": "critical"}, [narrow], T0)
    assert is_silenced({"model": "churn", "severity": "info"}, [narrow], T0)
    labels = {"model": "churn", "severity": "info", "project": "fraud"}
    assert [silence.id for silence in silenced_by(labels, [narrow, broad], T0)] == ["s1", "s2"]


def test_invalid_silences_are_rejected():
    with pytest.raises(SilenceError):
        _silence("")
    with pytest.raises(SilenceError, match="empty string"):
        _silence('team=~".*"')  # would silence everything
    with pytest.raises(SilenceError):
        _silence('model="churn"', hours=-1)
    with pytest.raises(SilenceError):
        Silence(tuple(parse_matchers('a="b"')), T0, T0, created_by="x", comment=" ")
