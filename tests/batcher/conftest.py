"""Fixtures for the batcher tests: a fresh PostgreSQL database per test, both store engines."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import pytest

from batcher.store import BatchStore, open_store
from tests.batcher.pgcluster import PgCluster, throwaway_cluster, why_no_cluster

#: Where the tests create (and drop) their own databases.
PG_ADMIN_URL = os.environ.get(
    "CHAINWIRE_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def pg_url_for(name: str, *, host: str = "127.0.0.1", port: int = 5432) -> str:
    return f"postgresql://postgres@{host}:{port}/{name}"


@asynccontextmanager
async def fresh_pg_database() -> AsyncIterator[str]:
    """Create a uniquely named database; drop it (forcing out stray sessions) afterwards."""
    name = f"cw_batcher_{uuid.uuid4().hex[:16]}"
    conn = await asyncpg.connect(PG_ADMIN_URL)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    try:
        yield name
    finally:
        conn = await asyncpg.connect(PG_ADMIN_URL)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


@pytest.fixture
async def pg_database(anyio_backend: str) -> AsyncIterator[str]:
    """The name of a fresh, empty database."""
    async with fresh_pg_database() as name:
        yield name


@pytest.fixture(params=["sqlite", "postgres"])
async def store_url(
    request: pytest.FixtureRequest, tmp_path: Path, anyio_backend: str
) -> AsyncIterator[str]:
    """A URL for a fresh store of each engine."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'chainwire.db'}"
        return
    async with fresh_pg_database() as name:
        yield pg_url_for(name)


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[BatchStore]:
    """An open store of each engine."""
    async with open_store(store_url) as opened:
        yield opened


@pytest.fixture
def pg_cluster() -> Iterator[PgCluster]:
    """A PostgreSQL server of the test's own (free loopback port, temporary directory), for
    tests that stop and start it; skipped only where no PostgreSQL binaries exist."""
    reason = why_no_cluster()
    if reason is not None:
        pytest.skip(f"cannot start a throwaway PostgreSQL cluster: {reason}")
    with throwaway_cluster() as cluster:
        yield cluster
