"""The runner end to end on the SQLite store: windows, storing before publishing, retries,
backpressure, shutdown flushing. A wrapper injects store failures; nothing is mocked."""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from batcher.events import Event
from batcher.runner import BatcherConfig, BatchRunner, RunnerState
from batcher.store import BatchStore, open_store
from batcher.window import WindowLimits
from tests.batcher.helpers import FlakyStore, RecordingSink, events, eventually, wire

pytestmark = pytest.mark.anyio


def fast_config(**kwargs: Any) -> BatcherConfig:
    """A config with short retry pauses, so failure tests run in well under a second."""
    return BatcherConfig(
        **{"retry_delay": 0.01, "retry_interval": 0.02, "retry_max_interval": 0.05, **kwargs}
    )


@pytest.fixture
async def sqlite_store(tmp_path: Path, anyio_backend: str) -> AsyncIterator[BatchStore]:
    async with open_store(f"sqlite:///{tmp_path / 'runner.db'}") as store:
        yield store


async def test_events_are_stored_then_published_as_batches_in_seq_order(
    sqlite_store: BatchStore,
) -> None:
    sink = RecordingSink()
    runner = BatchRunner(sqlite_store, sink, BatcherConfig(window_ms=100))
    sent = events(25)
    async with anyio.create_task_group() as tg:
        await tg.start(runner.run)
        await runner.submit_many(sent)
        await eventually(lambda: len(sink.event_ids) == 25)
        await runner.aclose()
    assert [b.count for b in sink.batches] == [10, 10, 5]
    assert sink.seqs == [1, 2, 3]
    assert sink.event_ids == [e.id for e in sent]
    stored = await sqlite_store.batches_after(0)
    assert [wire(b) for b in stored] == [wire(b) for b in sink.batches]
    stats = runner.stats()
    assert stats["events_batched"] == 25
    assert stats["batches_created"] == 3
    assert stats["events_saved"] == 22
    assert (stats["flushes_size"], stats["flushes_time"], stats["flushes_shutdown"]) == (2, 1, 0)
    assert stats["batches_published"] == 3
    assert runner.state is RunnerState.CLOSED


async def test_a_lone_event_is_published_when_its_window_times_out(
    sqlite_store: BatchStore,
) -> None:
    sink = RecordingSink()
    runner = BatchRunner(sqlite_store, sink, BatcherConfig(window_ms=150))
    async with anyio.create_task_group() as tg:
        await tg.start(runner.run)
        start = anyio.current_time()
        await runner.submit(events(1)[0])
        await eventually(lambda: sink.batches)
        elapsed = anyio.current_time() - start
        tg.cancel_scope.cancel()
    assert 0.14 <= elapsed < 1.0
    stats = runner.stats()
    assert stats["flushes_time"] == 1
    assert 0.14 <= float(stats["window_latency_seconds_max"]) < 1.0


async def test_mixed_types_become_one_batch_per_type(sqlite_store: BatchStore) -> None:
    sink = RecordingSink()
    runner = BatchRunner(
        sqlite_store, sink, BatcherConfig(window_ms=50, per_type={"block": WindowLimits(1)})
    )
    async with anyio.create_task_group() as tg:
        await tg.start(runner.run)
        await runner.submit_many(events(3, "address") + events(1, "block") + events(2, "fees"))
        await eventually(lambda: len(sink.batches) == 3)
        await runner.aclose()
    assert [(b.type, b.count) for b in sink.batches] == [("block", 1), ("address", 3), ("fees", 2)]


async def test_cancellation_flushes_every_open_window(sqlite_store: BatchStore) -> None:
    sink = RecordingSink()
    runner = BatchRunner(sqlite_store, sink, BatcherConfig(window_ms=60_000))
    async with anyio.create_task_group() as tg:
        await tg.start(runner.run)
        await runner.submit_many(events(3) + events(2, "block"))
        # Every task idle: the aggregator holds the events in windows due in a minute.
        await anyio.wait_all_tasks_blocked()
        assert sink.batches == []
        tg.cancel_scope.cancel()
    assert [(b.type, b.count) for b in sink.batches] == [("address", 3), ("block", 2)]
    assert [b.seq for b in await sqlite_store.batches_after(0)] == [1, 2]
    assert runner.stats()["flushes_shutdown"] == 2
    with pytest.raises(RuntimeError, match="cannot submit to a closed batcher"):
        await runner.submit(events(1)[0])


async def test_aclose_flushes_events_still_in_the_input_queue(sqlite_store: BatchStore) -> None:
    sink = RecordingSink()
    runner = BatchRunner(sqlite_store, sink, BatcherConfig(window_ms=60_000))
    async with anyio.create_task_group() as tg:
        await tg.start(runner.run)
        # submit() does not yield when there is room: the aggregator has seen none of these.
        await runner.submit_many(events(7))
        await runner.aclose()
        assert runner.state is RunnerState.CLOSED
    assert sink.event_ids == [f"address{i}" for i in range(7)]
    await runner.aclose()  # idempotent


async def test_batching_off_publishes_each_event_alone(sqlite_store: BatchStore) -> None:
    sink = RecordingSink()
    runner = BatchRunner(sqlite_store, sink, BatcherConfig(batching=False))
    async with anyio.create_task_group() as tg:
        await tg.start(runner.run)
        await runner.submit_many(events(5))
        await eventually(lambda: len(sink.batches) == 5)
        await runner.aclose()
    assert [b.count for b in sink.batches] == [1] * 5
    assert runner.stats()["events_saved"] == 0


async def test_submit_threadsafe_from_other_threads(sqlite_store: BatchStore) -> None:
    sink = RecordingSink()
    runner = BatchRunner(sqlite_store, sink, BatcherConfig(window_ms=20, queue_size=4))
    errors: list[BaseException] = []

    def produce(offset: int) -> None:
        try:
            for event in events(50, start=offset):
                runner.submit_threadsafe(event)
        except BaseException as exc:  # reported to the test below
            errors.append(exc)

    async with anyio.create_task_group() as tg:
        await tg.start(runner.run)
        threads = [threading.Thread(target=produce, args=(k * 1000,)) for k in range(3)]
        for thread in threads:
            thread.start()
        await eventually(lambda: not any(t.is_alive() for t in threads))
        await eventually(lambda: len(sink.event_ids) == 150)
        await runner.aclose()
    assert errors == []
    for k in range(3):
        mine = [i for i in sink.event_ids if 1000 * k <= int(i[7:]) < 1000 * k + 50]
        assert mine == [f"address{i}" for i in range(1000 * k, 1000 * k + 50)]
    with pytest.raises(RuntimeError, match="not running"):
        runner.submit_threadsafe(events(1)[0])


async def test_store_failures_are_retried_twice_then_buffered_and_written_in_order(
    sqlite_store: BatchStore, caplog: pytest.LogCaptureFixture
) -> None:
    flaky = FlakyStore(sqlite_store)
    sink = RecordingSink()
    runner = BatchRunner(flaky, sink, fast_config(window_events=2, window_ms=10))
    async with anyio.create_task_group() as tg:
        await tg.start(runner.run)
        flaky.fail_next = 1
        await runner.submit_many(events(2))
        await eventually(lambda: len(sink.batches) == 1)
        assert runner.stats()["store_retries"] == 1 and runner.stats()["store_failures"] == 0
        flaky.down = True
        await runner.submit_many(events(6, start=2))
        await eventually(lambda: runner.stats()["store_degraded"])
        # Two backoff tries after the three quick ones: still one failure, nothing published.
        await eventually(lambda: len(flaky.calls) >= 2 + 3 + 2)
        stats = runner.stats()
        assert stats["store_failures"] == 1
        assert stats["retry_buffer"] == 3
        assert len(sink.batches) == 1
        flaky.down = False
        await eventually(lambda: len(sink.batches) == 4)
        await runner.aclose()
    assert sink.seqs == [1, 2, 3, 4]
    assert sink.event_ids == [f"address{i}" for i in range(8)]
    assert [b.seq for b in await sqlite_store.batches_after(0)] == [1, 2, 3, 4]
    assert runner.stats()["store_degraded"] == 0
    assert "retry 1 of 2" in caplog.text and "retry 2 of 2" in caplog.text
    assert "wait in the retry buffer" in caplog.text
    # The waiting batches went back in one group commit.
    assert 3 in flaky.calls


async def test_a_commit_whose_outcome_was_lost_is_not_written_twice(
    sqlite_store: BatchStore,
) -> None:
    flaky = FlakyStore(sqlite_store)
    flaky.commit_then_fail = 1
    sink = RecordingSink()
    runner = BatchRunner(flaky, sink, fast_config(window_events=3))
    async with anyio.create_task_group() as tg:
        await tg.start(runner.run)
        await runner.submit_many(events(9))
        await eventually(lambda: len(sink.batches) == 3)
        await runner.aclose()
    stored = await sqlite_store.batches_after(0)
    assert [b.seq for b in stored] == [1, 2, 3]
    assert [e.id for b in stored for e in b.events] == [f"address{i}" for i in range(9)]
    assert sink.seqs == [1, 2, 3]


async def test_a_full_retry_buffer_slows_the_producers(
    sqlite_store: BatchStore, caplog: pytest.LogCaptureFixture
) -> None:
    flaky = FlakyStore(sqlite_store)
    flaky.down = True
    sink = RecordingSink()
    config = fast_config(window_events=1, queue_size=3, retry_buffer=4)
    runner = BatchRunner(flaky, sink, config)
    submitted = 0

    async def produce() -> None:
        nonlocal submitted
        for event in events(40):
            await runner.submit(event)
            submitted += 1

    with caplog.at_level(logging.INFO, logger="batcher.runner"):
        async with anyio.create_task_group() as tg:
            await tg.start(runner.run)
            tg.start_soon(produce)
            # The aggregator waits for room and the input queue is full: the producer waits.
            await eventually(
                lambda: runner.stats()["producers_slowed"] and runner.stats()["queued_events"] == 3
            )
            await anyio.wait_all_tasks_blocked()
            # Buffer (4) + the aggregator's hand (1 closing) + the input queue (3): the rest waits.
            assert submitted < 12
            stats = runner.stats()
            assert stats["producers_slowed"] == 1
            assert stats["backpressure_episodes"] == 1
            flaky.down = False
            await eventually(lambda: len(sink.batches) == 40)
            await runner.aclose()
    assert sink.event_ids == [f"address{i}" for i in range(40)]
    assert sink.seqs == list(range(1, 41))
    assert "slowing the producers" in caplog.text
    assert runner.stats()["producers_slowed"] == 0


async def test_shutdown_keeps_trying_the_store_and_reports_what_it_could_not_save(
    sqlite_store: BatchStore, caplog: pytest.LogCaptureFixture
) -> None:
    flaky = FlakyStore(sqlite_store)
    flaky.down = True
    sink = RecordingSink()
    config = fast_config(window_ms=60_000, shutdown_timeout=0.3)
    runner = BatchRunner(flaky, sink, config)
    async with anyio.create_task_group() as tg:
        await tg.start(runner.run)
        await runner.submit_many(events(4))
        start = anyio.current_time()
        tg.cancel_scope.cancel()
    assert anyio.current_time() - start < 1.0
    stats = runner.stats()
    assert (stats["batches_lost"], stats["events_lost"]) == (1, 4)
    assert "1 batches (4 events)" in caplog.text and "they are lost" in caplog.text


async def test_shutdown_flush_succeeds_once_the_store_comes_back(sqlite_store: BatchStore) -> None:
    flaky = FlakyStore(sqlite_store)
    flaky.down = True
    sink = RecordingSink()
    runner = BatchRunner(flaky, sink, fast_config(window_ms=60_000, shutdown_timeout=5))

    async def recover() -> None:
        # Once shutdown has tried (and failed) twice, the store comes back.
        await eventually(lambda: len(flaky.calls) >= 2)
        flaky.down = False

    async with anyio.create_task_group() as outer:
        outer.start_soon(recover)
        async with anyio.create_task_group() as tg:
            await tg.start(runner.run)
            await runner.submit_many(events(4))
            tg.cancel_scope.cancel()
    assert sink.event_ids == [f"address{i}" for i in range(4)]
    assert runner.stats()["batches_lost"] == 0


async def test_invalid_events_and_misuse_are_rejected_clearly(sqlite_store: BatchStore) -> None:
    runner = BatchRunner(sqlite_store, RecordingSink())
    with pytest.raises(RuntimeError, match="cannot submit before the batcher runs"):
        await runner.submit(events(1)[0])
    async with anyio.create_task_group() as tg:
        await tg.start(runner.run)
        with pytest.raises(ValueError, match="not JSON-encodable"):
            await runner.submit(Event(type="fees", key="", data={"x": object()}, ts=1.0))
        with pytest.raises(ValueError, match="non-empty string"):
            await runner.submit(Event(type="", key="", data={}, ts=1.0))
        with pytest.raises(RuntimeError, match="can run only once"):
            await runner.run()
        await runner.aclose()
    assert runner.stats()["events_received"] == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"window_events": 0}, "window_events must be >= 1, got 0"),
        ({"window_ms": -5}, "window_ms must be a finite number >= 0, got -5"),
        ({"queue_size": 0}, "queue_size must be >= 1"),
        ({"retry_attempts": -1}, "retry_attempts must be >= 0"),
        ({"retry_buffer": 0}, "retry_buffer must be >= 1"),
        ({"retry_interval": 0}, "retry_interval must be a finite number > 0"),
        ({"retry_interval": 5, "retry_max_interval": 1}, "retry_max_interval must be >= "),
        ({"group_max": 0}, "group_max must be >= 1"),
        ({"shutdown_timeout": 0}, "shutdown_timeout must be a finite number > 0"),
        ({"per_type": {"block": 1}}, r"per_type\['block'\] must be a WindowLimits"),
    ],
)
def test_config_limits_are_validated(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BatcherConfig(**kwargs)  # type: ignore[arg-type]


def test_the_batcher_never_imports_stream_starlette_or_aiorpcx() -> None:
    import subprocess
    import sys

    code = (
        "import sys, pkgutil, importlib, batcher\n"
        "for m in pkgutil.walk_packages(batcher.__path__, 'batcher.'):\n"
        "    importlib.import_module(m.name)\n"
        "bad = sorted(n for n in sys.modules if n.split('.')[0] in "
        "{'stream', 'starlette', 'aiorpcx', 'sse_starlette'})\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


async def test_aclose_stops_waiting_out_the_backoff_and_writes_once_the_store_returns(
    sqlite_store: BatchStore,
) -> None:
    flaky = FlakyStore(sqlite_store)
    flaky.down = True
    sink = RecordingSink()
    config = fast_config(window_events=2, retry_interval=30, retry_max_interval=30)
    runner = BatchRunner(flaky, sink, config)
    async with anyio.create_task_group() as tg:
        await tg.start(runner.run)
        await runner.submit_many(events(4))
        await eventually(lambda: runner.stats()["store_degraded"])
        # The writer now waits 30 s before its next try; aclose must not.
        flaky.down = False
        with anyio.fail_after(2):
            await runner.aclose()
    assert sink.event_ids == [f"address{i}" for i in range(4)]
    assert runner.stats()["batches_lost"] == 0


async def test_aclose_is_bounded_by_shutdown_timeout_when_the_store_stays_down(
    sqlite_store: BatchStore, caplog: pytest.LogCaptureFixture
) -> None:
    flaky = FlakyStore(sqlite_store)
    flaky.down = True
    sink = RecordingSink()
    runner = BatchRunner(flaky, sink, fast_config(window_events=2, shutdown_timeout=0.3))
    async with anyio.create_task_group() as tg:
        await tg.start(runner.run)
        await runner.submit_many(events(5))
        await eventually(lambda: runner.stats()["store_degraded"])
        start = anyio.current_time()
        with anyio.fail_after(5):
            await runner.aclose()
        elapsed = anyio.current_time() - start
    # Not before the timeout; the upper bound is the test's own fail_after (a busy machine
    # may add any delay, and that is not what this test is about).
    assert 0.3 <= elapsed
    assert runner.state is RunnerState.CLOSED
    stats = runner.stats()
    # Two full windows were queued, the odd event's window closed at shutdown.
    assert (stats["batches_lost"], stats["events_lost"]) == (3, 5)
    assert stats["flushes_shutdown"] == 1
    assert sink.batches == []
    assert "3 batches (5 events)" in caplog.text and "they are lost" in caplog.text
