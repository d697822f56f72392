"""The PostgreSQL schema and its migrations, applied once at ``open()``.

Kept apart from the engine: the SQL that shapes the database changes by adding a migration,
never by editing the store's queries.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

import asyncpg

from batcher.store.interface import StoreError
from batcher.store.postgres_watch import LEASES_MIGRATION

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "migrate"]

# The engine's logger: "migrated ..." lines have always been its own.
logger = logging.getLogger("batcher.store.postgres")

#: The schema this code writes; older schemas are migrated at ``open()``.
SCHEMA_VERSION = 2

# Any constant works: it only has to be the same for every node migrating this database.
MIGRATION_LOCK = 0x43484E57  # "CHNW"

META = """
CREATE TABLE IF NOT EXISTS chainwire_meta (
    id smallint PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    schema_version integer NOT NULL,
    epoch text NOT NULL,
    last_seq bigint NOT NULL DEFAULT 0,
    tip_height bigint,
    tip_hash text
)
"""

# Each entry migrates from the previous version. Never edit a released entry: add one.
MIGRATIONS: dict[int, str] = {
    1: """
    CREATE TABLE chainwire_batches (
        seq bigint PRIMARY KEY,
        batch_id text NOT NULL,
        type text NOT NULL,
        ts double precision NOT NULL,
        count integer NOT NULL
    );
    -- ts grows with seq: a BRIN index costs next to nothing per insert and serves prune().
    CREATE INDEX chainwire_batches_ts ON chainwire_batches USING brin (ts);
    -- data is json text, not jsonb: jsonb reorders keys and replay must be byte-exact.
    CREATE TABLE chainwire_events (
        seq bigint NOT NULL,
        idx integer NOT NULL,
        id text NOT NULL,
        type text NOT NULL,
        key text NOT NULL,
        ts double precision NOT NULL,
        value_sats bigint,
        data text NOT NULL,
        PRIMARY KEY (seq, idx)
    );
    CREATE INDEX chainwire_events_type_key ON chainwire_events (type, key, seq);
    CREATE INDEX chainwire_events_large ON chainwire_events (value_sats)
        WHERE type = 'tx.large';
    CREATE TABLE chainwire_watch (
        id bigserial PRIMARY KEY,
        address text NOT NULL UNIQUE
    );
    CREATE TABLE chainwire_known_tx (
        address text NOT NULL,
        txid text NOT NULL,
        height bigint NOT NULL,
        PRIMARY KEY (address, txid)
    );
    """,
    2: LEASES_MIGRATION,
}


async def migrate(conn: asyncpg.pool.PoolConnectionProxy[Any], url: str) -> tuple[str, int]:
    """Create or migrate the schema in one transaction; return (epoch, last_seq).

    ``url`` (already redacted) names the database in errors and logs.
    """
    async with conn.transaction():
        # Nodes starting together: one migrates, the others wait and see it done.
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
        await conn.execute(META)
        row = await conn.fetchrow("SELECT schema_version, epoch FROM chainwire_meta")
        version = 0 if row is None else int(row["schema_version"])
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"database at {url} has schema version {version}, newer than this "
                f"Chainwire ({SCHEMA_VERSION}): upgrade Chainwire"
            )
        for step in range(version + 1, SCHEMA_VERSION + 1):
            await conn.execute(MIGRATIONS[step])
            logger.info("migrated %s to schema version %d", url, step)
        if row is None:
            epoch = uuid.uuid4().hex
            await conn.execute(
                "INSERT INTO chainwire_meta (schema_version, epoch) VALUES ($1, $2)",
                SCHEMA_VERSION,
                epoch,
            )
        else:
            epoch = str(row["epoch"])
            await conn.execute("UPDATE chainwire_meta SET schema_version = $1", SCHEMA_VERSION)
        last_seq = int(await conn.fetchval("SELECT last_seq FROM chainwire_meta"))
    return epoch, last_seq
