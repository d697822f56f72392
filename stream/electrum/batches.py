"""Running a batch on the pool's servers: the I/O half of ``batching.py``'s plan.

``send_batch`` de-duplicates the calls, spreads them over the least loaded servers in
chunks, retries what failed because of its server on others (up to ``max_retries``), asks
again in halves when an answer was over the server's size limit, and puts every result
back in the caller's order. Per-call errors (``ServerError``) stay with their call.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from typing import Any

import anyio

from .batching import assemble, chunk, dedupe, spread
from .errors import NoServerAvailable, RetryableError, ServerError, ServerThrottled
from .selection import ServerSet
from .states import ServerState
from .upstream import Upstream

__all__ = ["Call", "send_batch"]

logger = logging.getLogger(__name__)

Call = tuple[str, Sequence[Any]]
# The placeholder of a result not received yet; never handed back (``assemble`` checks).
_MISSING: Any = object()
# ElectrumX/aiorpcx answer this (per item) when a batch's response would exceed MAX_SEND.
_TOO_LARGE = "response too large"


async def send_batch(servers: ServerSet, calls: Iterable[tuple[str, Sequence[Any]]]) -> list[Any]:
    """One result per call, in the caller's order (see ``ServerPool.batch``)."""
    normalized: list[Call] = [(method, list(params)) for method, params in calls]
    if not normalized:
        return []
    dedup = dedupe([(m, json.dumps(p, sort_keys=True)) for m, p in normalized])
    first: dict[int, int] = {}
    for index, position in enumerate(dedup.positions):
        first.setdefault(position, index)
    unique = [normalized[first[i]] for i in range(len(dedup.unique))]
    servers.grow(len(unique))
    config = servers.config
    run = _Run(servers, unique)
    # Empty when the servers went away while we waited for them: then every chunk picks
    # its own server (or fails with NoServerAvailable), as a lone request would.
    chosen: list[Upstream | None] = [*await _servers_for_batch(servers, len(unique))] or [None]
    groups = spread(
        len(unique), len(chosen), per_server=config.per_server,
        threshold=config.parallel_threshold,
    )
    async with anyio.create_task_group() as tg:
        for group, upstream in zip(groups, chosen, strict=False):
            for indices in chunk(group, config.max_chunk):
                tg.start_soon(run.run_chunk, indices, upstream)
    if run.failures:
        raise run.failures[0]
    return assemble(dedup, run.results, missing=_MISSING)


async def _servers_for_batch(servers: ServerSet, count: int) -> list[Upstream]:
    """Usable servers, least loaded first. Waits for one if none is connected, and up to
    ``spread_wait`` for servers still connecting when the batch would use them."""
    config = servers.config
    await servers.acquire(set(), mode="least_loaded")
    wanted = len(spread(
        count, len(servers.active), per_server=config.per_server,
        threshold=config.parallel_threshold,
    ))
    with anyio.move_on_after(config.spread_wait):
        while True:
            usable = servers.usable()
            connecting = sum(1 for u in servers.active if u.state is ServerState.CONNECTING)
            if len(usable) >= wanted or not connecting:
                break
            await servers.wait_changed()
    return sorted(servers.usable(), key=lambda u: u.in_flight)


class _Run:
    """One batch in flight: its unique calls and where their results go."""

    def __init__(self, servers: ServerSet, calls: list[Call]) -> None:
        self.servers = servers
        self.calls = calls
        self.results: list[Any] = [_MISSING] * len(calls)
        self.failures: list[BaseException] = []

    async def run_chunk(self, indices: list[int], upstream: Upstream | None) -> None:
        """Send one chunk; a chunk no server could answer fails the batch (after the
        other chunks are done)."""
        try:
            await self.send_chunk(indices, upstream)
        except NoServerAvailable as exc:
            self.failures.append(exc)

    async def send_chunk(self, indices: list[int], upstream: Upstream | None) -> None:
        """Send, retrying the calls that failed because of their server on other servers
        (up to max_retries); per-call errors stay with their call."""
        max_retries = self.servers.config.max_retries
        pending = indices
        tried: set[Upstream] = set()
        last: BaseException | None = None
        attempts = 0
        while pending:
            if upstream is None:
                if attempts > max_retries:
                    raise NoServerAvailable(
                        f"{len(pending)} call(s) of a batch failed on {len(tried)} server(s)"
                    ) from last
                upstream = await self.servers.acquire(tried, mode="least_loaded", cause=last)
            tried.add(upstream)
            try:
                out = await upstream.batch([self.calls[i] for i in pending])
            except RetryableError as exc:
                logger.debug("batch chunk failed on %s: %s", upstream.url, exc)
                last, upstream, attempts = exc, None, attempts + 1
                continue
            retry, too_large, throttled = self._take(pending, out)
            if throttled is not None:
                last = throttled
            if too_large:
                # The answer was over the server's MAX_SEND: ask again in halves.
                half = max(1, len(pending) // 2)
                for part in chunk(too_large, half):
                    await self.send_chunk(part, upstream)
            if retry:
                upstream.penalize(anyio.current_time())
                upstream, attempts = None, attempts + 1
            pending = retry

    def _take(
        self, pending: list[int], out: Sequence[Any]
    ) -> tuple[list[int], list[int], ServerThrottled | None]:
        """Keep the answers; return the calls to retry elsewhere (throttled), those to ask
        again in smaller chunks (too large), and the last throttling answer."""
        retry: list[int] = []
        too_large: list[int] = []
        throttled: ServerThrottled | None = None
        for index, item in zip(pending, out, strict=True):
            if isinstance(item, ServerThrottled):
                retry.append(index)
                throttled = item
            elif (
                isinstance(item, ServerError) and _TOO_LARGE in item.message
                and len(pending) > 1
            ):
                too_large.append(index)
            else:
                self.results[index] = item
        return retry, too_large, throttled
