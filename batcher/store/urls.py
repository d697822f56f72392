"""Database URLs: the one check of what ``open_store`` accepts, shared with the settings.

``postgresql://…`` (or ``postgres://``) names PostgreSQL; ``sqlite:///relative.db`` (relative
to the working directory) or ``sqlite:////absolute/path.db`` the embedded SQLite store.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

from batcher.store.interface import redact_url

__all__ = ["DatabaseUrl", "parse_database_url"]


@dataclass(frozen=True, slots=True)
class DatabaseUrl:
    """``engine`` and its ``target``: the DSN for PostgreSQL, the file path for SQLite."""

    engine: Literal["postgresql", "sqlite"]
    target: str


def parse_database_url(url: str) -> DatabaseUrl:
    """Which engine ``url`` selects; ``ValueError`` (password hidden) for anything else."""
    if not isinstance(url, str):
        raise ValueError(f"database URL must be a string, got {url!r}")
    if url.startswith(("postgresql://", "postgres://")):
        return DatabaseUrl("postgresql", url)
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///") :]
        if not path:
            raise ValueError(f"database URL {url!r} names no file: use sqlite:///chainwire.db")
        return DatabaseUrl("sqlite", os.fspath(path))
    raise ValueError(
        f"unsupported database URL {redact_url(url)!r}: expected postgresql://user@host/db, "
        "sqlite:///relative.db or sqlite:////absolute/path.db"
    )
