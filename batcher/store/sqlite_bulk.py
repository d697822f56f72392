"""The SQLite store's bulk reads of the producers' state (start-up, not per address).

Each function runs in the engine's worker thread on its connection. A list of addresses is
passed as one JSON parameter (``json_each``), so no call runs into SQLite's limit on the
number of parameters of a statement.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

import orjson

__all__ = ["known_txs_many", "logged_amounts"]


def known_txs_many(conn: sqlite3.Connection, addresses: Sequence[str]
                   ) -> dict[str, dict[str, int]]:
    rows = conn.execute(
        "SELECT address, txid, height FROM chainwire_known_tx "
        "WHERE address IN (SELECT value FROM json_each(?))",
        (orjson.dumps(list(addresses)).decode(),),
    ).fetchall()
    known: dict[str, dict[str, int]] = {}
    for address, txid, height in rows:
        known.setdefault(address, {})[txid] = int(height)
    return known


def logged_amounts(conn: sqlite3.Connection, addresses: Sequence[str]
                   ) -> dict[str, dict[str, tuple[int, int]]]:
    # Oldest first: a later event of the same (address, txid) overwrites an earlier one.
    rows = conn.execute(
        "SELECT key, json_extract(data, '$.txid'), json_extract(data, '$.received_sats'), "
        "json_extract(data, '$.sent_sats') FROM chainwire_events "
        "WHERE type = 'address' AND key IN (SELECT value FROM json_each(?)) "
        "ORDER BY seq, idx",
        (orjson.dumps(list(addresses)).decode(),),
    ).fetchall()
    amounts: dict[str, dict[str, tuple[int, int]]] = {}
    for address, txid, received, sent in rows:
        if isinstance(txid, str):
            amounts.setdefault(address, {})[txid] = (int(received or 0), int(sent or 0))
    return amounts
