"""The writer: saves the front of the queue as one group commit, then publishes it.

Each concern has its own method: ``_save`` retries by the ``RetrySchedule``; ``_failed`` and
``_recovered`` keep the degraded state and say so in the log; ``_publish`` pops what is
stored, hands it to the sink and records each window's latency. A batch leaves the queue
only once it is known stored, so a save that raised is simply tried again (the store makes
that idempotent per ``batch_id``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import anyio

from batcher.config import BatcherConfig
from batcher.events import Batch
from batcher.latency import Latency
from batcher.lifecycle import Lifecycle, RunnerState
from batcher.pending import PendingBatches, Queued
from batcher.retry import RetryStep
from batcher.store import BatchLog

__all__ = ["BatchSink", "GroupWriter"]

# The runner's logger: these lines were always "batcher.runner"'s, and log configs name it.
logger = logging.getLogger("batcher.runner")


@runtime_checkable
class BatchSink(Protocol):
    """Where stored batches go (the hub). ``publish`` must never wait or block."""

    def publish(self, batch: Batch) -> None: ...


class GroupWriter:
    """Writes ``pending`` to ``log`` in order and publishes to ``sink``.

    ``counters`` is the runner's (shared, so ``stats()`` reads one dict). ``degraded`` is
    true from the save that used up its quick retries until the next save that succeeds.
    """

    def __init__(
        self,
        log: BatchLog,
        sink: BatchSink,
        config: BatcherConfig,
        *,
        pending: PendingBatches,
        lifecycle: Lifecycle,
        counters: dict[str, int],
    ) -> None:
        self._log = log
        self._sink = sink
        self._config = config
        self._schedule = config.retry_schedule()
        self._pending = pending
        self._lifecycle = lifecycle
        self._counters = counters
        self.degraded = False
        #: A window's first event to its batch published.
        self.window_latency = Latency()
        #: One group of batches saved.
        self.store_latency = Latency()

    async def run(self) -> None:
        """Write until the queue is empty and will get no more."""
        while await self._pending.wait_for_work():
            await self.write_front()

    async def write_front(self) -> None:
        """Save (and then publish) the batches at the front of the queue; returns once they
        are stored."""
        group = self._pending.front(self._config.group_max)
        group, stored = await self._save(group)
        self._recovered()
        self._publish(group, stored)

    # -- retry -----------------------------------------------------------------------------

    async def _save(self, group: list[Queued]) -> tuple[list[Queued], list[Batch]]:
        """Save ``group`` (or, after a backoff, the bigger front of the queue) until it is
        stored; return what was saved and its stored form."""
        failures = 0
        while True:
            try:
                started = anyio.current_time()
                stored = await self._log.save_batches([q.batch for q in group])
            except Exception as exc:
                failures += 1
                step = self._schedule.step(failures)
                self._failed(step, len(group), exc)
                if await self._wait_out(step):
                    # The queue may have grown while waiting: take a bigger group.
                    group = self._pending.front(self._config.group_max)
                continue
            self.store_latency.record(anyio.current_time() - started)
            return group, stored

    async def _wait_out(self, step: RetryStep) -> bool:
        """Sleep before the next try; True after a backoff (the queue may have grown)."""
        if step.quick or self._lifecycle.closing:
            # Shutting down: no backoff, its time is better spent trying.
            await anyio.sleep(self._schedule.delay)
            return False
        # A shutdown cuts the backoff short.
        with anyio.move_on_after(step.delay):
            await self._lifecycle.reached(RunnerState.CLOSING)
        self._counters["store_retries"] += 1
        return True

    # -- degraded state --------------------------------------------------------------------

    def _failed(self, step: RetryStep, size: int, exc: Exception) -> None:
        counters = self._counters
        counters["store_errors"] += 1
        config = self._config
        if step.quick:
            counters["store_retries"] += 1
            logger.warning(
                "saving %d batches failed (%s); retry %d of %d in %g s",
                size,
                exc,
                step.failures,
                config.retry_attempts,
                step.delay,
            )
            return
        if step.exhausted:
            counters["store_failures"] += 1
            self.degraded = True
        if self._lifecycle.closing:
            return
        logger.error(
            "saving %d batches failed after %d retries (%s); %d batches wait in the "
            "retry buffer (capacity %d), next try in %g s",
            size,
            config.retry_attempts,
            exc,
            len(self._pending),
            config.retry_buffer,
            step.delay,
        )

    def _recovered(self) -> None:
        if not self.degraded:
            return
        self.degraded = False
        logger.info(
            "store at %s answers again; writing the %d batches that waited",
            self._log.url,
            len(self._pending),
        )

    # -- publishing ------------------------------------------------------------------------

    def _publish(self, group: Sequence[Queued], stored: Sequence[Batch]) -> None:
        # Nothing awaits here: a batch is popped exactly when it is known stored.
        self._pending.pop_front(len(group))
        now = anyio.current_time()
        counters = self._counters
        counters["batches_stored"] += len(stored)
        for queued, batch in zip(group, stored, strict=True):
            try:
                self._sink.publish(batch)
            except Exception:
                counters["publish_errors"] += 1
                logger.exception("publishing batch %d failed (it is stored)", batch.seq)
            else:
                counters["batches_published"] += 1
            self.window_latency.record(now - queued.opened_at)
