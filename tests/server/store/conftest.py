"""Store tests run on SQLite and on a real PostgreSQL started here (bench.pgserver)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from fablecast.bench.pgserver import pg_missing, postgres_server
from fablecast.server.store import EventLog, log_for_url


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A PostgreSQL server for this test session."""
    reason = pg_missing()
    if reason:
        pytest.skip(reason)
    with postgres_server() as url:
        yield url


async def fresh_pg(url: str) -> str:
    """A new empty database on the test server (each test gets its own)."""
    import psycopg

    name = "t_" + uuid.uuid4().hex[:12]
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute(f"CREATE DATABASE {name}")
    return url.rsplit("/", 1)[0] + "/" + name


@pytest.fixture(params=["sqlite", "postgres"])
async def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of an empty event log of each backend."""
    if request.param == "sqlite":
        return str(tmp_path / "log.sqlite3")
    return await fresh_pg(request.getfixturevalue("pg_url"))


@pytest.fixture
async def store(store_url: str, tmp_path: Path) -> AsyncIterator[EventLog]:
    """An opened, empty event log of each backend."""
    log = log_for_url(store_url, tmp_path)
    await log.open()
    yield log
    await log.close()
