"""The runner's pure parts, driven synchronously: the latency accumulator, the retry
schedule (with a fake clock), the lifecycle and the pending queue."""

from __future__ import annotations

import anyio
import pytest

from batcher.config import BatcherConfig
from batcher.events import Event
from batcher.latency import Latency
from batcher.lifecycle import Lifecycle, RunnerState
from batcher.pending import PendingBatches, Queued
from batcher.retry import RetrySchedule, RetryStep
from batcher.store import NewBatch


def test_latency_keeps_last_max_sum_count_and_avg() -> None:
    latency = Latency()
    assert (latency.last, latency.max, latency.sum, latency.count, latency.avg) == (0, 0, 0, 0, 0)
    for seconds in (0.25, 1.0, 0.5):
        latency.record(seconds)
    assert latency.last == 0.5
    assert latency.max == 1.0
    assert latency.sum == 1.75
    assert latency.count == 3
    assert latency.avg == pytest.approx(1.75 / 3)


def test_latency_max_is_the_largest_even_when_it_came_first() -> None:
    latency = Latency()
    latency.record(3.0)
    latency.record(0.1)
    assert (latency.last, latency.max) == (0.1, 3.0)


def test_retry_schedule_quick_retries_then_doubling_backoff_up_to_the_cap() -> None:
    schedule = RetrySchedule(attempts=2, delay=0.5, interval=1.0, max_interval=5.0)
    steps = [schedule.step(n) for n in range(1, 8)]
    assert steps[:3] == [
        RetryStep(1, quick=True, exhausted=False, delay=0.5),
        RetryStep(2, quick=True, exhausted=False, delay=0.5),
        RetryStep(3, quick=False, exhausted=True, delay=1.0),
    ]
    assert [s.delay for s in steps[3:]] == [2.0, 4.0, 5.0, 5.0]
    assert not any(s.quick or s.exhausted for s in steps[3:])
    # Huge failure counts stay at the cap instead of overflowing.
    assert schedule.step(10_000).delay == 5.0


def test_retry_schedule_without_quick_retries_backs_off_at_once() -> None:
    schedule = RetrySchedule(attempts=0, delay=0.5, interval=2.0, max_interval=2.0)
    assert schedule.step(1) == RetryStep(1, quick=False, exhausted=True, delay=2.0)
    assert schedule.step(2) == RetryStep(2, quick=False, exhausted=False, delay=2.0)


def test_retry_schedule_on_a_fake_clock_tries_until_the_store_returns() -> None:
    # The store is down until t=6.5; a save "takes" no time on this clock.
    schedule = RetrySchedule(attempts=2, delay=0.5, interval=1.0, max_interval=3.0)
    now, failures, tries = 0.0, 0, []
    while True:
        tries.append(now)
        if now >= 6.5:
            break
        failures += 1
        now += schedule.step(failures).delay
    assert tries == [0.0, 0.5, 1.0, 2.0, 4.0, 7.0]


def test_the_config_builds_its_retry_schedule() -> None:
    config = BatcherConfig(
        retry_attempts=3, retry_delay=0.1, retry_interval=0.2, retry_max_interval=0.4
    )
    assert config.retry_schedule() == RetrySchedule(3, 0.1, 0.2, 0.4)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"attempts": -1}, "attempts must be >= 0"),
        ({"delay": -0.1}, "delay must be a finite number >= 0"),
        ({"interval": 0.0}, "interval must be a finite number > 0"),
        ({"max_interval": 0.5}, r"max_interval must be >= interval \(1.0\)"),
    ],
)
def test_retry_schedule_limits_are_validated(kwargs: dict[str, float], message: str) -> None:
    args: dict[str, float] = {"attempts": 2, "delay": 0.5, "interval": 1.0, "max_interval": 2.0}
    with pytest.raises(ValueError, match=message):
        RetrySchedule(**{**args, **kwargs})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="failures must be >= 1"):
        RetrySchedule(2, 0.5, 1.0, 2.0).step(0)


def test_lifecycle_moves_only_forward() -> None:
    lifecycle = Lifecycle()
    assert lifecycle.state is RunnerState.NEW and not lifecycle.closing
    lifecycle.advance(RunnerState.RUNNING)
    assert not lifecycle.closing
    lifecycle.advance(RunnerState.CLOSING)
    assert lifecycle.closing
    lifecycle.advance(RunnerState.RUNNING)  # ignored: shutdown never un-happens
    assert lifecycle.state is RunnerState.CLOSING
    lifecycle.advance(RunnerState.CLOSED)
    assert lifecycle.state is RunnerState.CLOSED and lifecycle.closing


@pytest.mark.anyio
async def test_lifecycle_wakes_waiters_when_their_state_is_reached() -> None:
    lifecycle = Lifecycle()
    reached: list[str] = []

    async def wait(state: RunnerState) -> None:
        await lifecycle.reached(state)
        reached.append(state.value)

    async with anyio.create_task_group() as tg:
        tg.start_soon(wait, RunnerState.CLOSING)
        tg.start_soon(wait, RunnerState.CLOSED)
        await anyio.wait_all_tasks_blocked()
        lifecycle.advance(RunnerState.RUNNING)
        await anyio.wait_all_tasks_blocked()
        assert reached == []
        lifecycle.advance(RunnerState.CLOSING)
        await anyio.wait_all_tasks_blocked()
        assert reached == ["closing"]
        # Skipping a state still wakes those waiting for an earlier one.
        lifecycle.advance(RunnerState.CLOSED)
    assert reached == ["closing", "closed"]
    await lifecycle.reached(RunnerState.RUNNING)  # already past: returns at once


def _queued(n: int, events: int = 1) -> Queued:
    batch_events = tuple(Event("address", "k", {"n": n}, 1.0, f"{n}-{i}") for i in range(events))
    batch = NewBatch("address", batch_events, 1.0)
    return Queued(batch, opened_at=float(n))


@pytest.mark.anyio
async def test_pending_batches_wake_the_writer_and_make_room_for_the_aggregator() -> None:
    pending = PendingBatches()
    log: list[str] = []

    async def writer() -> None:
        while await pending.wait_for_work():
            log.append(f"write {[q.opened_at for q in pending.front(2)]}")
            pending.pop_front(len(pending.front(2)))
        log.append("writer done")

    async def aggregator() -> None:
        await pending.wait_for_room(1)
        log.append("room")

    async with anyio.create_task_group() as tg:
        pending.extend([_queued(0, events=3)])
        tg.start_soon(aggregator)
        await anyio.wait_all_tasks_blocked()
        assert log == [] and len(pending) == 1 and pending.events == 3
        tg.start_soon(writer)
        await anyio.wait_all_tasks_blocked()
        assert log == ["write [0.0]", "room"]
        pending.extend([_queued(1), _queued(2), _queued(3)])
        await anyio.wait_all_tasks_blocked()
        assert log[2:] == ["write [1.0, 2.0]", "write [3.0]"]
        pending.finish()
    assert log[-1] == "writer done"
    assert len(pending) == 0


def test_pending_batches_front_leaves_them_queued_and_clear_empties() -> None:
    pending = PendingBatches()
    pending.extend(_queued(n) for n in range(5))
    assert [q.opened_at for q in pending.front(3)] == [0.0, 1.0, 2.0]
    assert len(pending) == 5
    pending.pop_front(2)
    assert [q.opened_at for q in pending] == [2.0, 3.0, 4.0]
    pending.clear()
    assert len(pending) == 0
