"""``/healthz``: healthy only when the store answers and an Electrum server is at the tip.

The pool is lazy: when no server is connected yet, the check asks the pool for the tip
once (a request opens a connection on demand), so a fresh server turns healthy on its
first probe and a server with no reachable Electrum server says so.
"""

from __future__ import annotations

import logging

import anyio

from stream.services import Services

__all__ = ["check_health"]

logger = logging.getLogger(__name__)

# Load balancers time out probes after a few seconds: answer before they do.
STORE_TIMEOUT = 2.0
ELECTRUM_TIMEOUT = 2.0


async def check_health(services: Services) -> list[str]:
    """The problems that make this node unfit for traffic (empty: healthy)."""
    problems = []
    try:
        with anyio.fail_after(STORE_TIMEOUT):
            await services.store.ping()
    except Exception as exc:  # any failure means "not reachable"; the log has the detail
        logger.warning("health: store unreachable: %s", type(exc).__name__)
        problems.append("store unreachable")
    # The pool's own tip rule: None while no connected server reports a tip.
    if services.pool.servers_tip() is None:
        try:
            with anyio.fail_after(ELECTRUM_TIMEOUT):
                await services.pool.request("blockchain.headers.subscribe")
        except Exception as exc:
            logger.warning("health: no Electrum server answered: %s", type(exc).__name__)
            problems.append("no Electrum server reachable at the tip")
    return problems
