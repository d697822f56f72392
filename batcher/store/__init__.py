"""Storage: one interface (``interface.py``), two engines (PostgreSQL and SQLite).

``open_store(url)`` picks the engine; the engines import only ``interface``, ``base`` and
``rows``, never this package's ``__init__``, so there is no import circle.
"""

from __future__ import annotations

import os
from typing import Any

from batcher.store.interface import (
    BatchLog,
    BatchReader,
    BatchStore,
    EventQueries,
    NewBatch,
    ProducerState,
    Prunable,
    StoreError,
    StoreUnavailable,
    WatchList,
    redact_url,
    validate_event,
)

__all__ = [
    "BatchLog",
    "BatchReader",
    "BatchStore",
    "EventQueries",
    "NewBatch",
    "ProducerState",
    "Prunable",
    "StoreError",
    "StoreUnavailable",
    "WatchList",
    "open_store",
    "redact_url",
    "validate_event",
]


def open_store(url: str, **options: Any) -> BatchStore:
    """Make the store for ``url`` (not yet opened: use ``async with``).

    ``postgresql://user@host:port/db`` (or ``postgres://``) selects PostgreSQL;
    ``sqlite:///relative.db`` (relative to the working directory) or
    ``sqlite:////absolute/path.db`` selects the embedded SQLite store. ``options`` go to the
    engine's constructor.
    """
    if not isinstance(url, str):
        raise ValueError(f"database URL must be a string, got {url!r}")
    if url.startswith(("postgresql://", "postgres://")):
        from batcher.store.postgres import PostgresStore

        return PostgresStore(url, **options)
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///") :]
        if not path:
            raise ValueError(f"database URL {url!r} names no file: use sqlite:///chainwire.db")
        from batcher.store.sqlite import SQLiteStore

        return SQLiteStore(os.fspath(path), **options)
    raise ValueError(
        f"unsupported database URL {redact_url(url)!r}: expected postgresql://user@host/db, "
        "sqlite:///relative.db or sqlite:////absolute/path.db"
    )
