"""Alertmanager's inhibition as a pure function of rules and firing alerts."""

from __future__ import annotations

import pytest

from services.notifier.domain.matchers import MatcherError, parse_matchers
from services.notifier.domain.muting import Inhibitor, InhibitRule
from tests.notifier.builders import make_alert


def rule(source: str, target: str, *equal: str) -> InhibitRule:
    return InhibitRule(tuple(parse_matchers(source)), tuple(parse_matchers(target)), equal)


CRITICAL_MUTES_WARNINGS = rule("severity=critical", 'severity=~"warning|info"', "cluster")


def test_a_firing_source_mutes_targets_with_equal_labels_only():
    down = make_alert("ClusterDown", severity="critical", cluster="eu")
    inhibitor = Inhibitor([CRITICAL_MUTES_WARNINGS], [down])
    assert inhibitor.inhibited_by(make_alert("HighLatency", severity="warning", cluster="eu")) == [down.fingerprint]
    assert inhibitor.inhibited_by(make_alert("HighLatency", severity="warning", cluster="us")) == []
    assert inhibitor.inhibited_by(make_alert("Other", severity="critical", cluster="eu")) == [], "not a target"


def test_a_label_missing_on_both_sides_counts_as_equal():
    down = make_alert("ClusterDown", severity="critical")
    inhibitor = Inhibitor([CRITICAL_MUTES_WARNINGS], [down])
    assert inhibitor.inhibited_by(make_alert("HighLatency", severity="warning")) == [down.fingerprint]
    assert inhibitor.inhibited_by(make_alert("HighLatency", severity="warning", cluster="eu")) == []


def test_no_alert_inhibits_itself_and_two_sided_matches_do_not_mute_each_other():
    both_sides = rule("alertname=Flapping", "alertname=Flapping", "service")
    first = make_alert("Flapping", service="api", instance="a")
    second = make_alert("Flapping", service="api", instance="b")
    inhibitor = Inhibitor([both_sides], [first, second])
    assert inhibitor.inhibited_by(first) == [] and inhibitor.inhibited_by(second) == []


def test_without_rules_or_sources_nothing_is_inhibited_and_empty_sides_are_refused():
    assert Inhibitor([CRITICAL_MUTES_WARNINGS], []).inhibited_by(make_alert(severity="warning")) == []
    with pytest.raises(MatcherError):
        InhibitRule((), tuple(parse_matchers("severity=warning")))
