"""The SQLite store: the embedded default (one node, no set-up).

The stdlib ``sqlite3`` runs in worker threads, one call at a time (a capacity limiter of
one), on one connection in WAL mode. It behaves like the PostgreSQL store: same tables, same
seq rules (a counter row updated in the saving transaction), same idempotent saves.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

import anyio
import anyio.to_thread

import batcher.store.sqlite_bulk as bulk_sql
import batcher.store.sqlite_watch as watch_sql
from batcher.events import Batch
from batcher.store.base import StoreBase, check_limit
from batcher.store.interface import NewBatch, StoreError, StoreUnavailable, WatchPage
from batcher.store.rows import batch_rows, batches_from_rows

__all__ = ["SCHEMA_VERSION", "SQLiteStore"]

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 2

_T = TypeVar("_T")

_META = """
CREATE TABLE IF NOT EXISTS chainwire_meta (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    schema_version INTEGER NOT NULL,
    epoch TEXT NOT NULL,
    last_seq INTEGER NOT NULL DEFAULT 0,
    tip_height INTEGER,
    tip_hash TEXT
)
"""

_MIGRATIONS: dict[int, str] = {
    1: """
    CREATE TABLE chainwire_batches (
        seq INTEGER PRIMARY KEY,
        batch_id TEXT NOT NULL,
        type TEXT NOT NULL,
        ts REAL NOT NULL,
        count INTEGER NOT NULL
    );
    CREATE INDEX chainwire_batches_ts ON chainwire_batches (ts);
    CREATE TABLE chainwire_events (
        seq INTEGER NOT NULL,
        idx INTEGER NOT NULL,
        id TEXT NOT NULL,
        type TEXT NOT NULL,
        key TEXT NOT NULL,
        ts REAL NOT NULL,
        value_sats INTEGER,
        data TEXT NOT NULL,
        PRIMARY KEY (seq, idx)
    ) WITHOUT ROWID;
    CREATE INDEX chainwire_events_type_key ON chainwire_events (type, key, seq);
    CREATE INDEX chainwire_events_large ON chainwire_events (value_sats)
        WHERE type = 'tx.large';
    CREATE TABLE chainwire_watch (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        address TEXT NOT NULL UNIQUE
    );
    CREATE TABLE chainwire_known_tx (
        address TEXT NOT NULL,
        txid TEXT NOT NULL,
        height INTEGER NOT NULL,
        PRIMARY KEY (address, txid)
    ) WITHOUT ROWID;
    """,
    2: watch_sql.LEASES_MIGRATION,
}

_REPLAY = """
WITH b AS (
    SELECT seq, type, ts FROM chainwire_batches WHERE seq > ? ORDER BY seq LIMIT ?
)
SELECT b.seq, b.type, b.ts, e.id, e.key, e.ts, e.data
FROM b JOIN chainwire_events e ON e.seq = b.seq
ORDER BY b.seq, e.idx
"""


class SQLiteStore(StoreBase):
    """The ``BatchStore`` on an SQLite file (``path`` relative to the working directory,
    or absolute). ``busy_timeout`` is how long a write waits for another process's lock."""

    def __init__(self, path: str, *, busy_timeout: float = 5.0) -> None:
        if not path:
            raise ValueError("path must name a file")
        if busy_timeout < 0:
            raise ValueError(f"busy_timeout must be >= 0, got {busy_timeout}")
        self._path = path
        self._busy_timeout = busy_timeout
        self._conn: sqlite3.Connection | None = None
        self._epoch: str | None = None
        # One thread at a time on the connection: sqlite3 connections are not thread-safe.
        self._limiter = anyio.CapacityLimiter(1)
        self._uncertain: set[str] = set()
        # As in the PostgreSQL store: a batch whose save raised can only sit above this seq.
        self._confirmed_seq = 0

    def __repr__(self) -> str:
        return f"SQLiteStore({self._path!r})"

    @property
    def url(self) -> str:
        return f"sqlite:///{self._path}"

    async def open(self) -> None:
        """Open (creating the file and schema if needed) and migrate."""
        if self._conn is not None:
            raise RuntimeError("the store is already open")
        try:
            conn = await anyio.to_thread.run_sync(self._connect, limiter=self._limiter)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open database {self.url}: {exc}") from None
        self._conn = conn
        logger.info("store open: %s (epoch %s)", self.url, self._epoch)

    def _connect(self) -> sqlite3.Connection:
        directory = os.path.dirname(self._path)
        if directory and not os.path.isdir(directory):
            raise sqlite3.OperationalError(f"directory {directory!r} does not exist")
        conn = sqlite3.connect(
            self._path,
            timeout=self._busy_timeout,
            isolation_level=None,  # we issue BEGIN/COMMIT ourselves
            check_same_thread=False,  # used from worker threads, one at a time
        )
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode: a commit survives a crash of the process (not of the OS),
            # the usual trade for an embedded event log.
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            self._migrate(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _migrate(self, conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(_META)
            row = conn.execute("SELECT schema_version, epoch FROM chainwire_meta").fetchone()
            version = 0 if row is None else int(row[0])
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"database {self.url} has schema version {version}, newer than this "
                    f"Chainwire ({SCHEMA_VERSION}): upgrade Chainwire"
                )
            for step in range(version + 1, SCHEMA_VERSION + 1):
                for statement in _MIGRATIONS[step].split(";"):
                    if statement.strip():
                        conn.execute(statement)
                logger.info("migrated %s to schema version %d", self.url, step)
            if row is None:
                epoch = uuid.uuid4().hex
                conn.execute(
                    "INSERT INTO chainwire_meta (id, schema_version, epoch) VALUES (1, ?, ?)",
                    (SCHEMA_VERSION, epoch),
                )
            else:
                epoch = str(row[1])
                conn.execute("UPDATE chainwire_meta SET schema_version = ?", (SCHEMA_VERSION,))
            (last_seq,) = conn.execute("SELECT last_seq FROM chainwire_meta").fetchone()
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        self._epoch = epoch
        self._confirmed_seq = int(last_seq)

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(conn.close, limiter=self._limiter)

    async def _run(self, func: Callable[[sqlite3.Connection], _T]) -> _T:
        conn = self._conn
        if conn is None:
            raise RuntimeError("the store is not open")

        def call() -> _T:
            return func(conn)

        try:
            return await anyio.to_thread.run_sync(call, limiter=self._limiter)
        except sqlite3.OperationalError as exc:
            # "database is locked", a full disk, a vanished file: worth retrying later.
            raise StoreUnavailable(f"database {self.url}: {exc}") from exc
        except sqlite3.Error as exc:
            raise StoreError(f"database {self.url}: {exc}") from exc

    def _transaction(
        self, body: Callable[[sqlite3.Connection], _T]
    ) -> Callable[[sqlite3.Connection], _T]:
        def run(conn: sqlite3.Connection) -> _T:
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = body(conn)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            return result

        return run

    async def _fetch(self, query: str, args: Sequence[Any] = ()) -> list[Any]:
        return await self._run(lambda conn: conn.execute(query, args).fetchall())

    # -- batches ---------------------------------------------------------------------------

    async def _rows(self, query: str, args: Sequence[Any]) -> Sequence[Any]:
        return await self._fetch(query, args)

    def _placeholder(self, position: int) -> str:
        return "?"

    async def ping(self) -> None:
        await self._fetch("SELECT 1")

    async def save_batches(self, batches: Sequence[NewBatch]) -> list[Batch]:
        if not batches:
            return []
        epoch = self.epoch
        ids = [b.batch_id for b in batches]
        check = not self._uncertain.isdisjoint(ids)
        self._uncertain.update(ids)

        def body(conn: sqlite3.Connection) -> tuple[dict[str, int], int]:
            existing: dict[str, int] = {}
            if check:
                marks = ",".join("?" * len(ids))
                existing = dict(
                    conn.execute(
                        "SELECT batch_id, seq FROM chainwire_batches "
                        f"WHERE seq > ? AND batch_id IN ({marks})",
                        (self._confirmed_seq, *ids),
                    ).fetchall()
                )
            fresh = [b for b in batches if b.batch_id not in existing]
            first = 0
            if fresh:
                (last,) = conn.execute(
                    "UPDATE chainwire_meta SET last_seq = last_seq + ? RETURNING last_seq",
                    (len(fresh),),
                ).fetchone()
                first = int(last) - len(fresh) + 1
                brows, erows = batch_rows(fresh, first)
                conn.executemany(
                    "INSERT INTO chainwire_batches (seq, batch_id, type, ts, count) "
                    "VALUES (?, ?, ?, ?, ?)",
                    brows,
                )
                conn.executemany(
                    "INSERT INTO chainwire_events "
                    "(seq, idx, id, type, key, ts, value_sats, data) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    erows,
                )
            return existing, first

        existing, first = await self._run(self._transaction(body))
        return self._confirm(batches, ids, existing, first, epoch)

    async def batches_after(self, seq: int, limit: int = 100) -> list[Batch]:
        check_limit(limit)
        rows = await self._fetch(_REPLAY, (seq, limit))
        return batches_from_rows(rows, self.epoch)

    async def prune(self, older_than: float) -> int:
        def body(conn: sqlite3.Connection) -> int:
            (cut,) = conn.execute(
                "SELECT max(seq) FROM chainwire_batches WHERE ts < ?", (float(older_than),)
            ).fetchone()
            if cut is None:
                return 0
            conn.execute("DELETE FROM chainwire_events WHERE seq <= ?", (cut,))
            return conn.execute("DELETE FROM chainwire_batches WHERE seq <= ?", (cut,)).rowcount

        return await self._run(self._transaction(body))

    async def reset(self) -> None:
        epoch = uuid.uuid4().hex

        def body(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM chainwire_events")
            conn.execute("DELETE FROM chainwire_batches")
            conn.execute("UPDATE chainwire_meta SET epoch = ?", (epoch,))

        await self._run(self._transaction(body))
        self._epoch = epoch
        self._uncertain.clear()

    # -- producers' state ------------------------------------------------------------------

    async def watch_add(self, addresses: Iterable[str], *, leased: bool = False,
                        max_watched: int | None = None) -> list[str]:
        wanted = list(dict.fromkeys(addresses))
        if not wanted:
            return []
        return await self._run(self._transaction(
            lambda conn: watch_sql.add(conn, wanted, leased, max_watched)))

    async def watch_remove(self, address: str) -> bool:
        return await self._run(self._transaction(
            lambda conn: watch_sql.remove(conn, address)))

    async def watch_expire(self, addresses: Iterable[str]) -> list[str]:
        wanted = list(dict.fromkeys(addresses))
        if not wanted:
            return []
        return await self._run(self._transaction(
            lambda conn: watch_sql.expire(conn, wanted)))

    async def watch_list(self) -> list[str]:
        rows = await self._fetch("SELECT address FROM chainwire_watch ORDER BY id")
        return [r[0] for r in rows]

    async def watch_leased(self) -> list[str]:
        return await self._run(watch_sql.leased)

    async def watch_page(self, after: str | None, limit: int) -> WatchPage:
        check_limit(limit)
        return await self._run(lambda conn: watch_sql.page(conn, after, limit))

    async def known_txs(self, address: str) -> dict[str, int]:
        rows = await self._fetch(
            "SELECT txid, height FROM chainwire_known_tx WHERE address = ?", (address,)
        )
        return {r[0]: int(r[1]) for r in rows}

    async def set_known_txs(self, address: str, txs: Mapping[str, int]) -> None:
        rows = [(address, txid, int(height)) for txid, height in txs.items()]

        def body(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM chainwire_known_tx WHERE address = ?", (address,))
            conn.executemany(
                "INSERT INTO chainwire_known_tx (address, txid, height) VALUES (?, ?, ?)", rows
            )

        await self._run(self._transaction(body))

    async def known_txs_many(self, addresses: Sequence[str]) -> dict[str, dict[str, int]]:
        return await self._run(lambda conn: bulk_sql.known_txs_many(conn, addresses))

    async def logged_amounts(self, addresses: Sequence[str]
                             ) -> dict[str, dict[str, tuple[int, int]]]:
        return await self._run(lambda conn: bulk_sql.logged_amounts(conn, addresses))

    async def get_tip(self) -> tuple[int, str] | None:
        rows = await self._fetch("SELECT tip_height, tip_hash FROM chainwire_meta")
        if rows[0][0] is None:
            return None
        return int(rows[0][0]), str(rows[0][1])

    async def set_tip(self, height: int, block_hash: str) -> None:
        await self._run(
            self._transaction(
                lambda conn: conn.execute(
                    "UPDATE chainwire_meta SET tip_height = ?, tip_hash = ?",
                    (height, block_hash),
                )
            )
        )


