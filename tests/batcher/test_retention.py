"""Retention: old batches are pruned in the background; a failing prune is retried."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from batcher.events import Event
from batcher.retention import RetentionPruner
from batcher.store import BatchStore, NewBatch, StoreUnavailable, open_store
from tests.batcher.helpers import eventually

pytestmark = pytest.mark.anyio

HOUR = 3600.0
NOW = 1_760_000_000.0


def block(height: int) -> Event:
    return Event(type="block", key=str(height), data={"height": height}, ts=NOW, id=f"b{height}")


async def test_pruner_keeps_the_retention_window(store: BatchStore) -> None:
    await store.save_batches(
        [
            NewBatch("block", (block(h),), NOW - age * HOUR)
            for h, age in enumerate([200, 170, 100, 1])
        ]
    )
    pruner = RetentionPruner(store, retention_hours=168, wall_clock=lambda: NOW)
    assert await pruner.prune_once() == 2
    assert [b.seq for b in await store.batches_after(0)] == [3, 4]
    assert await store.oldest_seq() == 3
    assert await pruner.prune_once() == 0
    assert pruner.pruned == 2


async def test_pruner_runs_in_the_background_and_retries_after_a_failure(
    tmp_path: Path, anyio_backend: str
) -> None:
    async with open_store(f"sqlite:///{tmp_path / 'r.db'}") as store:
        await store.save_batches([NewBatch("block", (block(1),), NOW - 500 * HOUR)])
        failing = _FailOnce(store)
        pruner = RetentionPruner(failing, retention_hours=1, interval=0.02, wall_clock=lambda: NOW)  # type: ignore[arg-type]
        async with anyio.create_task_group() as tg:
            await tg.start(pruner.run)
            await eventually(lambda: pruner.pruned == 1)
            tg.cancel_scope.cancel()
        assert pruner.failures == 1
        assert await store.oldest_seq() is None


class _FailOnce:
    def __init__(self, inner: BatchStore) -> None:
        self.inner = inner
        self.failed = False

    async def prune(self, older_than: float) -> int:
        if not self.failed:
            self.failed = True
            raise StoreUnavailable("injected: database down")
        return await self.inner.prune(older_than)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"retention_hours": 0}, "retention_hours must be > 0, got 0"),
        ({"retention_hours": float("nan")}, "retention_hours must be > 0"),
        ({"interval": -1}, "interval must be > 0, got -1"),
    ],
)
def test_pruner_limits_are_validated(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RetentionPruner(None, **kwargs)  # type: ignore[arg-type]
