"""Per-request routing between a deployment's stable and canary versions, and whether to mirror to a shadow."""

from __future__ import annotations

import hashlib
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


def sticky_point(key: bytes) -> float:
    """A key's fixed point in [0, 100), the same in every process (not Python's salted hash)."""
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big") % 10_000 / 100.0


class TrafficSplitter:
    """Weighted random routing; stateless per request so any number of gateway workers agree on the split."""

    def __init__(self, policy: TrafficPolicy, rng: UniformSource | None = None) -> None:
        self.policy = policy
        self.rng: UniformSource = rng if rng is not None else random.Random()

    def choose_target(self, sticky_key: bytes | None = None) -> Target:
        """Random, or by `sticky_key` (a user id, say): a key's point in [0, 100) is fixed, so it keeps its
        version in every gateway process, and the keys below a growing canary share stay on the canary."""
        point = self.rng.random() * 100.0 if sticky_key is None else sticky_point(sticky_key)
        return "canary" if point < self.policy.canary_percent else "stable"

    def should_mirror(self) -> bool:
        return self.rng.random() * 100.0 < self.policy.shadow_percent

    def route(self) -> Route:
        return Route(target=self.choose_target(), mirror_to_shadow=self.should_mirror())
