"""One latency accumulator for every figure the runner reports (pure, no clock).

The caller measures and ``record``s seconds; the accumulator keeps the last, the largest,
the sum and the count, from which ``avg`` follows. The runner keeps two: a window's first
event to its batch published, and one group commit's save.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Latency"]


@dataclass(slots=True)
class Latency:
    """Running figures of a latency, in seconds (all 0 until the first ``record``)."""

    last: float = 0.0
    max: float = 0.0
    sum: float = 0.0
    count: int = 0

    def record(self, seconds: float) -> None:
        """Add one measurement."""
        self.last = seconds
        if seconds > self.max:
            self.max = seconds
        self.sum += seconds
        self.count += 1

    @property
    def avg(self) -> float:
        """The mean of every measurement (0 before the first)."""
        return self.sum / self.count if self.count else 0.0
