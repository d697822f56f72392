"""The PostgreSQL store's bulk reads of the producers' state (start-up, not per address):
one query per call, on a connection the engine hands in."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import asyncpg

    Conn = asyncpg.pool.PoolConnectionProxy[Any]

__all__ = ["known_txs_many", "logged_amounts"]


async def known_txs_many(conn: Conn, addresses: Sequence[str]) -> dict[str, dict[str, int]]:
    rows = await conn.fetch(
        "SELECT address, txid, height FROM chainwire_known_tx WHERE address = ANY($1::text[])",
        list(addresses),
    )
    known: dict[str, dict[str, int]] = {}
    for address, txid, height in rows:
        known.setdefault(address, {})[txid] = int(height)
    return known


async def logged_amounts(conn: Conn, addresses: Sequence[str]
                         ) -> dict[str, dict[str, tuple[int, int]]]:
    # Oldest first: a later event of the same (address, txid) overwrites an earlier one.
    # data is json text (kept byte-exact for replay): cast only to read three fields.
    rows = await conn.fetch(
        """
        SELECT key, d->>'txid', (d->>'received_sats')::bigint, (d->>'sent_sats')::bigint
        FROM (SELECT key, seq, idx, data::json AS d FROM chainwire_events
              WHERE type = 'address' AND key = ANY($1::text[])) AS e
        ORDER BY seq, idx
        """,
        list(addresses),
    )
    amounts: dict[str, dict[str, tuple[int, int]]] = {}
    for address, txid, received, sent in rows:
        if txid is not None:
            amounts.setdefault(address, {})[txid] = (int(received or 0), int(sent or 0))
    return amounts
