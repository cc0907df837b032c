"""The alert value the notifier works on: platform events become alerts with labels.

An alert is identified by its label set (its fingerprint), as in Alertmanager. One-shot events
(deployment failed, version promoted) are alerts too; their producer decides whether and when they
resolve by setting `ends_at`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from functools import cached_property
from types import MappingProxyType

# Highest first; unknown severities rank below all of these.
SEVERITY_ORDER = ("critical", "high", "warning", "info")


class AlertStatus(StrEnum):
    FIRING = "firing"
    RESOLVED = "resolved"


def label_fingerprint(labels: Mapping[str, str]) -> str:
    """Stable 64-bit hex id of a label set (Alertmanager hashes sorted name/value pairs the same way)."""
    digest = hashlib.blake2b(digest_size=8)
    for name in sorted(labels):
        digest.update(name.encode() + b"\xff" + labels[name].encode() + b"\xff")
    return digest.hexdigest()


def severity_rank(severity: str | None) -> int:
    """0 for the most severe; used to pick a group's headline severity."""
    normalized = (severity or "").lower()
    return SEVERITY_ORDER.index(normalized) if normalized in SEVERITY_ORDER else len(SEVERITY_ORDER)


@dataclass(frozen=True)
class Alert:
    labels: Mapping[str, str]
    starts_at: datetime
    ends_at: datetime | None = None
    annotations: Mapping[str, str] = field(default_factory=dict)
    # Where the alert can be inspected in Tessera (or the producer).
    url: str | None = None

    def __post_init__(self) -> None:
        # Read-only views: an alert's identity is its labels, so they must not change under us.
        object.__setattr__(self, "labels", MappingProxyType(dict(self.labels)))
        object.__setattr__(self, "annotations", MappingProxyType(dict(self.annotations)))

    def __hash__(self) -> int:
        # The generated hash would fail on the label mappings; identity and timing are enough.
        return hash((self.fingerprint, self.starts_at, self.ends_at))

    @cached_property
    def fingerprint(self) -> str:
        # Computed once: grouping, dedup and rendering each ask for it several times.
        return label_fingerprint(self.labels)

    @property
    def name(self) -> str:
        return self.labels.get("alertname", "")

    def is_resolved_at(self, now: datetime) -> bool:
        """Alertmanager's ResolvedAt: an end time that is not after `now`."""
        return self.ends_at is not None and self.ends_at <= now

    def status_at(self, now: datetime) -> AlertStatus:
        return AlertStatus.RESOLVED if self.is_resolved_at(now) else AlertStatus.FIRING


def common_labels(alerts: Iterable[Alert]) -> dict[str, str]:
    """Labels with the same value on every alert (Alertmanager's CommonLabels)."""
    alerts = list(alerts)
    if not alerts:
        return {}
    shared = dict(alerts[0].labels)
    for alert in alerts[1:]:
        shared = {name: value for name, value in shared.items() if alert.labels.get(name) == value}
    return shared
