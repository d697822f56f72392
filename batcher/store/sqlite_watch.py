"""The SQLite store's watch list: each function is the body of one transaction.

Kept apart from the engine (``sqlite.py``) so each stays one job: the engine runs these in
its worker thread, inside ``BEGIN IMMEDIATE``, which also serialises the cap check against
every other writer of the file.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from batcher.store.interface import WatchLimitReached, WatchPage

__all__ = ["LEASES_MIGRATION", "add", "expire", "leased", "page", "remove"]

#: Schema version 2: each address is permanent (the default, so every address watched
#: before leases existed stays watched) or leased.
LEASES_MIGRATION = """
ALTER TABLE chainwire_watch ADD COLUMN leased INTEGER NOT NULL DEFAULT 0
"""


def add(conn: sqlite3.Connection, wanted: Sequence[str], leased: bool,
        max_watched: int | None) -> list[str]:
    added = []
    for address in wanted:
        cursor = conn.execute(
            "INSERT INTO chainwire_watch (address, leased) VALUES (?, ?) "
            "ON CONFLICT (address) DO NOTHING",
            (address, int(leased)),
        )
        if cursor.rowcount:
            added.append(address)
    if added and max_watched is not None:
        (total,) = conn.execute("SELECT count(*) FROM chainwire_watch").fetchone()
        if total > max_watched:
            raise WatchLimitReached(max_watched)  # the transaction rolls back: none added
    if not leased:  # an API call: what streams had leased is now permanent
        conn.executemany("UPDATE chainwire_watch SET leased = 0 WHERE address = ? AND leased",
                         [(a,) for a in wanted])
    return added


def remove(conn: sqlite3.Connection, address: str) -> bool:
    conn.execute("DELETE FROM chainwire_known_tx WHERE address = ?", (address,))
    cursor = conn.execute("DELETE FROM chainwire_watch WHERE address = ?", (address,))
    return cursor.rowcount > 0


def expire(conn: sqlite3.Connection, addresses: Sequence[str]) -> list[str]:
    gone = []
    for address in addresses:
        cursor = conn.execute("DELETE FROM chainwire_watch WHERE address = ? AND leased",
                              (address,))
        if cursor.rowcount:
            conn.execute("DELETE FROM chainwire_known_tx WHERE address = ?", (address,))
            gone.append(address)
    return gone


def leased(conn: sqlite3.Connection) -> list[str]:
    rows = conn.execute("SELECT address FROM chainwire_watch WHERE leased ORDER BY id")
    return [r[0] for r in rows.fetchall()]


def page(conn: sqlite3.Connection, after: str | None, limit: int) -> WatchPage:
    # TEXT compares as bytes (BINARY collation), as PostgreSQL's "C": the same order.
    rows = conn.execute(
        "SELECT address FROM chainwire_watch WHERE address > ? ORDER BY address LIMIT ?",
        (after or "", limit),
    ).fetchall()
    (total,) = conn.execute("SELECT count(*) FROM chainwire_watch").fetchone()
    return WatchPage([r[0] for r in rows], int(total))
