"""Per-request routing between a deployment's stable and canary versions, and whether to mirror to a shadow."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal, Protocol

from shared.core.errors import InvalidParameter

Target = Literal["stable", "canary"]


class UniformSource(Protocol):
    """Anything with `random() -> float in [0, 1)`: `random.Random`, or a seeded one in tests."""

    def random(self) -> float: ...


@dataclass(frozen=True)
class TrafficPolicy:
    canary_percent: float = 0.0
    shadow_percent: float = 0.0

    def __post_init__(self) -> None:
        for field, value in (("canary_percent", self.canary_percent), ("shadow_percent", self.shadow_percent)):
            if not 0.0 <= value <= 100.0:
                raise InvalidParameter(f"{field} must be between 0 and 100, got {value}")


@dataclass(frozen=True)
class Route:
    target: Target
    mirror_to_shadow: bool


class TrafficSplitter:
    """Weighted random routing; stateless per request so any number of gateway workers agree on the split."""

    def __init__(self, policy: TrafficPolicy, rng: UniformSource | None = None) -> None:
        self.policy = policy
        self.rng: UniformSource = rng if rng is not None else random.Random()

    def choose_target(self) -> Target:
        return "canary" if self.rng.random() * 100.0 < self.policy.canary_percent else "stable"

    def should_mirror(self) -> bool:
        return self.rng.random() * 100.0 < self.policy.shadow_percent

    def route(self) -> Route:
        return Route(target=self.choose_target(), mirror_to_shadow=self.should_mirror())
