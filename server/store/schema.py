"""Versioned schema migrations, shared by SQLite and PostgreSQL.

Migration *n* brings the schema from version *n - 1* to *n*. They are never
edited once released: a change is a new migration appended here. A database
records every version applied (``schema_migrations``) and its owner
(``meta.app``); ``open`` runs the missing ones in one transaction, so a failed
migration leaves the database as it was.

The SQL is written once with placeholders for the three types the dialects
spell differently (``{id}``, ``{blob}``, ``{real}``).
"""

from __future__ import annotations

from typing import Final, Literal

Dialect = Literal["sqlite", "postgres"]

_TYPES: Final[dict[Dialect, dict[str, str]]] = {
    "sqlite": {"id": "INTEGER PRIMARY KEY AUTOINCREMENT", "blob": "BLOB", "real": "REAL"},
    "postgres": {"id": "BIGSERIAL PRIMARY KEY", "blob": "BYTEA", "real": "DOUBLE PRECISION"},
}

#: Migration n is MIGRATIONS[n - 1]: its statements, in order.
MIGRATIONS: Final[list[list[str]]] = [
    # 1: the event log, stream checkpoints and the frames saved at a clean stop.
    [
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at {real} NOT NULL)",
        "CREATE TABLE events (id {id}, room TEXT NOT NULL, kind TEXT NOT NULL,"
        " at {real} NOT NULL, data TEXT NOT NULL)",
        "CREATE INDEX events_room ON events (room, id)",
        "CREATE TABLE streams (room TEXT PRIMARY KEY, epoch TEXT NOT NULL,"
        " seq BIGINT NOT NULL, clean INTEGER NOT NULL, at {real} NOT NULL)",
        "CREATE TABLE stream_frames (room TEXT NOT NULL, seq BIGINT NOT NULL,"
        " data {blob} NOT NULL, PRIMARY KEY (room, seq))",
    ],
]

#: The schema version this code writes and reads.
SCHEMA_VERSION: Final[int] = len(MIGRATIONS)


def statements(version: int, dialect: Dialect) -> list[str]:
    """The SQL of migration ``version`` (1-based) for ``dialect``."""
    return [sql.format(**_TYPES[dialect]) for sql in MIGRATIONS[version - 1]]
