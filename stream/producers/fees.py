"""Fee estimates and the mempool fee histogram, as a ``fees`` event when they change.

One pool batch asks ``blockchain.estimatefee`` for every target and
``mempool.get_fee_histogram``; it goes to one server (a batch this small is not spread), so
the figures of one event come from one server. The event (``key`` "fees")::

    {"estimates": {"1": 25.0, "2": 25.0, "6": 10.0, "12": null, ...},
     "histogram": [[12.5, 150000], [8.0, 420000], ...]}

``estimates`` maps each target (blocks, as a string: JSON keys are strings) to sat/vB, a
float rounded to 0.001 (the server's BTC/kB figure x 100 000; it has 8 decimals, so nothing
is lost), or null when the server has no estimate (it answers -1). ``histogram`` is the
server's compact histogram as it sends it: ``[fee rate in sat/vB, vsize]`` pairs, highest
rate first. ElectrumX recomputes the histogram every 2 minutes or so and caches estimates per
tip, so figures normally change after a block: the producer checks at start, after each chain
change (and once more ``settle_seconds`` later, for servers that saw the block late), and
every ``poll_seconds``. The cache is each server's own, and servers run different nodes: two
checks answered by different servers may differ, and that is a new event too.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any, Final

import anyio
from anyio.abc import TaskStatus

from stream.electrum import ElectrumError, ServerError, ServerPool

from .base import ChainChange, EventSink, make_event

__all__ = ["FeeProducer", "fees_data", "sat_per_vbyte"]

logger = logging.getLogger(__name__)

ESTIMATE: Final = "blockchain.estimatefee"
HISTOGRAM: Final = "mempool.get_fee_histogram"


def sat_per_vbyte(btc_per_kb: object) -> float | None:
    """An ``estimatefee`` answer (BTC/kB) in sat/vB; None for "no estimate" (-1 or any
    negative). ``ValueError`` for something that is not a number."""
    if isinstance(btc_per_kb, bool) or not isinstance(btc_per_kb, int | float):
        raise ValueError(f"a fee estimate is a number, got {btc_per_kb!r}")
    if not math.isfinite(btc_per_kb):
        raise ValueError(f"a fee estimate is a finite number, got {btc_per_kb!r}")
    if btc_per_kb < 0:
        return None
    return round(btc_per_kb * 100_000, 3)


def _histogram(answer: object) -> list[list[float | int]]:
    if not isinstance(answer, list):
        raise ValueError(f"a fee histogram is a list, got {answer!r}")
    out: list[list[float | int]] = []
    for pair in answer:
        if (
            not isinstance(pair, list | tuple) or len(pair) != 2
            or not all(isinstance(x, int | float) and not isinstance(x, bool) for x in pair)
        ):
            raise ValueError(f"a fee histogram entry is [rate, vsize], got {pair!r}")
        out.append([pair[0], pair[1]])
    return out


def fees_data(targets: Sequence[int], answers: Sequence[Any]) -> dict[str, object]:
    """A ``fees`` event's data from one batch's answers: one ``estimatefee`` answer per
    target, then the histogram. ``ValueError`` if any answer is an error or malformed."""
    if len(answers) != len(targets) + 1:
        raise ValueError(f"expected {len(targets) + 1} answers, got {len(answers)}")
    for answer in answers:
        if isinstance(answer, ServerError):
            raise ValueError(str(answer))
    estimates = {
        str(target): sat_per_vbyte(answer)
        for target, answer in zip(targets, answers, strict=False)
    }
    return {"estimates": estimates, "histogram": _histogram(answers[-1])}


class FeeProducer:
    """Emits a ``fees`` event whenever the figures differ from the last one emitted."""

    def __init__(
        self,
        pool: ServerPool,
        sink: EventSink,
        *,
        targets: Sequence[int] = (1, 2, 3, 6, 12, 24),
        poll_seconds: float = 60.0,
        settle_seconds: float = 3.0,
    ) -> None:
        if not targets or any(not isinstance(t, int) or t < 1 for t in targets):
            raise ValueError(f"targets must be integers >= 1, got {targets!r}")
        if poll_seconds <= 0 or settle_seconds <= 0:
            raise ValueError("poll_seconds and settle_seconds must be > 0")
        self._pool = pool
        self._sink = sink
        self._targets = tuple(dict.fromkeys(targets))
        self._poll = poll_seconds
        self._settle = settle_seconds
        self._last: dict[str, object] | None = None
        self._chain_changed = False
        self._wake: anyio.Event | None = None
        # Figures for stats and tests: checks completed (answered or failed), events sent.
        self.checks = 0
        self.emitted = 0

    def on_chain(self, change: ChainChange) -> None:
        """A new block: check now (never waits; several changes make one check)."""
        self._chain_changed = True
        if self._wake is not None:
            self._wake.set()

    @property
    def last(self) -> dict[str, object] | None:
        """The data of the last ``fees`` event emitted."""
        return self._last

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        settle_pending = False
        while True:
            self._wake = anyio.Event()
            await self.check()
            wait = self._settle if settle_pending else self._poll
            settle_pending = False
            if not self._chain_changed:
                with anyio.move_on_after(wait):
                    await self._wake.wait()
            if self._chain_changed:
                self._chain_changed = False
                settle_pending = True

    async def check(self) -> None:
        """Ask once; emit if the figures changed. Failures are logged, never raised."""
        try:
            await self._check()
        finally:
            self.checks += 1

    async def _check(self) -> None:
        try:
            answers = await self._pool.batch(
                [(ESTIMATE, [t]) for t in self._targets] + [(HISTOGRAM, [])]
            )
            data = fees_data(self._targets, answers)
        except (ElectrumError, ValueError) as exc:
            logger.warning("fee check failed: %s", exc)
            return
        if data == self._last:
            return
        await self._sink.emit([make_event("fees", "fees", data)])
        self._last = data
        self.emitted += 1
