"""Alertmanager label matchers: `name=value`, `name!=value`, `name=~regex`, `name!~regex`.

Semantics follow Alertmanager's pkg/labels:
- a missing label matches as the empty string (so `team!="ml"` matches an alert without `team`);
- regexes are fully anchored, `^(?:re)$` in Go; here `re.fullmatch`, because Python's `$` would also
  accept a trailing newline;
- the string syntax is `name op value` with optional whitespace, the value optionally in double
  quotes with OpenMetrics escapes (`\\"`, `\\n`, `\\\\`); a list is comma-separated, optionally in `{}`.

Regex dialects differ at the edges (Go's RE2 vs Python's `re`): no backreferences in RE2; we accept
what Python compiles.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from shared.core.errors import InvalidParameter


class MatcherError(InvalidParameter):
    """A matcher that cannot be parsed or whose regex does not compile."""


class MatchType(StrEnum):
    EQUAL = "="
    NOT_EQUAL = "!="
    REGEX = "=~"
    NOT_REGEX = "!~"


# `=~` and `!~` before `=` so the `~` is not taken as part of the value (as in Alertmanager).
_MATCHER_RE = re.compile(r"^\s*([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(=~|!~|!=|=)\s*(.*?)\s*$", re.DOTALL)


@dataclass(frozen=True)
class Matcher:
    name: str
    type: MatchType
    value: str
    _regex: re.Pattern[str] | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.type in (MatchType.REGEX, MatchType.NOT_REGEX):
            try:
                object.__setattr__(self, "_regex", re.compile(self.value))
            except re.error as exc:
                raise MatcherError(f"invalid regex in matcher {self.name}: {exc}") from None

    def matches_value(self, value: str) -> bool:
        match self.type:
            case MatchType.EQUAL:
                return value == self.value
            case MatchType.NOT_EQUAL:
                return value != self.value
            case MatchType.REGEX:
                return self._regex.fullmatch(value) is not None  # type: ignore[union-attr]
            case MatchType.NOT_REGEX:
                return self._regex.fullmatch(value) is None  # type: ignore[union-attr]

    def matches(self, labels: Mapping[str, str]) -> bool:
        return self.matches_value(labels.get(self.name, ""))

    def __str__(self) -> str:
        escaped = self.value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        return f'{self.name}{self.type}"{escaped}"'

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "type": str(self.type), "value": self.value}


def _unescape(raw: str, source: str) -> str:
    """Alertmanager's unescaping: a quoted value must close at its very end; stray `\\` is literal."""
    expect_closing_quote = raw.startswith('"')
    if expect_closing_quote:
        raw = raw[1:]
    out: list[str] = []
    escaped = False
    for index, char in enumerate(raw):
        last = index == len(raw) - 1
        if escaped:
            escaped = False
            out.append({"n": "\n", '"': '"', "\\": "\\"}.get(char, "\\" + char))
        elif char == "\\" and not last:
            escaped = True
        elif char == '"':
            if not expect_closing_quote or not last:
                raise MatcherError(f"unescaped double quote in matcher value: {source!r}")
            expect_closing_quote = False
        else:
            out.append(char)
    if expect_closing_quote:
        raise MatcherError(f"unterminated quoted value in matcher: {source!r}")
    return "".join(out)


def parse_matcher(text: str) -> Matcher:
    """`severity=~"critical|high"` -> Matcher(name="severity", type=REGEX, value="critical|high")."""
    found = _MATCHER_RE.match(text)
    if found is None:
        raise MatcherError(f"bad matcher format: {text!r}")
    name, operator, raw_value = found.groups()
    return Matcher(name=name, type=MatchType(operator), value=_unescape(raw_value, text))


def _split_outside_quotes(text: str) -> list[str]:
    tokens: list[str] = []
    current: list[str] = []
    inside_quotes = escaped = False
    for char in text:
        if char == "," and not inside_quotes:
            tokens.append("".join(current))
            current = []
            continue
        if char == '"' and not escaped:
            inside_quotes = not inside_quotes
        escaped = char == "\\" and not escaped
        current.append(char)
    tokens.append("".join(current))
    return [token for token in tokens if token.strip()]


def parse_matchers(text: str) -> list[Matcher]:
    """`{severity="critical", model=~"churn.*"}` -> two matchers. Braces and a trailing comma optional."""
    text = text.strip()
    text = text.removeprefix("{").removesuffix("}")
    return [parse_matcher(token) for token in _split_outside_quotes(text)]


def matcher_from_dict(data: Mapping[str, Any]) -> Matcher:
    """Both our own shape `{"name", "type", "value"}` and Alertmanager's API shape
    `{"name", "value", "isRegex", "isEqual"}` (isEqual defaults to true there)."""
    try:
        name, value = str(data["name"]), str(data["value"])
    except KeyError as exc:
        raise MatcherError(f"matcher is missing {exc.args[0]!r}") from None
    if "type" in data:
        try:
            match_type = MatchType(data["type"])
        except ValueError:
            raise MatcherError(f"unknown matcher type {data['type']!r}") from None
    else:
        is_regex, is_equal = bool(data.get("isRegex", False)), bool(data.get("isEqual", True))
        match_type = {
            (False, True): MatchType.EQUAL,
            (False, False): MatchType.NOT_EQUAL,
            (True, True): MatchType.REGEX,
            (True, False): MatchType.NOT_REGEX,
        }[(is_regex, is_equal)]
    if not re.fullmatch(r"[a-zA-Z_:][a-zA-Z0-9_:]*", name):
        raise MatcherError(f"invalid label name {name!r}")
    return Matcher(name=name, type=match_type, value=value)


def coerce_matchers(items: Iterable[str | Mapping[str, Any] | Matcher]) -> list[Matcher]:
    """Matchers as stored in JSON columns: strings, dicts or Matcher objects, mixed."""
    result: list[Matcher] = []
    for item in items:
        if isinstance(item, Matcher):
            result.append(item)
        elif isinstance(item, str):
            result.extend(parse_matchers(item))
        else:
            result.append(matcher_from_dict(item))
    return result


def matches_all(matchers: Iterable[Matcher], labels: Mapping[str, str]) -> bool:
    """An empty matcher list matches everything, as an Alertmanager route without matchers does."""
    return all(matcher.matches(labels) for matcher in matchers)
