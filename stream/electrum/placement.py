"""Placing scripthash subscriptions on servers: spread, subscribe, retry elsewhere.

The registry (``subscriptions.py``) owns the maps; these functions fill them. A carrier is
registered before the subscribe request goes out, so a notification arriving right after
the answer is routed, and removed again if the server refused or failed.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

import anyio

from .errors import ElectrumError, NoServerAvailable, RetryableError
from .host import Candidates, PoolHost
from .upstream import Upstream

__all__ = ["SCRIPTHASH_SUBSCRIBE", "SCRIPTHASH_UNSUBSCRIBE", "place", "subscribe_on"]

SCRIPTHASH_SUBSCRIBE = "blockchain.scripthash.subscribe"
SCRIPTHASH_UNSUBSCRIBE = "blockchain.scripthash.unsubscribe"

Carriers = MutableMapping[str, Upstream]
Statuses = MutableMapping[str, str | None]


async def subscribe_on(
    upstream: Upstream, scripthashes: list[str], carriers: Carriers, statuses: Statuses,
) -> dict[str, Any]:
    """Subscribe on one server; {scripthash: status or ServerError}."""
    for sh in scripthashes:
        carriers[sh] = upstream
    try:
        out = await upstream.batch([(SCRIPTHASH_SUBSCRIBE, [sh]) for sh in scripthashes])
    except BaseException:
        for sh in scripthashes:
            if carriers.get(sh) is upstream:
                del carriers[sh]
        raise
    result = dict(zip(scripthashes, out, strict=True))
    for sh, status in result.items():
        if isinstance(status, ElectrumError):
            if carriers.get(sh) is upstream:
                del carriers[sh]
        else:
            statuses[sh] = status
    return result


async def place(
    host: PoolHost, scripthashes: list[str], *, candidates: Candidates, carriers: Carriers,
    statuses: Statuses,
) -> dict[str, tuple[Upstream, Any]]:
    """Spread scripthashes over ``candidates`` and subscribe, retrying a failed server's
    share on others. Returns {scripthash: (server, status or ServerError)}."""
    config = host.config
    placed: dict[str, tuple[Upstream, Any]] = {}
    pending = list(scripthashes)
    tried: set[Upstream] = set()
    last: BaseException | None = None
    for _attempt in range(config.max_retries + 1):
        if not pending:
            break
        servers = list(candidates(tried))
        if not servers:
            servers = [await host.acquire(tried, candidates)]
        shares: dict[Upstream, list[str]] = {}
        for i, sh in enumerate(pending):
            shares.setdefault(servers[i % len(servers)], []).append(sh)
        retry: list[str] = []

        async def one(upstream: Upstream, share: list[str], retry: list[str]) -> None:
            nonlocal last
            try:
                for start in range(0, len(share), config.max_chunk):
                    part = share[start : start + config.max_chunk]
                    out = await subscribe_on(upstream, part, carriers, statuses)
                    for sh, status in out.items():
                        if isinstance(status, RetryableError):
                            retry.append(sh)
                            last = status
                        else:
                            placed[sh] = (upstream, status)
            except RetryableError as exc:
                last = exc
                tried.add(upstream)
                retry.extend(sh for sh in share if sh not in placed)

        async with anyio.create_task_group() as tg:
            for upstream, share in shares.items():
                tg.start_soon(one, upstream, share, retry)
        pending = retry
    if pending:
        raise NoServerAvailable(
            f"could not subscribe {len(pending)} scripthash(es) on any server"
        ) from last
    return placed
