"""The PostgreSQL store's watch list: queries on one connection the engine hands in.

The cap is checked under a transaction-scoped advisory lock, so nodes adding at the same
time cannot together take the list over it (each sees the others' committed rows).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import asyncpg

    Conn = asyncpg.pool.PoolConnectionProxy[Any]

from batcher.store.interface import WatchPage

__all__ = ["LEASES_MIGRATION", "add", "expire", "page", "remove"]

# Any constant works, as long as every node uses the same one ("CHWL").
WATCH_LOCK = 0x4348574C

#: Schema version 2: each address is permanent (the default, so every address watched
#: before leases existed stays watched) or leased; pages walk addresses in byte order.
LEASES_MIGRATION = """
ALTER TABLE chainwire_watch ADD COLUMN leased boolean NOT NULL DEFAULT false;
CREATE INDEX chainwire_watch_address_bytes ON chainwire_watch (address COLLATE "C");
"""


class _Over(Exception):
    """Raised inside the transaction to roll it back; never leaves this module."""


async def add(conn: Conn, wanted: Sequence[str], leased: bool,
              max_watched: int | None) -> list[str] | None:
    """The new addresses, or None when they would take the list over ``max_watched``
    (rolled back). Not an exception: the engine would take that for a broken connection."""
    try:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", WATCH_LOCK)
            rows = await conn.fetch(
                """
                INSERT INTO chainwire_watch (address, leased)
                SELECT a, $2 FROM unnest($1::text[]) WITH ORDINALITY AS t(a, n) ORDER BY n
                ON CONFLICT (address) DO NOTHING
                RETURNING address
                """,
                wanted, leased,
            )
            if rows and max_watched is not None:
                total = await conn.fetchval("SELECT count(*) FROM chainwire_watch")
                if total > max_watched:
                    raise _Over
            if not leased:  # an API call: what streams had leased is now permanent
                await conn.execute(
                    "UPDATE chainwire_watch SET leased = false "
                    "WHERE leased AND address = ANY($1::text[])", wanted)
    except _Over:
        return None
    added = {r[0] for r in rows}
    return [a for a in wanted if a in added]


async def remove(conn: Conn, address: str) -> bool:
    gone = await conn.fetchval(
        """
        WITH gone AS (DELETE FROM chainwire_watch WHERE address = $1 RETURNING address),
        kt AS (DELETE FROM chainwire_known_tx WHERE address = $1)
        SELECT count(*) FROM gone
        """,
        address,
    )
    return bool(gone)


async def expire(conn: Conn, addresses: Sequence[str]) -> list[str]:
    rows = await conn.fetch(
        """
        WITH gone AS (
            DELETE FROM chainwire_watch WHERE leased AND address = ANY($1::text[])
            RETURNING address
        ), kt AS (
            DELETE FROM chainwire_known_tx WHERE address IN (SELECT address FROM gone)
        )
        SELECT address FROM gone
        """,
        list(addresses),
    )
    gone = {r[0] for r in rows}
    return [a for a in addresses if a in gone]


async def page(conn: Conn, after: str | None, limit: int) -> WatchPage:
    rows = await conn.fetch(
        'SELECT address FROM chainwire_watch WHERE address COLLATE "C" > $1 '
        'ORDER BY address COLLATE "C" LIMIT $2',
        after or "", limit,
    )
    total = await conn.fetchval("SELECT count(*) FROM chainwire_watch")
    return WatchPage([r[0] for r in rows], int(total))
