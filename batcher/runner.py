"""The batch runner: events in (bounded), batches stored, then published.

Two tasks share the work. The *aggregator* reads the bounded input stream, feeds the pure
``Windows`` core with anyio's clock and queues each closed window as a ``NewBatch``. The
*writer* saves the queued batches in order -- everything queued, up to ``group_max``
batches, in one transaction (group commit) -- and publishes each stored batch to the sink.

A failed save is retried ``retry_attempts`` times, ``retry_delay`` apart; after that the
batches stay queued (the *retry buffer*, bounded by ``retry_buffer`` batches) and are tried
again with backoff, in order, until the store answers. Nothing is dropped: when the buffer
is full the aggregator stops reading, the input stream fills, and ``submit`` waits -- the
producers slow down, which the log and ``stats()`` show.

Shutdown (``aclose()``, or cancellation of the task running ``run()``) flushes every open
window and then the queue, in a shielded scope bounded by ``shutdown_timeout``; batches still
unsaved when that runs out are logged as lost and counted, never dropped silently.
"""

from __future__ import annotations

import enum
import itertools
import logging
import math
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import anyio
import anyio.from_thread
import anyio.lowlevel
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from batcher.events import Batch, Event
from batcher.store import BatchStore, NewBatch, validate_event
from batcher.window import FLUSH_REASONS, ClosedWindow, WindowConfig, WindowLimits, Windows

__all__ = ["BatchRunner", "BatchSink", "BatcherConfig", "RunnerState"]

logger = logging.getLogger(__name__)


@runtime_checkable
class BatchSink(Protocol):
    """Where stored batches go (the hub). ``publish`` must never wait or block."""

    def publish(self, batch: Batch) -> None: ...


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


#: At most one "queue full" warning per this many seconds.
_LOG_INTERVAL = 30.0

#: Events the aggregator takes in one go before letting other tasks run.
_BURST = 256


class RunnerState(enum.Enum):
    NEW = "new"
    RUNNING = "running"
    CLOSING = "closing"
    CLOSED = "closed"


@dataclass(slots=True)
class _Queued:
    batch: NewBatch
    opened_at: float  # anyio clock: when the window's first event arrived


class BatchRunner:
    """Runs the batcher: ``await tg.start(runner.run)``, then ``submit`` events."""

    def __init__(
        self, store: BatchStore, sink: BatchSink, config: BatcherConfig | None = None
    ) -> None:
        if not callable(getattr(sink, "publish", None)):
            raise ValueError(f"sink must have a publish(batch) method, got {sink!r}")
        if not callable(getattr(store, "save_batches", None)):
            raise ValueError(f"store must be a BatchStore, got {store!r}")
        self._store = store
        self._sink = sink
        self._config = config if config is not None else BatcherConfig()
        if not isinstance(self._config, BatcherConfig):
            raise ValueError(f"config must be a BatcherConfig, got {self._config!r}")
        self._windows = Windows(self._config.window_config())
        self._state = RunnerState.NEW
        self._send: MemoryObjectSendStream[Event] | None = None
        self._receive: MemoryObjectReceiveStream[Event] | None = None
        self._token: anyio.lowlevel.EventLoopToken | None = None
        self._cancel: anyio.CancelScope | None = None
        self._queue: deque[_Queued] = deque()
        self._input_done = False
        self._wake_writer = anyio.Event()
        self._space = anyio.Event()
        self._stopped = anyio.Event()
        self._closing = anyio.Event()
        self._graceful_done = anyio.Event()
        self._degraded = False
        self._buffer_full = False
        self._full_logged_at = -math.inf
        self._close_deadline: float | None = None
        self._counters: dict[str, int] = dict.fromkeys(
            (
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
            ),
            0,
        )
        self._latency_last = 0.0
        self._latency_max = 0.0
        self._latency_sum = 0.0
        self._latency_count = 0
        self._store_latency_last = 0.0
        self._store_latency_max = 0.0
        self._store_latency_sum = 0.0
        self._store_latency_count = 0

    @property
    def state(self) -> RunnerState:
        return self._state

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
        if token is None or self._state is not RunnerState.RUNNING:
            raise RuntimeError("cannot submit to a batcher that is not running")
        anyio.from_thread.run(self.submit, event, token=token)

    def _open_input(self) -> MemoryObjectSendStream[Event]:
        if self._state is RunnerState.NEW:
            raise RuntimeError("cannot submit before the batcher runs")
        if self._state is not RunnerState.RUNNING or self._send is None:
            raise RuntimeError("cannot submit to a closed batcher")
        return self._send

    # -- lifecycle -------------------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Run until ``aclose()`` or cancellation; then flush (see the module docstring)."""
        if self._state is not RunnerState.NEW:
            raise RuntimeError("a BatchRunner can run only once")
        send, receive = anyio.create_memory_object_stream[Event](self._config.queue_size)
        self._send, self._receive = send, receive
        self._token = anyio.lowlevel.current_token()
        self._state = RunnerState.RUNNING
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
        try:
            async with anyio.create_task_group() as tg:
                self._cancel = tg.cancel_scope
                tg.start_soon(self._aggregate, receive)
                tg.start_soon(self._write_loop)
                task_status.started()
            self._graceful_done.set()
        finally:
            self._state = RunnerState.CLOSING
            send.close()
            await self._final_flush(receive)
            receive.close()
            self._state = RunnerState.CLOSED
            self._stopped.set()

    async def aclose(self) -> None:
        """Stop accepting events, flush every window and the queue, and wait for ``run`` to
        end (at most ``shutdown_timeout``). Idempotent."""
        if self._state is RunnerState.NEW:
            self._state = RunnerState.CLOSED
            self._stopped.set()
            return
        if self._state is RunnerState.RUNNING:
            self._state = RunnerState.CLOSING
            self._closing.set()
            self._close_deadline = anyio.current_time() + self._config.shutdown_timeout
            if self._send is not None:
                # The aggregator sees the end of the stream after the events already queued.
                self._send.close()
            with anyio.move_on_after(self._config.shutdown_timeout):
                await self._graceful_done.wait()
            if not self._graceful_done.is_set() and self._cancel is not None:
                self._cancel.cancel()
        await self._stopped.wait()

    async def _final_flush(self, receive: MemoryObjectReceiveStream[Event]) -> None:
        # Shielded: this also runs when run() was cancelled, and must still get to the store.
        deadline = self._close_deadline
        if deadline is None:
            deadline = anyio.current_time() + self._config.shutdown_timeout
        with anyio.CancelScope(shield=True, deadline=deadline):
            now = anyio.current_time()
            while True:
                try:
                    event = receive.receive_nowait()
                except (anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
                    break
                self._enqueue(self._windows.add(event, now))
            self._enqueue(self._windows.drain(anyio.current_time()))
            while self._queue:
                await self._write_front(shutting_down=True)
        if self._queue:
            lost = len(self._queue)
            events = sum(q.batch.count for q in self._queue)
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
            self._queue.clear()
        logger.info(
            "batcher stopped: %d events in %d batches, %d stored",
            self._counters["events_batched"],
            self._counters["batches_created"],
            self._counters["batches_stored"],
        )

    # -- aggregator ------------------------------------------------------------------------

    async def _aggregate(self, receive: MemoryObjectReceiveStream[Event]) -> None:
        windows = self._windows
        clock = anyio.current_time
        while True:
            # Take what is queued without waiting, reading the clock once per burst: a burst
            # lasts about a millisecond, well inside the window's resolution.
            now = clock()
            for _ in range(_BURST):
                try:
                    event = receive.receive_nowait()
                except anyio.WouldBlock:
                    break
                except anyio.EndOfStream:
                    self._end_of_input()
                    return
                closed = windows.add(event, now)
                if closed:
                    await self._enqueue_and_wait(closed)
            else:
                # A flood never empties the input: let the writer and others run.
                await anyio.lowlevel.checkpoint()
                continue
            # The input is empty: wait for an event or the next window deadline.
            deadline = windows.next_deadline()
            got = None
            try:
                if deadline is None:
                    got = await receive.receive()
                else:
                    with anyio.move_on_after(deadline - clock()):
                        got = await receive.receive()
            except anyio.EndOfStream:
                self._end_of_input()
                return
            if got is None:
                await self._enqueue_and_wait(windows.poll(clock()))
            else:
                closed = windows.add(got, clock())
                if closed:
                    await self._enqueue_and_wait(closed)

    def _end_of_input(self) -> None:
        self._enqueue(self._windows.drain(anyio.current_time()))
        self._input_done = True
        self._wake_writer.set()

    def _enqueue(self, closed: list[ClosedWindow]) -> None:
        if not closed:
            return
        wall = time.time()
        counters = self._counters
        for window in closed:
            # Encoding here, in the aggregator, overlaps with the store's work on the group
            # before; the writer then only assembles rows.
            self._queue.append(
                _Queued(NewBatch.encoded(window.type, window.events, wall), window.opened_at)
            )
            counters["batches_created"] += 1
            counters["events_batched"] += window.count
            counters[f"flushes_{window.reason}"] += 1
        self._wake_writer.set()

    async def _enqueue_and_wait(self, closed: list[ClosedWindow]) -> None:
        # Queue first, then wait: a cancelled wait must not lose the closed windows.
        self._enqueue(closed)
        if len(self._queue) < self._config.retry_buffer:
            return
        if not self._buffer_full:
            self._buffer_full = True
            self._counters["backpressure_episodes"] += 1
            now = anyio.current_time()
            # Under a sustained flood the queue fills and drains many times a second: one
            # line per ``_LOG_INTERVAL`` says it without flooding the log.
            if now - self._full_logged_at >= _LOG_INTERVAL:
                self._full_logged_at = now
                logger.warning(
                    "batch queue full (%d batches waiting for the store at %s): slowing the "
                    "producers until it catches up (%d times so far)",
                    len(self._queue),
                    self._store.url,
                    self._counters["backpressure_episodes"],
                )
        while len(self._queue) >= self._config.retry_buffer:
            self._space = anyio.Event()
            await self._space.wait()
        self._buffer_full = False

    # -- writer ----------------------------------------------------------------------------

    async def _write_loop(self) -> None:
        while True:
            if not self._queue:
                if self._input_done:
                    return
                self._wake_writer = anyio.Event()
                await self._wake_writer.wait()
                continue
            await self._write_front(shutting_down=False)

    def _record_store_latency(self, seconds: float) -> None:
        self._store_latency_last = seconds
        self._store_latency_max = max(self._store_latency_max, seconds)
        self._store_latency_sum += seconds
        self._store_latency_count += 1

    async def _write_front(self, *, shutting_down: bool) -> None:
        """Save (and then publish) the batches at the front of the queue; returns once they
        are stored. Retries as the module docstring says."""
        group = [q for q in itertools.islice(self._queue, self._config.group_max)]
        config = self._config
        failures = 0
        pause = config.retry_interval
        while True:
            try:
                started = anyio.current_time()
                stored = await self._store.save_batches([q.batch for q in group])
                self._record_store_latency(anyio.current_time() - started)
                break
            except Exception as exc:
                failures += 1
                self._counters["store_errors"] += 1
                if failures <= config.retry_attempts:
                    self._counters["store_retries"] += 1
                    logger.warning(
                        "saving %d batches failed (%s); retry %d of %d in %g s",
                        len(group),
                        exc,
                        failures,
                        config.retry_attempts,
                        config.retry_delay,
                    )
                    await anyio.sleep(config.retry_delay)
                    continue
                if failures == config.retry_attempts + 1:
                    self._counters["store_failures"] += 1
                    self._degraded = True
                if shutting_down or self._closing.is_set():
                    await anyio.sleep(config.retry_delay)
                    continue
                logger.error(
                    "saving %d batches failed after %d retries (%s); %d batches wait in the "
                    "retry buffer (capacity %d), next try in %g s",
                    len(group),
                    config.retry_attempts,
                    exc,
                    len(self._queue),
                    config.retry_buffer,
                    pause,
                )
                # A shutdown cuts the backoff short: its time is better spent trying.
                with anyio.move_on_after(pause):
                    await self._closing.wait()
                pause = min(pause * 2, config.retry_max_interval)
                self._counters["store_retries"] += 1
                # The queue may have grown while waiting: take a bigger group next time.
                group = [q for q in itertools.islice(self._queue, config.group_max)]
        if self._degraded:
            self._degraded = False
            logger.info(
                "store at %s answers again; writing the %d batches that waited",
                self._store.url,
                len(self._queue),
            )
        # Nothing awaits from here on: a batch is popped exactly when it is known stored.
        for _ in group:
            self._queue.popleft()
        self._space.set()
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
            latency = now - queued.opened_at
            self._latency_last = latency
            self._latency_sum += latency
            self._latency_count += 1
            if latency > self._latency_max:
                self._latency_max = latency

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
        out: dict[str, float] = {
            "batching": int(self._config.batching),
            **counters,
            "events_saved": counters["events_batched"] - counters["batches_created"],
            "queued_events": 0 if receive is None else receive.statistics().current_buffer_used,
            "queue_capacity": self._config.queue_size,
            "open_window_events": self._windows.pending_events,
            "pending_batches": len(self._queue),
            "retry_buffer": len(self._queue) if self._degraded else 0,
            "retry_buffer_capacity": self._config.retry_buffer,
            "store_degraded": int(self._degraded),
            "producers_slowed": int(self._buffer_full),
            "store_latency_seconds_last": self._store_latency_last,
            "store_latency_seconds_max": self._store_latency_max,
            "store_latency_seconds_avg": (
                self._store_latency_sum / self._store_latency_count
                if self._store_latency_count else 0.0
            ),
            "window_latency_seconds_last": self._latency_last,
            "window_latency_seconds_max": self._latency_max,
            "window_latency_seconds_sum": self._latency_sum,
            "window_latency_seconds_count": self._latency_count,
            "window_latency_seconds_avg": (
                self._latency_sum / self._latency_count if self._latency_count else 0.0
            ),
        }
        return out
