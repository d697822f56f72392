"""Storage: one interface (``interface.py``), two engines (PostgreSQL and SQLite).

``open_store(url)`` picks the engine; the engines import only ``interface``, ``base`` and
``rows``, never this package's ``__init__``, so there is no import circle.
"""

from __future__ import annotations

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
    WatchLimitReached,
    WatchList,
    WatchPage,
    redact_url,
    validate_event,
)
from batcher.store.urls import DatabaseUrl, parse_database_url

__all__ = [
    "BatchLog",
    "BatchReader",
    "BatchStore",
    "DatabaseUrl",
    "EventQueries",
    "NewBatch",
    "ProducerState",
    "Prunable",
    "StoreError",
    "StoreUnavailable",
    "WatchLimitReached",
    "WatchList",
    "WatchPage",
    "open_store",
    "parse_database_url",
    "redact_url",
    "validate_event",
]


def open_store(url: str, **options: Any) -> BatchStore:
    """Make the store for ``url`` (not yet opened: use ``async with``).

    ``postgresql://user@host:port/db`` (or ``postgres://``) selects PostgreSQL;
    ``sqlite:///relative.db`` (relative to the working directory) or
    ``sqlite:////absolute/path.db`` selects the embedded SQLite store. ``options`` go to the
    engine's constructor. ``parse_database_url`` is the check (the settings use it too).
    """
    parsed = parse_database_url(url)
    if parsed.engine == "postgresql":
        from batcher.store.postgres import PostgresStore

        return PostgresStore(parsed.target, **options)
    from batcher.store.sqlite import SQLiteStore

    return SQLiteStore(parsed.target, **options)
