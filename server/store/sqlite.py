"""The SQLite event log (the default): one file under the data directory, WAL mode.

Every call runs on one dedicated thread that owns the connection, so the event
loop never waits on the disk. WAL lets readers (a transcript request) run
beside the writer. ``synchronous`` is FULL by default: a commit survives a power
loss, not only a killed process (NORMAL survives SIGKILL and is faster; see
docs/store.md).
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any, TypeVar

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


class SqliteLog(EventLog):
    """An event log in the SQLite file ``path`` (created with its folder if absent).

    One node writes a file: ``open`` takes an exclusive lock on ``<path>.lock``
    (held until ``close``), and a second node on the same file is refused with
    the first one's pid. ``reader=True`` opens without the lock, for reading
    only (``fablecast transcript`` while a node runs): nothing is created or
    migrated then.
    """

    def __init__(
        self, path: str | Path, *, synchronous: str = "full", reader: bool = False
    ) -> None:
        self.path = Path(path)
        self.where = str(self.path)
        self.reader = reader
        self._lock: IO[str] | None = None
        self.synchronous = synchronous.upper()
        if self.synchronous not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise ValueError(f"synchronous must be off, normal, full or extra, not {synchronous}")
        self._db: sqlite3.Connection | None = None
        self._pool: ThreadPoolExecutor | None = None

    async def _run(self, fn: Callable[[], T]) -> T:
        if self._pool is None:
            raise StoreUnavailable(f"{self.where}: the event log is closed")
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn)

    @property
    def db(self) -> sqlite3.Connection:
        """The connection (only touched on the store's thread)."""
        assert self._db is not None, "open() first"
        return self._db

    # ------------------------------------------------------------------ open / close

    async def open(self) -> None:
        """Open (creating if absent), check and migrate; see ``EventLog.open``."""
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="fablecast-sqlite")
        try:
            await self._run(self._open)
        except BaseException:
            await self.close()
            raise

    def _open(self) -> None:
        if self.reader:
            self._open_reader()
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._take_lock()
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except (OSError, sqlite3.Error) as exc:
            raise StoreUnavailable(f"cannot open the event log {self.where}: {exc}") from exc
        self._db = db
        try:
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        except sqlite3.DatabaseError as exc:
            raise StoreCorrupt(
                f"{self.where} is not an SQLite database ({exc}); it was left untouched. "
                "Move it away or set [store] url to another file."
            ) from exc
        if tables:
            self._check_ours(tables)
        db.execute("PRAGMA busy_timeout = 5000")
        try:
            mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        except sqlite3.OperationalError as exc:
            raise StoreUnavailable(f"{self.where}: cannot switch to WAL mode: {exc}") from exc
        if str(mode).lower() != "wal":
            raise StoreUnavailable(f"{self.where}: WAL mode refused (journal mode {mode})")
        db.execute(f"PRAGMA synchronous = {self.synchronous}")
        self._migrate(tables)

    def _take_lock(self) -> None:
        lock = open(f"{self.path}.lock", "a+", encoding="ascii")  # noqa: SIM115 - held open
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            lock.seek(0)
            owner = lock.read().strip() or "?"
            lock.close()
            raise StoreUnavailable(
                f"{self.where} is in use by another Fablecast node (pid {owner}): one node "
                "per SQLite file (use PostgreSQL for several nodes)"
            ) from None
        lock.seek(0)
        lock.truncate()
        lock.write(f"{os.getpid()}\n")
        lock.flush()
        self._lock = lock

    def _open_reader(self) -> None:
        if not self.path.is_file():
            raise StoreUnavailable(f"no event log at {self.where}")
        try:
            db = sqlite3.connect(
                f"file:{self.path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False
            )
            self._db = db
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        except sqlite3.DatabaseError as exc:
            raise StoreCorrupt(f"{self.where} is not an SQLite database ({exc})") from exc
        self._check_ours(tables)
        version = db.execute("SELECT MAX(version) FROM schema_migrations").fetchone()[0] or 0
        if version < SCHEMA_VERSION:
            raise StoreUnavailable(
                f"{self.where} has schema version {version}; a node migrates it to "
                f"{SCHEMA_VERSION} when it starts"
            )

    def _check_ours(self, tables: set[str]) -> None:
        db = self.db
        if "meta" not in tables or "schema_migrations" not in tables:
            raise StoreCorrupt(
                f"{self.where} is an SQLite database of another application "
                f"(tables: {', '.join(sorted(tables)[:5])}); it was left untouched. "
                "Set [store] url to another file."
            )
        row = db.execute("SELECT value FROM meta WHERE key = 'app'").fetchone()
        if row is None or row[0] != APP_ID:
            raise StoreCorrupt(f"{self.where} is not a Fablecast event log; it was left untouched")
        version = db.execute("SELECT MAX(version) FROM schema_migrations").fetchone()[0] or 0
        if version > SCHEMA_VERSION:
            raise SchemaTooNew(
                f"{self.where} has schema version {version}, newer than this Fablecast "
                f"(which knows up to {SCHEMA_VERSION}): upgrade Fablecast; the file was "
                "left untouched"
            )

    def _migrate(self, tables: set[str]) -> None:
        db = self.db
        current = 0
        if tables:
            current = db.execute("SELECT MAX(version) FROM schema_migrations").fetchone()[0] or 0
        if current >= SCHEMA_VERSION:
            return
        db.execute("BEGIN IMMEDIATE")
        version = current
        try:
            for version in range(current + 1, SCHEMA_VERSION + 1):
                for sql in statements(version, "sqlite"):
                    db.execute(sql)
                db.execute(
                    "INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)",
                    (version, time.time()),
                )
            if current == 0:
                db.execute("INSERT INTO meta (key, value) VALUES ('app', ?)", (APP_ID,))
            db.execute("COMMIT")
        except BaseException as exc:
            db.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise StoreError(
                    f"{self.where}: migration to version {version} failed ({exc}); "
                    "nothing was changed"
                ) from exc
            raise

    async def close(self) -> None:
        """Close the connection and its thread (idempotent)."""
        pool, self._pool = self._pool, None
        if pool is None:
            return
        db, self._db = self._db, None
        if db is not None:
            await asyncio.get_running_loop().run_in_executor(pool, db.close)
        pool.shutdown(wait=False)
        lock, self._lock = self._lock, None
        if lock is not None:
            lock.close()  # releases the flock

    # ------------------------------------------------------------------ reads and writes

    async def schema_version(self) -> int:
        """See ``EventLog.schema_version``."""

        def read() -> int:
            return int(self.db.execute("SELECT MAX(version) FROM schema_migrations").fetchone()[0])

        return await self._run(read)

    async def append(self, events: Sequence[NewEvent]) -> list[int]:
        """See ``EventLog.append``."""
        rows = [(e.room, e.kind, e.at, json.dumps(e.data, separators=(",", ":"))) for e in events]

        def write() -> list[int]:
            db = self.db
            try:
                db.execute("BEGIN IMMEDIATE")
                try:
                    ids = [
                        int(
                            db.execute(
                                "INSERT INTO events (room, kind, at, data) VALUES (?, ?, ?, ?)",
                                row,
                            ).lastrowid
                            or 0
                        )
                        for row in rows
                    ]
                    db.execute("COMMIT")
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"{self.where}: append failed: {exc}") from exc
            return ids

        return await self._run(write)

    async def events(self, room: str, after: int = 0) -> list[StoredEvent]:
        """See ``EventLog.events``."""

        def read() -> list[StoredEvent]:
            cur = self.db.execute(
                "SELECT id, room, kind, data, at FROM events WHERE room = ? AND id > ? ORDER BY id",
                (room, after),
            )
            return [StoredEvent(i, r, k, _load(d), a) for i, r, k, d, a in cur]

        return await self._run(read)

    async def rooms(self) -> list[str]:
        """See ``EventLog.rooms``."""

        def read() -> list[str]:
            cur = self.db.execute("SELECT room FROM events GROUP BY room ORDER BY MIN(id)")
            return [r for (r,) in cur]

        return await self._run(read)

    async def save_stream(self, room: str, state: StreamState) -> None:
        """See ``EventLog.save_stream``."""

        def write() -> None:
            db = self.db
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute("DELETE FROM stream_frames WHERE room = ?", (room,))
                db.execute(
                    "INSERT INTO streams (room, epoch, seq, clean, at) VALUES (?, ?, ?, ?, ?)"
                    " ON CONFLICT (room) DO UPDATE SET epoch = excluded.epoch,"
                    " seq = excluded.seq, clean = excluded.clean, at = excluded.at",
                    (room, state.epoch, state.seq, int(state.clean), time.time()),
                )
                db.executemany(
                    "INSERT INTO stream_frames (room, seq, data) VALUES (?, ?, ?)",
                    [(room, seq, data) for seq, data in state.frames],
                )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

        await self._run(_wrapped(write, self.where))

    async def stream(self, room: str) -> StreamState | None:
        """See ``EventLog.stream``."""

        def read() -> StreamState | None:
            row = self.db.execute(
                "SELECT epoch, seq, clean FROM streams WHERE room = ?", (room,)
            ).fetchone()
            if row is None:
                return None
            frames = self.db.execute(
                "SELECT seq, data FROM stream_frames WHERE room = ? ORDER BY seq", (room,)
            ).fetchall()
            return StreamState(
                row[0], int(row[1]), bool(row[2]), [(s, bytes(d)) for s, d in frames]
            )

        return await self._run(read)

    async def forget_rooms_idle_since(self, before: float) -> list[str]:
        """See ``EventLog.forget_rooms_idle_since``."""

        def write() -> list[str]:
            db = self.db
            db.execute("BEGIN IMMEDIATE")
            try:
                idle = [
                    r
                    for (r,) in db.execute(
                        "SELECT room FROM events GROUP BY room HAVING MAX(at) < ?", (before,)
                    ).fetchall()
                ]
                for table in ("events", "streams", "stream_frames"):
                    db.executemany(f"DELETE FROM {table} WHERE room = ?", [(r,) for r in idle])
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            return idle

        return await self._run(_wrapped(write, self.where))


def _load(data: str) -> dict[str, Any]:
    value = json.loads(data)
    return value if isinstance(value, dict) else {"value": value}


def _wrapped(fn: Callable[[], T], where: str) -> Callable[[], T]:
    def call() -> T:
        try:
            return fn()
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"{where}: {exc}") from exc

    return call
