"""The batcher's limits: every one named, defaulted and validated when the config is made."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from batcher.retry import RetrySchedule
from batcher.window import WindowConfig, WindowLimits

__all__ = ["BatcherConfig"]


@dataclass(frozen=True, slots=True)
class BatcherConfig:
    """Every limit of the batcher, named, defaulted and validated.

    ``window_events`` / ``window_ms``: a window closes at this many events or this long after
    its first event; ``per_type`` overrides them for some types (``WindowLimits(max_events=1)``
    flushes a type at once). ``batching=False`` makes each event its own batch.
    ``queue_size``: events waiting for the aggregator before ``submit`` waits.
    ``retry_attempts`` / ``retry_delay``: quick retries of a failed save.
    ``retry_buffer``: batches kept while the store is failing before producers are slowed.
    ``retry_interval`` / ``retry_max_interval``: backoff between later tries.
    ``group_max``: most batches saved in one transaction.
    ``shutdown_timeout``: how long shutdown may spend flushing.
    """

    window_events: int = 10
    window_ms: float = 500.0
    per_type: Mapping[str, WindowLimits] = field(default_factory=dict)
    batching: bool = True
    queue_size: int = 10_000
    retry_attempts: int = 2
    retry_delay: float = 0.5
    retry_buffer: int = 1_000
    retry_interval: float = 1.0
    retry_max_interval: float = 30.0
    group_max: int = 500
    shutdown_timeout: float = 10.0

    def __post_init__(self) -> None:
        _positive_int("window_events", self.window_events)
        _number("window_ms", self.window_ms, minimum=0.0)
        _positive_int("queue_size", self.queue_size)
        if isinstance(self.retry_attempts, bool) or not isinstance(self.retry_attempts, int):
            raise ValueError(f"retry_attempts must be an integer, got {self.retry_attempts!r}")
        if self.retry_attempts < 0:
            raise ValueError(f"retry_attempts must be >= 0, got {self.retry_attempts}")
        _number("retry_delay", self.retry_delay, minimum=0.0)
        _positive_int("retry_buffer", self.retry_buffer)
        _number("retry_interval", self.retry_interval, minimum=0.0, strict=True)
        _number("retry_max_interval", self.retry_max_interval, minimum=0.0, strict=True)
        if self.retry_max_interval < self.retry_interval:
            raise ValueError(
                f"retry_max_interval must be >= retry_interval ({self.retry_interval}), "
                f"got {self.retry_max_interval}"
            )
        _positive_int("group_max", self.group_max)
        _number("shutdown_timeout", self.shutdown_timeout, minimum=0.0, strict=True)
        # Builds and validates the per-type limits now, not at the first event.
        self.window_config()

    def retry_schedule(self) -> RetrySchedule:
        """When a failed save is tried again (see ``batcher.retry``)."""
        return RetrySchedule(
            attempts=self.retry_attempts,
            delay=self.retry_delay,
            interval=self.retry_interval,
            max_interval=self.retry_max_interval,
        )

    def window_config(self) -> WindowConfig:
        """The limits for the pure window core."""
        return WindowConfig(
            default=WindowLimits(max_events=self.window_events, max_age=self.window_ms / 1000),
            per_type=self.per_type,
            enabled=self.batching,
        )


def _positive_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")


def _number(name: str, value: object, *, minimum: float, strict: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if not math.isfinite(value) or value < minimum or (strict and value == minimum):
        op = ">" if strict else ">="
        raise ValueError(f"{name} must be a finite number {op} {minimum:g}, got {value}")
