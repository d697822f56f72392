"""Pure pool policies: growth, server selection, back-off and tip agreement.

No I/O and no clock reads: callers pass the numbers (and ``now``) in, so every rule is
unit-tested synchronously.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

__all__ = [
    "Backoff",
    "GrowthPolicy",
    "RoundRobin",
    "lagging",
    "least_loaded",
    "majority_tip",
]

K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True, slots=True)
class GrowthPolicy:
    """How many servers the pool should have open.

    ``requests`` counts JSON-RPC requests since the pool started (a batch counts each of its
    de-duplicated items: a batch of 400 is 400 requests on the wire). The first ``burst``
    requests open one server each; then one more every ``step`` requests until ``min_size``;
    when more than ``surge_in_flight`` requests are in flight, ``surge_step`` more at once,
    up to ``max_size``. Never more than ``available`` (the configured list).
    """

    burst: int = 5
    step: int = 10
    min_size: int = 15
    surge_in_flight: int = 50
    surge_step: int = 2
    max_size: int = 30

    def __post_init__(self) -> None:
        for name in ("burst", "step", "min_size", "surge_step", "max_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.surge_in_flight < 0:
            raise ValueError(f"surge_in_flight must be >= 0, got {self.surge_in_flight}")
        if self.min_size > self.max_size:
            raise ValueError(
                f"min_size must be <= max_size, got {self.min_size} > {self.max_size}"
            )

    def target(self, *, requests: int, in_flight: int, size: int, available: int) -> int:
        """The pool size wanted now (never below ``size``: the pool does not shrink)."""
        if requests <= self.burst:
            base = requests
        else:
            base = self.burst + (requests - self.burst) // self.step
        wanted = max(size, min(base, self.min_size))
        if in_flight > self.surge_in_flight:
            wanted = max(wanted, size + self.surge_step)
        return max(size, min(wanted, self.max_size, available))


class RoundRobin:
    """Round-robin over a candidate list that may change between picks."""

    __slots__ = ("_counter",)

    def __init__(self) -> None:
        self._counter = 0

    def pick(self, candidates: Sequence[K]) -> K | None:
        if not candidates:
            return None
        choice = candidates[self._counter % len(candidates)]
        self._counter += 1
        return choice


def least_loaded(loads: Mapping[K, int], count: int | None = None) -> list[K]:
    """Keys sorted by load, least first (stable: ties keep the mapping's order)."""
    ordered = sorted(loads, key=lambda key: loads[key])
    return ordered if count is None else ordered[:count]


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential back-off: ``base * factor ** (failures - 1)``, capped at ``maximum``."""

    base: float = 1.0
    factor: float = 2.0
    maximum: float = 300.0

    def __post_init__(self) -> None:
        if self.base <= 0:
            raise ValueError(f"backoff_base must be > 0, got {self.base}")
        if self.factor < 1:
            raise ValueError(f"backoff_factor must be >= 1, got {self.factor}")
        if self.maximum < self.base:
            raise ValueError(f"backoff_max must be >= backoff_base, got {self.maximum}")

    def delay(self, failures: int) -> float:
        """Seconds to keep away after ``failures`` consecutive failures (0 for none)."""
        if failures <= 0:
            return 0.0
        # Cap the exponent so huge failure counts cannot overflow a float.
        return min(self.maximum, self.base * self.factor ** min(failures - 1, 64))


def majority_tip(tips: Iterable[int]) -> int | None:
    """The highest height that a majority of servers have reached (None if no tips)."""
    ordered = sorted(tips, reverse=True)
    if not ordered:
        return None
    return ordered[len(ordered) // 2]


def lagging(tips: Mapping[K, int], max_lag: int = 1) -> set[K]:
    """Servers whose tip is more than ``max_lag`` blocks behind the majority."""
    majority = majority_tip(tips.values())
    if majority is None:
        return set()
    return {key for key, tip in tips.items() if tip < majority - max_lag}
