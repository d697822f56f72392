"""PostgreSQL going away under a running stream: every batch written exactly once, in order.

Faults go through a TCP proxy that reads the wire protocol (``pgproxy.py``): it fails a
chosen save at its COMMIT (terminating the session, dropping the COMMIT, or withholding its
answer) and can take "the database" down and bring it back, without disturbing other users
of the machine's PostgreSQL. The restart test stops and starts a throwaway cluster of its
own (``pgcluster.py``), never the shared server.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import anyio
import pytest

from batcher.events import Batch
from batcher.runner import BatcherConfig, BatchRunner
from batcher.store import BatchStore, StoreUnavailable, open_store
from tests.batcher.conftest import pg_url_for
from tests.batcher.helpers import RecordingSink, events, eventually
from tests.batcher.pgcluster import PgCluster
from tests.batcher.pgproxy import Fault, pg_proxy

pytestmark = pytest.mark.anyio


def fast_config(**kwargs: Any) -> BatcherConfig:
    """A config with short retry pauses, so failure tests run in well under a second."""
    return BatcherConfig(
        **{"retry_delay": 0.05, "retry_interval": 0.05, "retry_max_interval": 0.2, **kwargs}
    )


async def assert_stored_exactly_once_in_order(
    store: BatchStore, sink: RecordingSink, sent_ids: list[str]
) -> None:
    stored: list[Batch] = []
    while True:
        page = await store.batches_after(stored[-1].seq if stored else 0, limit=500)
        if not page:
            break
        stored += page
    assert [b.seq for b in stored] == list(range(1, len(stored) + 1))
    assert [e.id for b in stored for e in b.events] == sent_ids
    assert sink.seqs == [b.seq for b in stored]
    assert sink.event_ids == sent_ids


async def test_terminated_connections_mid_stream_lose_and_duplicate_nothing(
    pg_database: str,
) -> None:
    sink = RecordingSink()
    sent = events(3000)
    # Every other save fails, by each fault in turn: a session terminated by the server, a
    # COMMIT that never arrives (rolled back), a COMMIT whose answer is lost (committed).
    faults = [Fault.TERMINATE, Fault.DROP_COMMIT, Fault.CUT_AFTER_COMMIT] * 4
    async with pg_proxy() as proxy:
        async with open_store(pg_url_for(pg_database, port=proxy.port)) as store:
            runner = BatchRunner(store, sink, fast_config(window_ms=20))

            def published(n: int) -> Callable[[], bool]:
                return lambda: len(sink.event_ids) >= n

            async def produce() -> None:
                # A chunk is ten full windows; waiting for it to be published means each
                # chunk is at least one save of its own, so there are saves enough for the
                # plan whatever the machine's speed (30 chunks, 12 faults on 24 saves).
                for end in range(100, len(sent) + 1, 100):
                    await runner.submit_many(sent[end - 100 : end])
                    await eventually(published(end), within=20)

            async with anyio.create_task_group() as tg:
                await tg.start(runner.run)
                proxy.fail_saves({2 * (n + 1): fault for n, fault in enumerate(faults)})
                tg.start_soon(produce)
                await eventually(lambda: len(sink.event_ids) == len(sent), within=30)
                await runner.aclose()
            stats = runner.stats()
            kills = len(proxy.injected)
            assert kills >= 12
            assert proxy.injected == faults, "every planned fault hit a save"
            assert proxy.commits_withheld == faults.count(Fault.CUT_AFTER_COMMIT)
            assert stats["store_errors"] >= 1, "the terminations never hit a save"
            # One failed save attempt per fault, each retried at once and then stored.
            assert stats["store_errors"] == stats["store_retries"] == len(faults)
            assert stats["store_failures"] == 0
            await assert_stored_exactly_once_in_order(store, sink, [e.id for e in sent])


async def test_a_connection_cut_right_after_commit_does_not_write_batches_twice(
    pg_database: str,
) -> None:
    sink = RecordingSink()
    sent = events(400)
    async with pg_proxy() as proxy:
        async with open_store(pg_url_for(pg_database, port=proxy.port)) as store:
            runner = BatchRunner(store, sink, fast_config(window_ms=10))
            async with anyio.create_task_group() as tg:
                await tg.start(runner.run)
                proxy.cut_after_commit = 3
                for start in range(0, len(sent), 40):
                    await runner.submit_many(sent[start : start + 40])
                    await anyio.sleep(0.02)
                await eventually(lambda: len(sink.event_ids) == len(sent), within=15)
                await runner.aclose()
            assert proxy.commits_cut == 3
            assert proxy.commits_withheld == 3  # they really committed
            assert runner.stats()["store_errors"] >= 3
            await assert_stored_exactly_once_in_order(store, sink, [e.id for e in sent])


async def test_database_down_at_start_logs_one_clear_line_per_attempt_and_retries(
    pg_database: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with pg_proxy() as proxy:
        proxy.down()
        url = f"postgresql://postgres:hunter2@127.0.0.1:{proxy.port}/{pg_database}"
        store = open_store(url, retry_max_delay=0.5)
        async with anyio.create_task_group() as tg:
            tg.start_soon(store.open)
            await eventually(
                lambda: sum("unreachable" in r.getMessage() for r in caplog.records) >= 2
            )
            proxy.bring_up()
            await eventually(lambda: "store open" in caplog.text or _is_open(store))
        try:
            await store.ping()
        finally:
            await store.close()
    lines = [r.getMessage() for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(lines) >= 2
    assert lines[0].startswith(f"database at postgresql://postgres@127.0.0.1:{proxy.port}/")
    assert "retrying in 0.5 s" in lines[0]
    assert all("\n" not in line for line in lines)
    assert all(r.exc_info is None for r in caplog.records)
    assert "hunter2" not in caplog.text


def _is_open(store: BatchStore) -> bool:
    try:
        store.epoch  # noqa: B018 -- raises until open
    except RuntimeError:
        return False
    return True


async def test_open_gives_up_after_open_timeout(pg_database: str) -> None:
    async with pg_proxy() as proxy:
        proxy.down()
        store = open_store(pg_url_for(pg_database, port=proxy.port), open_timeout=0.6)
        with pytest.raises(StoreUnavailable, match="is unreachable"):
            await store.open()


async def test_batches_wait_while_the_database_is_down_and_are_written_in_order_after(
    pg_database: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="batcher")
    sink = RecordingSink()
    sent = events(200)
    async with pg_proxy() as proxy:
        url = pg_url_for(pg_database, port=proxy.port)
        async with open_store(url, command_timeout=2) as store:
            runner = BatchRunner(store, sink, fast_config(window_ms=20))
            async with anyio.create_task_group() as tg:
                await tg.start(runner.run)
                await runner.submit_many(sent[:50])
                await eventually(lambda: len(sink.event_ids) == 50)
                proxy.down()
                await runner.submit_many(sent[50:150])
                await eventually(lambda: runner.stats()["store_degraded"])
                # A backoff try too (after the two quick ones): still nothing published.
                await eventually(lambda: runner.stats()["store_retries"] >= 3)
                assert len(sink.event_ids) == 50
                assert runner.stats()["retry_buffer"] == 10
                proxy.bring_up()
                await runner.submit_many(sent[150:])
                await eventually(lambda: len(sink.event_ids) == len(sent), within=10)
                await runner.aclose()
            assert runner.stats()["store_failures"] >= 1
            await assert_stored_exactly_once_in_order(store, sink, [e.id for e in sent])
    assert "wait in the retry buffer" in caplog.text
    assert "answers again" in caplog.text


@pytest.mark.slow
async def test_postgresql_restarted_mid_stream_loses_and_duplicates_nothing(
    pg_cluster: PgCluster,
) -> None:
    sink = RecordingSink()
    sent = events(1500)
    server_down = anyio.Event()
    async with open_store(pg_cluster.url()) as store:
        runner = BatchRunner(store, sink, fast_config(window_ms=20))

        async def produce() -> None:
            for start in range(0, len(sent), 50):
                if start == len(sent) // 2:
                    # The second half is submitted while the server is down, so its saves
                    # fail by construction, not by the restart happening to overlap them.
                    await server_down.wait()
                await runner.submit_many(sent[start : start + 50])
                await anyio.sleep(0.01)

        async with anyio.create_task_group() as tg:
            await tg.start(runner.run)
            tg.start_soon(produce)
            await eventually(lambda: runner.stats()["events_received"] >= len(sent) // 2)
            # Saves of the first half may be in flight: a fast shutdown cuts them.
            await anyio.to_thread.run_sync(pg_cluster.stop)
            server_down.set()
            await eventually(lambda: runner.stats()["store_errors"] >= 1, within=30)
            await anyio.to_thread.run_sync(pg_cluster.start)
            await eventually(lambda: len(sink.event_ids) == len(sent), within=60)
            await runner.aclose()
        assert runner.stats()["store_errors"] >= 1, "the restart never hit a save"
        await assert_stored_exactly_once_in_order(store, sink, [e.id for e in sent])
