"""The batch runner: events in (bounded), batches stored, then published.

Two tasks share the work. The *aggregator* (``batcher.aggregate``) reads the bounded input
stream, feeds the pure ``Windows`` core with anyio's clock and queues each closed window as a
``NewBatch`` (``batcher.pending``). The *writer* (``batcher.commit``) saves the queued
batches in order -- everything queued, up to ``group_max`` batches, in one transaction
(group commit) -- and publishes each stored batch to the sink. The state is one
``RunnerState`` (``batcher.lifecycle``); the limits are ``BatcherConfig``
(``batcher.config``).

A failed save is retried ``retry_attempts`` times, ``retry_delay`` apart; after that the
batches stay queued (the *retry buffer*, bounded by ``retry_buffer`` batches) and are tried
again with backoff, in order, until the store answers (``batcher.retry``). Nothing is
dropped: when the buffer is full the aggregator stops reading, the input stream fills, and
``submit`` waits -- the producers slow down, which the log and ``stats()`` show.

Shutdown (``aclose()``, or cancellation of the task running ``run()``) flushes every open
window and then the queue, in a shielded scope bounded by ``shutdown_timeout``; batches still
unsaved when that runs out are logged as lost and counted, never dropped silently.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable

import anyio
import anyio.from_thread
import anyio.lowlevel
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from batcher.aggregate import Aggregator
from batcher.commit import BatchSink, GroupWriter
from batcher.config import BatcherConfig
from batcher.events import Event
from batcher.lifecycle import Lifecycle, RunnerState
from batcher.pending import PendingBatches
from batcher.store import BatchLog, validate_event
from batcher.window import FLUSH_REASONS

__all__ = ["BatchRunner", "BatchSink", "BatcherConfig", "RunnerState"]

logger = logging.getLogger(__name__)

_COUNTERS = (
    "events_received",
    "events_batched",
    "batches_created",
    "batches_stored",
    "batches_published",
    "store_errors",
    "store_retries",
    "store_failures",
    "backpressure_episodes",
    "publish_errors",
    "batches_lost",
    "events_lost",
    *(f"flushes_{reason}" for reason in FLUSH_REASONS),
)


class BatchRunner:
    """Runs the batcher: ``await tg.start(runner.run)``, then ``submit`` events.

    ``store`` is only the batch log it writes (``BatchLog``); ``sink`` gets each stored batch.
    """

    def __init__(
        self, store: BatchLog, sink: BatchSink, config: BatcherConfig | None = None
    ) -> None:
        if not callable(getattr(sink, "publish", None)):
            raise ValueError(f"sink must have a publish(batch) method, got {sink!r}")
        if not callable(getattr(store, "save_batches", None)):
            raise ValueError(f"store must be a BatchLog (save_batches), got {store!r}")
        self._config = config if config is not None else BatcherConfig()
        if not isinstance(self._config, BatcherConfig):
            raise ValueError(f"config must be a BatcherConfig, got {self._config!r}")
        self._store = store
        self._lifecycle = Lifecycle()
        self._pending = PendingBatches()
        self._counters: dict[str, int] = dict.fromkeys(_COUNTERS, 0)
        self._aggregator = Aggregator(
            self._config, pending=self._pending, counters=self._counters, store_url=store.url
        )
        self._writer = GroupWriter(
            store, sink, self._config,
            pending=self._pending, lifecycle=self._lifecycle, counters=self._counters,
        )
        # Set by run(): the input stream, the loop's token (for submit_threadsafe) and the
        # tasks' scope, whose deadline aclose() sets to bound the shutdown.
        self._send: MemoryObjectSendStream[Event] | None = None
        self._receive: MemoryObjectReceiveStream[Event] | None = None
        self._token: anyio.lowlevel.EventLoopToken | None = None
        self._scope: anyio.CancelScope | None = None

    @property
    def state(self) -> RunnerState:
        return self._lifecycle.state

    @property
    def config(self) -> BatcherConfig:
        return self._config

    # -- input -----------------------------------------------------------------------------

    async def submit(self, event: Event) -> None:
        """Queue ``event``; waits while the input is full (backpressure).

        Does not yield to other tasks when there is room, like ``asyncio.Queue.put``.
        Raises ``ValueError`` for an event that cannot be stored, ``RuntimeError`` when the
        batcher is not running.
        """
        validate_event(event)
        send = self._open_input()
        try:
            send.send_nowait(event)
        except anyio.WouldBlock:
            try:
                await send.send(event)
            except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                raise RuntimeError("cannot submit to a closed batcher") from None
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            raise RuntimeError("cannot submit to a closed batcher") from None
        self._counters["events_received"] += 1

    async def submit_many(self, events: Iterable[Event]) -> None:
        """``submit`` each of ``events`` in order."""
        for event in events:
            await self.submit(event)

    def submit_threadsafe(self, event: Event) -> None:
        """``submit`` from another thread; blocks that thread while the input is full."""
        token = self._token
        if token is None or self.state is not RunnerState.RUNNING:
            raise RuntimeError("cannot submit to a batcher that is not running")
        anyio.from_thread.run(self.submit, event, token=token)

    def _open_input(self) -> MemoryObjectSendStream[Event]:
        if self.state is RunnerState.NEW:
            raise RuntimeError("cannot submit before the batcher runs")
        if self.state is not RunnerState.RUNNING or self._send is None:
            raise RuntimeError("cannot submit to a closed batcher")
        return self._send

    # -- lifecycle -------------------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Run until ``aclose()`` or cancellation; then flush (see the module docstring)."""
        if self.state is not RunnerState.NEW:
            raise RuntimeError("a BatchRunner can run only once")
        send, receive = anyio.create_memory_object_stream[Event](self._config.queue_size)
        self._send, self._receive = send, receive
        self._token = anyio.lowlevel.current_token()
        # Made before the state says RUNNING, so aclose() always finds a scope to bound.
        scope = self._scope = anyio.CancelScope()
        self._lifecycle.advance(RunnerState.RUNNING)
        self._log_start()
        try:
            with scope:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._aggregator.run, receive)
                    tg.start_soon(self._writer.run)
                    task_status.started()
        finally:
            self._lifecycle.advance(RunnerState.CLOSING)
            send.close()
            await self._final_flush(receive)
            receive.close()
            self._lifecycle.advance(RunnerState.CLOSED)

    async def aclose(self) -> None:
        """Stop accepting events, flush every window and the queue, and wait for ``run`` to
        end (at most ``shutdown_timeout``). Idempotent."""
        if self.state is RunnerState.NEW:
            self._lifecycle.advance(RunnerState.CLOSED)
            return
        if self.state is RunnerState.RUNNING:
            self._lifecycle.advance(RunnerState.CLOSING)
            if self._send is not None:
                # The aggregator sees the end of the stream after the events already queued.
                self._send.close()
            if self._scope is not None:
                # Past the deadline the tasks are cancelled and the final flush gives up.
                self._scope.deadline = anyio.current_time() + self._config.shutdown_timeout
        await self._lifecycle.reached(RunnerState.CLOSED)

    def _log_start(self) -> None:
        config = self._config
        logger.info(
            "batcher running: batching %s, window %d events / %g ms, per type %s, "
            "queue %d events, retry buffer %d batches, group commit up to %d batches",
            "on" if config.batching else "off",
            config.window_events,
            config.window_ms,
            {t: (lim.max_events, lim.max_age * 1000) for t, lim in config.per_type.items()},
            config.queue_size,
            config.retry_buffer,
            config.group_max,
        )

    async def _final_flush(self, receive: MemoryObjectReceiveStream[Event]) -> None:
        # Shielded: this also runs when run() was cancelled, and must still get to the store.
        # The deadline is aclose()'s, or starts now when run() was cancelled from outside.
        deadline = math.inf if self._scope is None else self._scope.deadline
        if deadline == math.inf:
            deadline = anyio.current_time() + self._config.shutdown_timeout
        with anyio.CancelScope(shield=True, deadline=deadline):
            self._aggregator.flush(receive)
            while self._pending:
                await self._writer.write_front()
        if self._pending:
            self._count_lost()
        counters = self._counters
        logger.info(
            "batcher stopped: %d events in %d batches, %d stored",
            counters["events_batched"],
            counters["batches_created"],
            counters["batches_stored"],
        )

    def _count_lost(self) -> None:
        lost, events = len(self._pending), self._pending.events
        self._counters["batches_lost"] += lost
        self._counters["events_lost"] += events
        logger.error(
            "shutdown: the store at %s could not take %d batches (%d events) in %g s; "
            "they are lost",
            self._store.url,
            lost,
            events,
            self._config.shutdown_timeout,
        )
        self._pending.clear()

    # -- figures ---------------------------------------------------------------------------

    def stats(self) -> dict[str, float]:
        """Plain numbers for ``/api/v1/stats`` and ``/metrics`` (flags are 0 or 1).

        Counters only grow: ``events_saved`` is the messages batching avoided
        (``events_batched - batches_created``); ``flushes_*`` count windows closed by size,
        time or shutdown; ``store_retries`` / ``store_errors`` / ``store_failures`` count
        retried saves, failed save attempts, and groups that exhausted their quick retries.
        ``window_latency_seconds_*`` measure a window's first event to its batch published;
        ``store_latency_seconds_*`` the time one group of batches took to save.
        """
        counters = self._counters
        receive = self._receive
        writer = self._writer
        degraded = writer.degraded
        store, window = writer.store_latency, writer.window_latency
        return {
            "batching": int(self._config.batching),
            **counters,
            "events_saved": counters["events_batched"] - counters["batches_created"],
            "queued_events": 0 if receive is None else receive.statistics().current_buffer_used,
            "queue_capacity": self._config.queue_size,
            "open_window_events": self._aggregator.windows.pending_events,
            "pending_batches": len(self._pending),
            "retry_buffer": len(self._pending) if degraded else 0,
            "retry_buffer_capacity": self._config.retry_buffer,
            "store_degraded": int(degraded),
            "producers_slowed": int(self._aggregator.slowed),
            "store_latency_seconds_last": store.last,
            "store_latency_seconds_max": store.max,
            "store_latency_seconds_avg": store.avg,
            "window_latency_seconds_last": window.last,
            "window_latency_seconds_max": window.max,
            "window_latency_seconds_sum": window.sum,
            "window_latency_seconds_count": window.count,
            "window_latency_seconds_avg": window.avg,
        }
