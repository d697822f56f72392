"""When the runner tries a failed save again: a pure schedule, no clock, no awaiting.

A failed group commit is retried ``attempts`` times, ``delay`` apart (quick retries: a
dropped connection usually comes back at once). After that the store counts as degraded
and the group is tried again with exponential backoff -- ``interval``, doubling, capped at
``max_interval`` -- until the store answers.

Why not ``stream.electrum.policy.Backoff``: the batcher never imports ``stream`` (it is the
lower layer), and that class covers only the second phase. The doubling rule is the same
(``base * 2 ** (n - 1)``, capped), written here for the batcher's two phases. The schedule
is a function of the failure count alone, so a test drives it with a fake clock and the
runner just sleeps what it says.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["RetrySchedule", "RetryStep"]

# Past this exponent the pause is the cap anyway; bounding it keeps 2 ** n a float.
_MAX_EXPONENT = 64


@dataclass(frozen=True, slots=True)
class RetryStep:
    """What to do after the ``failures``-th consecutive failure of one save.

    ``quick``: one of the quick retries (``retry k of n``); otherwise a backoff step.
    ``exhausted``: this failure used up the quick retries (the store is now degraded).
    ``delay``: seconds to wait before the next try.
    """

    failures: int
    quick: bool
    exhausted: bool
    delay: float


@dataclass(frozen=True, slots=True)
class RetrySchedule:
    """``attempts`` quick retries ``delay`` apart, then backoff from ``interval`` to
    ``max_interval``."""

    attempts: int
    delay: float
    interval: float
    max_interval: float

    def __post_init__(self) -> None:
        if self.attempts < 0:
            raise ValueError(f"attempts must be >= 0, got {self.attempts}")
        if not math.isfinite(self.delay) or self.delay < 0:
            raise ValueError(f"delay must be a finite number >= 0, got {self.delay}")
        if not math.isfinite(self.interval) or self.interval <= 0:
            raise ValueError(f"interval must be a finite number > 0, got {self.interval}")
        if not math.isfinite(self.max_interval) or self.max_interval < self.interval:
            raise ValueError(
                f"max_interval must be >= interval ({self.interval}), got {self.max_interval}"
            )

    def step(self, failures: int) -> RetryStep:
        """The step after ``failures`` (>= 1) consecutive failures of one save."""
        if failures < 1:
            raise ValueError(f"failures must be >= 1, got {failures}")
        if failures <= self.attempts:
            return RetryStep(failures, quick=True, exhausted=False, delay=self.delay)
        backoffs = failures - self.attempts
        exponent = min(backoffs - 1, _MAX_EXPONENT)
        pause = min(self.interval * 2.0**exponent, self.max_interval)
        return RetryStep(failures, quick=False, exhausted=backoffs == 1, delay=pause)
