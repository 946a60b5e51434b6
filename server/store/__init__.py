"""The event log: every room's events, durable (SQLite by default, PostgreSQL by URL).

``open_log(config)`` picks the backend from ``[store] url``:

- empty: ``<data_dir>/fablecast.sqlite3`` (created with its folder);
- ``sqlite:///abs/path`` / ``sqlite://rel/path`` / a plain path: that SQLite file;
- ``postgresql://...`` or ``postgres://...``: that PostgreSQL database.

See docs/store.md for what is logged, restore, resume across restarts and retention.
"""

from __future__ import annotations

from pathlib import Path

from fablecast.server.store.base import (
    EventLog,
    NewEvent,
    SchemaTooNew,
    StoreCorrupt,
    StoredEvent,
    StoreError,
    StoreUnavailable,
    StreamState,
)
from fablecast.server.store.writer import StoreBacklog, StoreWriter

__all__ = [
    "EventLog",
    "NewEvent",
    "SchemaTooNew",
    "StoreBacklog",
    "StoreCorrupt",
    "StoreError",
    "StoreUnavailable",
    "StoreWriter",
    "StoredEvent",
    "StreamState",
    "log_for_url",
]

DEFAULT_FILE = "fablecast.sqlite3"


def log_for_url(
    url: str, data_dir: str | Path = "data", *, synchronous: str = "full", reader: bool = False
) -> EventLog:
    """The (unopened) event log that ``url`` names; see the module docstring.

    ``reader``: only to read, beside a node that writes (SQLite: no lock, nothing created).
    """
    if url.startswith(("postgresql://", "postgres://")):
        from fablecast.server.store.postgres import PostgresLog

        return PostgresLog(url, reader=reader)
    from fablecast.server.store.sqlite import SqliteLog

    if not url:
        return SqliteLog(Path(data_dir) / DEFAULT_FILE, synchronous=synchronous, reader=reader)
    if url.startswith("sqlite://"):
        path = url.removeprefix("sqlite://")
        path = path[1:] if path.startswith("//") else path  # sqlite:///abs -> /abs
        return SqliteLog(path, synchronous=synchronous, reader=reader)
    if "://" in url:
        raise StoreError(f"[store] url {url!r}: use a path, sqlite://..., or postgresql://...")
    file = Path(url) if Path(url).is_absolute() else Path(data_dir) / url
    return SqliteLog(file, synchronous=synchronous, reader=reader)
