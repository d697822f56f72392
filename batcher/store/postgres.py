"""The PostgreSQL store (asyncpg): production storage, shared by several nodes.

One transaction per ``save_batches`` call: the batch rows, then their events (executemany;
``COPY`` when a group commit carries many rows, because under a flood that is what keeps up),
then the sequence counter. The counter is a row in ``chainwire_meta`` updated inside the
transaction, so its row lock orders writers: seqs are gapless and increase in commit order.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import anyio
import asyncpg

import batcher.store.postgres_bulk as bulk_sql
import batcher.store.postgres_watch as watch_sql
from batcher.events import Batch
from batcher.store.base import StoreBase, check_limit
from batcher.store.interface import (
    NewBatch,
    StoreError,
    StoreUnavailable,
    WatchLimitReached,
    WatchPage,
    redact_url,
)
from batcher.store.postgres_schema import SCHEMA_VERSION, migrate
from batcher.store.rows import batch_rows, batches_from_rows

__all__ = ["SCHEMA_VERSION", "PostgresStore"]

logger = logging.getLogger(__name__)

# Batch rows are few (one per ten events): COPY pays off for them from this many on.
_BATCH_COPY_THRESHOLD = 50
_BATCH_COLUMNS = ("seq", "batch_id", "type", "ts", "count")
_EVENT_COLUMNS = ("seq", "idx", "id", "type", "key", "ts", "value_sats", "data")
_INSERT_BATCH = (
    "INSERT INTO chainwire_batches (seq, batch_id, type, ts, count) VALUES ($1, $2, $3, $4, $5)"
)
_INSERT_EVENT = (
    "INSERT INTO chainwire_events (seq, idx, id, type, key, ts, value_sats, data) "
    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
)
_REPLAY = """
WITH b AS (
    SELECT seq, type, ts FROM chainwire_batches WHERE seq > $1 ORDER BY seq LIMIT $2
)
SELECT b.seq, b.type, b.ts, e.id, e.key, e.ts, e.data
FROM b JOIN chainwire_events e ON e.seq = b.seq
ORDER BY b.seq, e.idx
"""

# Errors that mean "the database is not reachable right now", as opposed to a bad query.
_TRANSIENT: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InsufficientResourcesError,
    asyncpg.InterfaceError,
    # A pooled connection whose server went away while it sat idle can be handed out
    # before its socket reports closed; its next query fails with this.
    asyncpg.InternalClientError,
)


class PostgresStore(StoreBase):
    """The ``BatchStore`` on PostgreSQL.

    ``pool_size`` bounds connections; ``copy_threshold`` is the number of event rows in one
    save from which ``COPY`` replaces ``executemany``; ``command_timeout`` bounds one query;
    ``open_timeout`` bounds how long ``open()`` keeps retrying (None: until cancelled);
    ``retry_max_delay`` caps the pause between connection attempts.
    """

    def __init__(
        self,
        url: str,
        *,
        pool_size: int = 4,
        copy_threshold: int = 500,
        command_timeout: float = 30.0,
        open_timeout: float | None = None,
        retry_max_delay: float = 30.0,
    ) -> None:
        if pool_size < 2:
            # One connection writes while another serves queries (replay, REST).
            raise ValueError(f"pool_size must be >= 2, got {pool_size}")
        if copy_threshold < 1:
            raise ValueError(f"copy_threshold must be >= 1, got {copy_threshold}")
        if command_timeout <= 0:
            raise ValueError(f"command_timeout must be > 0, got {command_timeout}")
        if open_timeout is not None and open_timeout <= 0:
            raise ValueError(f"open_timeout must be > 0 or None, got {open_timeout}")
        if retry_max_delay <= 0:
            raise ValueError(f"retry_max_delay must be > 0, got {retry_max_delay}")
        self._dsn = url
        self._url = redact_url(url)
        self._pool_size = pool_size
        self._copy_threshold = copy_threshold
        self._command_timeout = command_timeout
        self._open_timeout = open_timeout
        self._retry_max_delay = retry_max_delay
        self._pool: asyncpg.Pool | None = None
        self._epoch: str | None = None
        # batch_ids whose last save raised: the COMMIT may have happened anyway.
        self._uncertain: set[str] = set()
        # The highest seq this store saw committed: a batch whose save raised can only have
        # been stored above it, so the duplicate check scans just those rows (no batch_id
        # index to maintain on every insert).
        self._confirmed_seq = 0

    def __repr__(self) -> str:
        return f"PostgresStore({self._url!r})"

    @property
    def url(self) -> str:
        return self._url

    # -- lifecycle -------------------------------------------------------------------------

    async def open(self) -> None:
        """Connect and migrate; while the database is unreachable, log one line per attempt
        and retry with backoff (up to ``open_timeout``)."""
        if self._pool is not None:
            raise RuntimeError("the store is already open")
        delay = 0.5
        deadline = None if self._open_timeout is None else anyio.current_time() + self._open_timeout
        while True:
            try:
                pool = await asyncpg.create_pool(
                    self._dsn,
                    min_size=1,
                    max_size=self._pool_size,
                    command_timeout=self._command_timeout,
                )
            except _TRANSIENT as exc:
                now = anyio.current_time()
                if deadline is not None and now + delay > deadline:
                    raise StoreUnavailable(
                        f"database at {self._url} is unreachable ({_describe(exc)})"
                    ) from None
                logger.error(
                    "database at %s is unreachable (%s); retrying in %g s",
                    self._url,
                    _describe(exc),
                    delay,
                )
                await anyio.sleep(delay)
                delay = min(delay * 2, self._retry_max_delay)
                continue
            except asyncpg.PostgresError as exc:
                # Wrong database name, bad credentials...: retrying will not help.
                raise StoreError(f"cannot open database at {self._url}: {_describe(exc)}") from None
            break
        try:
            await self._migrate(pool)
        except BaseException:
            pool.terminate()
            raise
        self._pool = pool
        logger.info("store open: %s (epoch %s)", self._url, self._epoch)

    async def close(self) -> None:
        """Close the pool (waiting at most 5 s for busy connections, then terminating)."""
        pool, self._pool = self._pool, None
        if pool is None:
            return
        with anyio.CancelScope(shield=True):
            with anyio.move_on_after(5.0):
                try:
                    await pool.close()
                    return
                except Exception:
                    logger.exception("closing the database pool failed; terminating it")
            pool.terminate()

    async def _migrate(self, pool: asyncpg.Pool) -> None:
        async with pool.acquire() as conn:
            self._epoch, self._confirmed_seq = await migrate(conn, self._url)

    def _require_pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("the store is not open")
        return self._pool

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[asyncpg.pool.PoolConnectionProxy[Any]]:
        """A pooled connection; transient failures become ``StoreUnavailable``."""
        pool = self._require_pool()
        try:
            async with pool.acquire() as conn:
                try:
                    yield conn
                except BaseException:
                    # A failed or cancelled operation (a COPY cut halfway) can leave the
                    # protocol mid-message: never hand this connection out again.
                    with contextlib.suppress(asyncpg.InterfaceError):
                        # (The pool already dropped it if the server closed it.)
                        conn.terminate()
                    raise
        except _TRANSIENT as exc:
            raise StoreUnavailable(f"database at {self._url}: {_describe(exc)}") from exc

    async def _fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        # Reads are idempotent: after a dead pooled connection, try once more on a new one.
        try:
            async with self._connection() as conn:
                return await conn.fetch(query, *args)
        except StoreUnavailable:
            async with self._connection() as conn:
                return await conn.fetch(query, *args)

    async def _execute(self, query: str, *args: Any) -> str:
        async with self._connection() as conn:
            return await conn.execute(query, *args)

    # -- batches ---------------------------------------------------------------------------

    async def _rows(self, query: str, args: Sequence[Any]) -> Sequence[Any]:
        return await self._fetch(query, *args)

    def _placeholder(self, position: int) -> str:
        return f"${position}"

    async def ping(self) -> None:
        await self._fetch("SELECT 1")

    async def save_batches(self, batches: Sequence[NewBatch]) -> list[Batch]:
        if not batches:
            return []
        epoch = self.epoch
        ids = [b.batch_id for b in batches]
        check = not self._uncertain.isdisjoint(ids)
        self._uncertain.update(ids)
        async with self._connection() as conn:
            async with conn.transaction():
                existing: dict[str, int] = {}
                if check:
                    # Take the counter's lock first: a transaction of ours that lost its
                    # connection may still be finishing on the server; wait for its outcome.
                    await conn.execute("UPDATE chainwire_meta SET last_seq = last_seq")
                    rows = await conn.fetch(
                        "SELECT batch_id, seq FROM chainwire_batches "
                        "WHERE seq > $1 AND batch_id = ANY($2)",
                        self._confirmed_seq,
                        ids,
                    )
                    existing = {r[0]: r[1] for r in rows}
                fresh = [b for b in batches if b.batch_id not in existing]
                first = 0
                if fresh:
                    last = await conn.fetchval(
                        "UPDATE chainwire_meta SET last_seq = last_seq + $1 RETURNING last_seq",
                        len(fresh),
                    )
                    first = int(last) - len(fresh) + 1
                    brows, erows = batch_rows(fresh, first)
                    if len(brows) >= _BATCH_COPY_THRESHOLD:
                        await conn.copy_records_to_table(
                            "chainwire_batches", records=brows, columns=_BATCH_COLUMNS
                        )
                    else:
                        await conn.executemany(_INSERT_BATCH, brows)
                    if len(erows) >= self._copy_threshold:
                        await conn.copy_records_to_table(
                            "chainwire_events", records=erows, columns=_EVENT_COLUMNS
                        )
                    else:
                        await conn.executemany(_INSERT_EVENT, erows)
        return self._confirm(batches, ids, existing, first, epoch)

    async def batches_after(self, seq: int, limit: int = 100) -> list[Batch]:
        check_limit(limit)
        rows = await self._fetch(_REPLAY, seq, limit)
        return batches_from_rows(rows, self.epoch)

    async def prune(self, older_than: float) -> int:
        # Delete a prefix of seqs, so the stored seqs stay contiguous and oldest_seq() tells
        # a resuming client exactly what it missed.
        status = await self._execute(
            """
            WITH cut AS (SELECT max(seq) AS seq FROM chainwire_batches WHERE ts < $1),
            ev AS (DELETE FROM chainwire_events USING cut WHERE chainwire_events.seq <= cut.seq)
            DELETE FROM chainwire_batches USING cut WHERE chainwire_batches.seq <= cut.seq
            """,
            float(older_than),
        )
        return int(status.split()[-1])

    async def reset(self) -> None:
        epoch = uuid.uuid4().hex
        async with self._connection() as conn, conn.transaction():
            await conn.execute("TRUNCATE chainwire_batches, chainwire_events")
            await conn.execute("UPDATE chainwire_meta SET epoch = $1", epoch)
        self._epoch = epoch
        self._uncertain.clear()

    # -- producers' state ------------------------------------------------------------------

    async def watch_add(self, addresses: Iterable[str], *, leased: bool = False,
                        max_watched: int | None = None) -> list[str]:
        wanted = list(dict.fromkeys(addresses))
        if not wanted:
            return []
        async with self._connection() as conn:
            added = await watch_sql.add(conn, wanted, leased, max_watched)
        if added is None:
            raise WatchLimitReached(max_watched or 0)
        return added

    async def watch_expire(self, addresses: Iterable[str]) -> list[str]:
        wanted = list(dict.fromkeys(addresses))
        if not wanted:
            return []
        async with self._connection() as conn:
            return await watch_sql.expire(conn, wanted)

    async def watch_leased(self) -> list[str]:
        rows = await self._fetch("SELECT address FROM chainwire_watch WHERE leased ORDER BY id")
        return [r[0] for r in rows]

    async def watch_page(self, after: str | None, limit: int) -> WatchPage:
        check_limit(limit)
        async with self._connection() as conn:
            return await watch_sql.page(conn, after, limit)

    async def watch_remove(self, address: str) -> bool:
        async with self._connection() as conn:
            return await watch_sql.remove(conn, address)

    async def watch_list(self) -> list[str]:
        rows = await self._fetch("SELECT address FROM chainwire_watch ORDER BY id")
        return [r[0] for r in rows]

    async def known_txs(self, address: str) -> dict[str, int]:
        rows = await self._fetch(
            "SELECT txid, height FROM chainwire_known_tx WHERE address = $1", address
        )
        return {r[0]: int(r[1]) for r in rows}

    async def set_known_txs(self, address: str, txs: Mapping[str, int]) -> None:
        async with self._connection() as conn, conn.transaction():
            await conn.execute("DELETE FROM chainwire_known_tx WHERE address = $1", address)
            await conn.executemany(
                "INSERT INTO chainwire_known_tx (address, txid, height) VALUES ($1, $2, $3)",
                [(address, txid, int(height)) for txid, height in txs.items()],
            )

    async def known_txs_many(self, addresses: Sequence[str]) -> dict[str, dict[str, int]]:
        return bulk_sql.known_from_rows(await self._fetch(bulk_sql.KNOWN_MANY, list(addresses)))

    async def logged_amounts(self, addresses: Sequence[str]
                             ) -> dict[str, dict[str, tuple[int, int]]]:
        return bulk_sql.amounts_from_rows(await self._fetch(bulk_sql.AMOUNTS, list(addresses)))

    async def get_tip(self) -> tuple[int, str] | None:
        rows = await self._fetch("SELECT tip_height, tip_hash FROM chainwire_meta")
        if rows[0][0] is None:
            return None
        return int(rows[0][0]), str(rows[0][1])

    async def set_tip(self, height: int, block_hash: str) -> None:
        await self._execute(
            "UPDATE chainwire_meta SET tip_height = $1, tip_hash = $2", height, block_hash
        )


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
