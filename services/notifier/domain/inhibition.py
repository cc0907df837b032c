"""Alertmanager's inhibition: while a source alert fires, target alerts that share its `equal` labels
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

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from services.notifier.domain.alerts import Alert
from services.notifier.domain.matchers import Matcher, MatcherError, matches_all


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
