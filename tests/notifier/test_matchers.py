from __future__ import annotations

import pytest

from services.notifier.domain.matchers import (
    Matcher,
    MatcherError,
    MatchType,
    coerce_matchers,
    matcher_from_dict,
    matches_all,
    parse_matcher,
    parse_matchers,
)


@pytest.mark.parametrize(
    ("text", "name", "match_type", "value"),
    [
        ('severity=~"critical|high"', "severity", MatchType.REGEX, "critical|high"),
        ("team = ml", "team", MatchType.EQUAL, "ml"),
        ('env!="prod"', "env", MatchType.NOT_EQUAL, "prod"),
        ('model!~"test-.*"', "model", MatchType.NOT_REGEX, "test-.*"),
        ('msg="say \\"hi\\", then\\nleave"', "msg", MatchType.EQUAL, 'say "hi", then\nleave'),
        ('empty=""', "empty", MatchType.EQUAL, ""),
    ],
)
def test_parse_matcher(text: str, name: str, match_type: MatchType, value: str):
    assert parse_matcher(text) == Matcher(name, match_type, value)


def test_parse_list_with_braces_quoted_commas_and_trailing_comma():
    matchers = parse_matchers('{severity=~"critical|high", summary="a, b", }')
    assert [str(matcher) for matcher in matchers] == ['severity=~"critical|high"', 'summary="a, b"']


@pytest.mark.parametrize("text", ["=x", "1abc=x", 'a="unterminated', 'a="x"y"', "a=~(", "a"])
def test_bad_matchers_are_rejected(text: str):
    with pytest.raises(MatcherError):
        parse_matcher(text)


def test_regex_is_fully_anchored():
    matcher = parse_matcher('severity=~"critical|high"')
    assert matcher.matches({"severity": "critical"})
    assert matcher.matches({"severity": "high"})
    assert not matcher.matches({"severity": "highest"})
    assert not matcher.matches({"severity": "not-critical"})
    # Python's `$` alone would accept a trailing newline.
    assert not matcher.matches({"severity": "critical\n"})
    assert parse_matcher('model!~"test-.*"').matches({"model": "prod-test-1"})


def test_missing_label_matches_as_empty_string():
    assert parse_matcher('team!="ml"').matches({})
    assert parse_matcher('team=""').matches({})
    assert not parse_matcher('team="ml"').matches({})
    assert parse_matcher('team=~"ml|"').matches({})


def test_from_dict_in_both_shapes():
    assert matcher_from_dict({"name": "env", "type": "!=", "value": "dev"}) == Matcher(
        "env", MatchType.NOT_EQUAL, "dev"
    )
    alertmanager_shape = {"name": "severity", "value": "crit.*", "isRegex": True, "isEqual": False}
    assert matcher_from_dict(alertmanager_shape) == Matcher("severity", MatchType.NOT_REGEX, "crit.*")
    assert matcher_from_dict({"name": "a", "value": "b"}).type is MatchType.EQUAL
    with pytest.raises(MatcherError):
        matcher_from_dict({"name": "bad name", "value": "b"})
    with pytest.raises(MatcherError):
        matcher_from_dict({"name": "a"})


def test_mixed_stored_forms_and_conjunction():
    matchers = coerce_matchers(['severity=~"critical|high"', {"name": "project", "value": "fraud"}])
    labels = {"severity": "high", "project": "fraud"}
    assert matches_all(matchers, labels)
    assert not matches_all(matchers, {**labels, "project": "churn"})
    assert matches_all([], labels)
    # Both stored forms round-trip.
    assert [parse_matcher(str(matcher)) for matcher in matchers] == matchers
    assert [matcher_from_dict(matcher.to_dict()) for matcher in matchers] == matchers
