"""The PostgreSQL event log (``[store] url = "postgresql://..."``), with psycopg 3 async.

For deployments with several nodes: every node appends to the same log. One
connection per node, used by one call at a time (the writer batches, so one is
enough); a broken connection is reopened on the next call, and the call that
met the break raises StoreUnavailable (the writer retries its batch).

Our tables live in the connection's current schema (``search_path``); any other
table there is left alone. Migrations take a transaction-scoped advisory lock,
so nodes starting together migrate once.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from fablecast.server.store.base import (
    APP_ID,
    EventLog,
    NewEvent,
    SchemaTooNew,
    StoreCorrupt,
    StoredEvent,
    StoreError,
    StoreUnavailable,
    StreamState,
)
from fablecast.server.store.schema import SCHEMA_VERSION, statements

T = TypeVar("T")

_OURS = ("meta", "schema_migrations", "events", "streams", "stream_frames")
#: pg_advisory_xact_lock key of schema migrations ("fablecast" in ASCII, truncated).
_MIGRATION_LOCK = 0x6661626C6563


class PostgresLog(EventLog):
    """An event log in the PostgreSQL database at ``url``."""

    def __init__(self, url: str, *, connect_timeout_s: float = 5.0, reader: bool = False) -> None:
        self.url = url
        #: Only to read (``fablecast transcript``): nothing is created or migrated.
        self.reader = reader
        self.where = _redacted(url)
        self.connect_timeout_s = connect_timeout_s
        self._conn: Any = None
        self._lock = asyncio.Lock()
        self._closed = False

    async def _connect(self) -> Any:
        try:
            import psycopg
        except ImportError as exc:  # pragma: no cover - the extra is in the Makefile's EXTRAS
            raise StoreUnavailable(
                "PostgreSQL needs psycopg: pip install 'fablecast[postgres]'"
            ) from exc
        if self._conn is not None and not self._conn.closed:
            return self._conn
        try:
            self._conn = await psycopg.AsyncConnection.connect(
                self.url, autocommit=True, connect_timeout=max(1, round(self.connect_timeout_s))
            )
        except psycopg.Error as exc:
            raise StoreUnavailable(f"cannot reach PostgreSQL at {self.where}: {exc}") from exc
        return self._conn

    async def _call(self, fn: Callable[[Any], Awaitable[T]]) -> T:
        import psycopg

        if self._closed:
            raise StoreUnavailable(f"{self.where}: the event log is closed")
        async with self._lock:
            conn = await self._connect()
            try:
                return await fn(conn)
            except StoreError:
                raise
            except psycopg.Error as exc:
                if conn.closed or isinstance(exc, psycopg.OperationalError):
                    self._conn = None
                    await _close_quietly(conn)
                raise StoreUnavailable(f"PostgreSQL at {self.where}: {exc}") from exc

    # ------------------------------------------------------------------ open / close

    async def open(self) -> None:
        """Connect, check and migrate; see ``EventLog.open``."""
        self._closed = False
        await self._call(self._open)

    async def _open(self, conn: Any) -> None:
        import psycopg

        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            cur = await conn.execute(
                "SELECT table_name FROM information_schema.tables"
                " WHERE table_schema = current_schema() AND table_name = ANY(%s)",
                (list(_OURS),),
            )
            tables = {r[0] for r in await cur.fetchall()}
            current = 0
            if tables:
                if "meta" not in tables or "schema_migrations" not in tables:
                    raise StoreCorrupt(
                        f"{self.where}: tables {sorted(tables)} belong to another application; "
                        "nothing was changed. Use another database or schema."
                    )
                cur = await conn.execute("SELECT value FROM meta WHERE key = 'app'")
                row = await cur.fetchone()
                if row is None or row[0] != APP_ID:
                    raise StoreCorrupt(f"{self.where} is not a Fablecast event log; unchanged")
                cur = await conn.execute("SELECT MAX(version) FROM schema_migrations")
                current = (await cur.fetchone())[0] or 0
                if current > SCHEMA_VERSION:
                    raise SchemaTooNew(
                        f"{self.where} has schema version {current}, newer than this Fablecast "
                        f"(which knows up to {SCHEMA_VERSION}): upgrade Fablecast; nothing "
                        "was changed"
                    )
            if self.reader and current < SCHEMA_VERSION:
                raise StoreUnavailable(
                    f"{self.where} has schema version {current}; a node creates or migrates "
                    f"it to {SCHEMA_VERSION} when it starts"
                )
            for version in range(current + 1, SCHEMA_VERSION + 1):
                for sql in statements(version, "postgres"):
                    try:
                        await conn.execute(sql)
                    except psycopg.errors.ProgrammingError as exc:  # rolled back below
                        raise StoreError(
                            f"{self.where}: migration to version {version} failed ({exc}); "
                            "nothing was changed"
                        ) from exc
                await conn.execute(
                    "INSERT INTO schema_migrations (version, applied_at) VALUES (%s, %s)",
                    (version, time.time()),
                )
            if current == 0:
                await conn.execute("INSERT INTO meta (key, value) VALUES ('app', %s)", (APP_ID,))

    async def close(self) -> None:
        """Close the connection (idempotent)."""
        self._closed = True
        conn, self._conn = self._conn, None
        if conn is not None:
            await _close_quietly(conn)

    # ------------------------------------------------------------------ reads and writes

    async def schema_version(self) -> int:
        """See ``EventLog.schema_version``."""

        async def read(conn: Any) -> int:
            cur = await conn.execute("SELECT MAX(version) FROM schema_migrations")
            return int((await cur.fetchone())[0])

        return await self._call(read)

    async def append(self, events: Sequence[NewEvent]) -> list[int]:
        """See ``EventLog.append``."""
        rows = [(e.room, e.kind, e.at, json.dumps(e.data, separators=(",", ":"))) for e in events]

        async def write(conn: Any) -> list[int]:
            ids: list[int] = []
            async with conn.transaction(), conn.cursor() as cur:
                await cur.executemany(
                    "INSERT INTO events (room, kind, at, data) VALUES (%s, %s, %s, %s)"
                    " RETURNING id",
                    rows,
                    returning=True,
                )
                while True:
                    row = await cur.fetchone()
                    if row is not None:
                        ids.append(int(row[0]))
                    if not cur.nextset():
                        break
            return ids

        return await self._call(write)

    async def events(self, room: str, after: int = 0) -> list[StoredEvent]:
        """See ``EventLog.events``."""

        async def read(conn: Any) -> list[StoredEvent]:
            cur = await conn.execute(
                "SELECT id, room, kind, data, at FROM events WHERE room = %s AND id > %s"
                " ORDER BY id",
                (room, after),
            )
            return [
                StoredEvent(int(i), r, k, _load(d), float(a))
                for i, r, k, d, a in await cur.fetchall()
            ]

        return await self._call(read)

    async def rooms(self) -> list[str]:
        """See ``EventLog.rooms``."""

        async def read(conn: Any) -> list[str]:
            cur = await conn.execute("SELECT room FROM events GROUP BY room ORDER BY MIN(id)")
            return [r for (r,) in await cur.fetchall()]

        return await self._call(read)

    async def save_stream(self, room: str, state: StreamState) -> None:
        """See ``EventLog.save_stream``."""

        async def write(conn: Any) -> None:
            async with conn.transaction(), conn.cursor() as cur:
                await cur.execute("DELETE FROM stream_frames WHERE room = %s", (room,))
                await cur.execute(
                    "INSERT INTO streams (room, epoch, seq, clean, at) VALUES (%s, %s, %s, %s, %s)"
                    " ON CONFLICT (room) DO UPDATE SET epoch = excluded.epoch,"
                    " seq = excluded.seq, clean = excluded.clean, at = excluded.at",
                    (room, state.epoch, state.seq, int(state.clean), time.time()),
                )
                if state.frames:
                    await cur.executemany(
                        "INSERT INTO stream_frames (room, seq, data) VALUES (%s, %s, %s)",
                        [(room, seq, data) for seq, data in state.frames],
                    )

        await self._call(write)

    async def stream(self, room: str) -> StreamState | None:
        """See ``EventLog.stream``."""

        async def read(conn: Any) -> StreamState | None:
            cur = await conn.execute(
                "SELECT epoch, seq, clean FROM streams WHERE room = %s", (room,)
            )
            row = await cur.fetchone()
            if row is None:
                return None
            cur = await conn.execute(
                "SELECT seq, data FROM stream_frames WHERE room = %s ORDER BY seq", (room,)
            )
            frames = [(int(s), bytes(d)) for s, d in await cur.fetchall()]
            return StreamState(row[0], int(row[1]), bool(row[2]), frames)

        return await self._call(read)

    async def forget_rooms_idle_since(self, before: float) -> list[str]:
        """See ``EventLog.forget_rooms_idle_since``."""

        async def write(conn: Any) -> list[str]:
            async with conn.transaction():
                cur = await conn.execute(
                    "SELECT room FROM events GROUP BY room HAVING MAX(at) < %s", (before,)
                )
                idle = [r for (r,) in await cur.fetchall()]
                for table in ("events", "streams", "stream_frames"):
                    await conn.execute(f"DELETE FROM {table} WHERE room = ANY(%s)", (idle,))
            return idle

        return await self._call(write)


def _load(data: str) -> dict[str, Any]:
    value = json.loads(data)
    return value if isinstance(value, dict) else {"value": value}


def _redacted(url: str) -> str:
    """``url`` without its password (for messages and logs)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


async def _close_quietly(conn: Any) -> None:
    try:
        await conn.close()
    except Exception:  # already broken: nothing to release
        return
