"""One contract, two backends: every test here runs on SQLite and on a real PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import socket
import sqlite3
from pathlib import Path

import pytest

from fablecast.server.store import (
    NewEvent,
    SchemaTooNew,
    StoreCorrupt,
    StoreError,
    StoreUnavailable,
    StreamState,
    log_for_url,
)
from fablecast.server.store.base import EventLog
from fablecast.server.store.schema import SCHEMA_VERSION


def ev(room: str, kind: str, at: float = 1.0, **data: object) -> NewEvent:
    return NewEvent(room, kind, dict(data), at)


async def test_append_and_read_back_in_order_with_opaque_data(store: EventLog) -> None:
    why = {"goal": "find the lantern", "cues": [{"music": "low"}], "nested": {"x": [1, 2.5]}}
    ids = await store.append(
        [
            ev("a", "created", spec={"title": "T"}),
            ev("b", "created"),
            ev("a", "beat", beat=1, text="Once.", choice=None, why=why, emoji="🏮"),
        ]
    )
    assert ids == sorted(ids) and len(set(ids)) == 3
    got = await store.events("a")
    assert [e.kind for e in got] == ["created", "beat"]
    assert got[1].data == {"beat": 1, "text": "Once.", "choice": None, "why": why, "emoji": "🏮"}
    assert [e.id for e in await store.events("a", after=got[0].id)] == [got[1].id]
    assert await store.rooms() == ["a", "b"]
    assert await store.schema_version() == SCHEMA_VERSION


async def test_events_survive_reopen_and_migrations_run_once(
    store: EventLog, store_url: str, tmp_path: Path
) -> None:
    await store.append([ev("a", "beat", beat=1, text="x")])
    await store.close()
    again = log_for_url(store_url, tmp_path)
    await again.open()
    try:
        assert [e.data["text"] for e in await again.events("a")] == ["x"]
        assert await again.schema_version() == SCHEMA_VERSION
    finally:
        await again.close()


async def test_stream_checkpoint_replaces_the_last_and_keeps_frames(store: EventLog) -> None:
    assert await store.stream("a") is None
    await store.save_stream("a", StreamState("e1", 3, True, [(2, b"{}"), (3, b'{"x":1}')]))
    await store.save_stream("b", StreamState("f", 1, False))
    assert await store.stream("a") == StreamState("e1", 3, True, [(2, b"{}"), (3, b'{"x":1}')])
    await store.save_stream("a", StreamState("e2", 0, False))
    assert await store.stream("a") == StreamState("e2", 0, False, [])
    assert await store.stream("b") == StreamState("f", 1, False, [])


async def test_retention_forgets_whole_idle_rooms_only(store: EventLog) -> None:
    await store.append([ev("old", "created", at=10.0), ev("old", "beat", at=20.0)])
    await store.append([ev("live", "created", at=10.0), ev("live", "beat", at=200.0)])
    await store.save_stream("old", StreamState("e", 1, True, [(1, b"{}")]))
    assert await store.forget_rooms_idle_since(100.0) == ["old"]
    assert await store.events("old") == []
    assert await store.stream("old") is None
    assert len(await store.events("live")) == 2


async def test_a_schema_newer_than_the_code_is_refused_untouched(
    store: EventLog, store_url: str, tmp_path: Path
) -> None:
    await store.append([ev("a", "beat", beat=1, text="x")])
    await _sql(store, "INSERT INTO schema_migrations (version, applied_at) VALUES (99, 0)")
    await store.close()
    again = log_for_url(store_url, tmp_path)
    with pytest.raises(SchemaTooNew, match="schema version 99"):
        await again.open()
    await again.close()
    # Still the same database: the newer schema and the events are there.
    check = log_for_url(store_url, tmp_path)
    await _sql(check, "DELETE FROM schema_migrations WHERE version = 99", opened=False)
    await check.open()
    assert len(await check.events("a")) == 1
    await check.close()


async def test_a_foreign_database_is_refused_untouched(store_url: str, tmp_path: Path) -> None:
    log = log_for_url(store_url, tmp_path)
    await _sql(log, "CREATE TABLE events (x INTEGER)", opened=False)
    with pytest.raises(StoreCorrupt, match="another application"):
        await log.open()
    await log.close()
    rows = await _sql(log_for_url(store_url, tmp_path), "SELECT COUNT(*) FROM events", opened=False)
    assert rows == [(0,)]


async def test_a_corrupt_sqlite_file_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "fablecast.sqlite3"
    junk = b"this is not a database\n" * 300
    path.write_bytes(junk)
    log = log_for_url(str(path), tmp_path)
    with pytest.raises(StoreCorrupt, match="not an SQLite database"):
        await log.open()
    await log.close()
    assert path.read_bytes() == junk
    assert sorted(os.listdir(tmp_path)) == ["fablecast.sqlite3", "fablecast.sqlite3.lock"]


async def test_an_unreachable_postgres_is_a_clear_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = log_for_url(f"postgresql://u:secret@127.0.0.1:{port}/db")
    with pytest.raises(StoreUnavailable, match="cannot reach PostgreSQL") as info:
        await asyncio.wait_for(log.open(), 20)
    assert "secret" not in str(info.value)
    await log.close()


async def _sql(log: EventLog, sql: str, *, opened: bool = True) -> list[tuple[object, ...]]:
    """Run raw SQL on the database behind ``log`` (to fake other writers)."""
    from fablecast.server.store.postgres import PostgresLog
    from fablecast.server.store.sqlite import SqliteLog

    if isinstance(log, SqliteLog):
        with sqlite3.connect(log.path) as db:
            return db.execute(sql).fetchall()
    assert isinstance(log, PostgresLog)
    import psycopg

    async with await psycopg.AsyncConnection.connect(log.url, autocommit=True) as conn:
        cur = await conn.execute(sql)
        return list(await cur.fetchall()) if cur.description else []


NEXT = ["CREATE TABLE extra (x INTEGER)", "INSERT INTO extra (x) VALUES (1)"]


def _with_migration(monkeypatch: pytest.MonkeyPatch, statements: list[str]) -> None:
    """Pretend this code knows one more migration."""
    from fablecast.server.store import postgres, schema, sqlite

    migrations = [*schema.MIGRATIONS, statements]
    monkeypatch.setattr(schema, "MIGRATIONS", migrations)
    for module in (schema, sqlite, postgres):
        monkeypatch.setattr(module, "SCHEMA_VERSION", len(migrations))


async def test_a_new_migration_is_applied_once_on_open(
    store: EventLog, store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await store.append([ev("a", "beat", beat=1, text="x")])
    await store.close()
    _with_migration(monkeypatch, NEXT)
    for _ in range(2):
        again = log_for_url(store_url, tmp_path)
        await again.open()
        assert await again.schema_version() == SCHEMA_VERSION + 1
        await again.close()
    assert await _sql(again, "SELECT x FROM extra", opened=False) == [(1,)]
    assert len(await _sql(again, "SELECT * FROM events", opened=False)) == 1


async def test_a_failing_migration_changes_nothing(
    store: EventLog, store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await store.close()
    _with_migration(monkeypatch, [*NEXT, "THIS IS NOT SQL"])
    again = log_for_url(store_url, tmp_path)
    with pytest.raises(
        StoreError, match=r"(?s)migration to version \d+ failed .*nothing was changed"
    ):
        await again.open()
    await again.close()
    monkeypatch.undo()
    rows = await _sql(again, "SELECT MAX(version) FROM schema_migrations", opened=False)
    assert rows == [(SCHEMA_VERSION,)]
    tables = "SELECT COUNT(*) FROM information_schema.tables WHERE table_name = 'extra'"
    if "postgres" in store_url:
        assert await _sql(again, tables, opened=False) == [(0,)]
    else:
        names = await _sql(
            again, "SELECT name FROM sqlite_master WHERE name = 'extra'", opened=False
        )
        assert names == []


async def test_one_node_per_sqlite_file_and_readers_beside_it(tmp_path: Path) -> None:
    path = tmp_path / "log.sqlite3"
    first = log_for_url(str(path))
    await first.open()
    await first.append([ev("a", "beat", beat=1, text="x")])
    second = log_for_url(str(path))
    with pytest.raises(
        StoreUnavailable, match=rf"in use by another Fablecast node \(pid {os.getpid()}\)"
    ):
        await second.open()
    await second.close()
    reader = log_for_url(str(path), reader=True)
    await reader.open()
    assert [e.data["text"] for e in await reader.events("a")] == ["x"]
    await reader.close()
    await first.close()
    await second.open()  # the lock went with the first
    await second.close()
    missing = log_for_url(str(tmp_path / "none.sqlite3"), reader=True)
    with pytest.raises(StoreUnavailable, match="no event log at"):
        await missing.open()
    await missing.close()
    assert not (tmp_path / "none.sqlite3").exists()


async def test_a_reader_creates_nothing(store_url: str, tmp_path: Path) -> None:
    reader = log_for_url(store_url, tmp_path, reader=True)
    with pytest.raises(StoreUnavailable):
        await reader.open()
    await reader.close()
    if "postgres" in store_url:
        count = "SELECT COUNT(*) FROM information_schema.tables WHERE table_name = 'events'"
        assert await _sql(reader, count, opened=False) == [(0,)]
    else:
        assert Path(store_url).name not in os.listdir(tmp_path)
    writer = log_for_url(store_url, tmp_path)
    await writer.open()
    await writer.append([ev("a", "beat", beat=1, text="x")])
    reader = log_for_url(store_url, tmp_path, reader=True)
    await reader.open()
    assert len(await reader.events("a")) == 1
    await reader.close()
    await writer.close()
