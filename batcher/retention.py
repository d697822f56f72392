"""Retention: delete stored batches older than the configured number of hours.

Runs in the background under the app's task group (``await tg.start(pruner.run)``). A
failed prune is logged and tried again at the next interval: retention is housekeeping and
must never stop the stream.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

import anyio
from anyio.abc import TaskStatus

from batcher.store import Prunable, StoreError

__all__ = ["DEFAULT_RETENTION_HOURS", "RetentionPruner"]

logger = logging.getLogger(__name__)

#: ``CHAINWIRE_RETENTION_HOURS`` default: a week.
DEFAULT_RETENTION_HOURS = 168.0


class RetentionPruner:
    """Prunes ``store`` every ``interval`` seconds, keeping ``retention_hours`` of batches.

    ``wall_clock`` gives epoch seconds (injectable for tests).
    """

    def __init__(
        self,
        store: Prunable,
        *,
        retention_hours: float = DEFAULT_RETENTION_HOURS,
        interval: float = 300.0,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if isinstance(retention_hours, bool) or not isinstance(retention_hours, int | float):
            raise ValueError(f"retention_hours must be a number, got {retention_hours!r}")
        if not math.isfinite(retention_hours) or retention_hours <= 0:
            raise ValueError(f"retention_hours must be > 0, got {retention_hours}")
        if not math.isfinite(interval) or interval <= 0:
            raise ValueError(f"interval must be > 0, got {interval}")
        self._store = store
        self._retention = retention_hours * 3600.0
        self._interval = interval
        self._clock = wall_clock
        self.pruned = 0
        self.failures = 0

    async def prune_once(self) -> int:
        """Delete what is older than the retention; return how many batches went."""
        removed = await self._store.prune(self._clock() - self._retention)
        self.pruned += removed
        if removed:
            logger.info(
                "retention: pruned %d batches older than %g h", removed, self._retention / 3600
            )
        return removed

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Prune now and then every ``interval`` seconds, until cancelled."""
        task_status.started()
        while True:
            try:
                await self.prune_once()
            except StoreError as exc:
                self.failures += 1
                logger.warning(
                    "retention: pruning failed (%s); next try in %g s", exc, self._interval
                )
            await anyio.sleep(self._interval)
