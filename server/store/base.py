"""The event log's contract: what a store keeps, what it refuses, and its errors.

A store is an append-only log of room events plus, per room, the stream's last
``(epoch, seq)`` checkpoint (with the frame history saved at a clean stop).

- ``append`` writes a batch in one transaction: all of it is durable when it
  returns, or none of it (the caller retries the same batch).
- Event ``data`` is opaque JSON: the room adds fields (a beat's why record,
  scene cues) and they flow through to restore and transcripts untouched.
- ``open`` refuses, before writing anything, a file that is not a database, a
  database of another application, and a schema newer than this code: never a
  partial overwrite (migrations run in one transaction).
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

#: ``meta.app`` of a Fablecast database (a database without it is foreign).
APP_ID = "fablecast"


class StoreError(Exception):
    """The event log cannot be used; the message says why and what to do."""


class StoreCorrupt(StoreError):
    """The file or database is not a Fablecast event log (corrupt or foreign)."""


class SchemaTooNew(StoreError):
    """The database was written by a newer Fablecast (its schema is ahead of this code)."""


class StoreUnavailable(StoreError):
    """The database cannot be reached (PostgreSQL down, disk full, file locked)."""


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event to append: ``kind`` (e.g. ``beat``), its room, time and opaque ``data``."""

    room: str
    kind: str
    data: dict[str, Any]
    at: float


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """An event as read back: ``id`` grows with append order (across rooms)."""

    id: int
    room: str
    kind: str
    data: dict[str, Any]
    at: float


@dataclass(frozen=True, slots=True)
class StreamState:
    """A room stream's checkpoint: its epoch, last seq, and whether the node stopped cleanly.

    ``frames`` (``(seq, json bytes)``, contiguous, ending at ``seq``) are kept only
    for a clean stop: the history a resuming viewer is replayed from.
    """

    epoch: str
    seq: int
    clean: bool
    frames: list[tuple[int, bytes]] = field(default_factory=list)


class EventLog(abc.ABC):
    """An event log backend (SQLite or PostgreSQL). Methods are coroutines; one writer at a time."""

    #: The URL or path, for messages.
    where: str = ""

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect, check the database is ours, and migrate it to this code's schema.

        Raises StoreCorrupt, SchemaTooNew or StoreUnavailable; writes nothing then.
        """

    @abc.abstractmethod
    async def close(self) -> None:
        """Release the connection (idempotent)."""

    @abc.abstractmethod
    async def schema_version(self) -> int:
        """The schema version the database is at."""

    @abc.abstractmethod
    async def append(self, events: Sequence[NewEvent]) -> list[int]:
        """Append ``events`` in one transaction; their ids, in order."""

    @abc.abstractmethod
    async def events(self, room: str, after: int = 0) -> list[StoredEvent]:
        """The events of ``room`` with id > ``after``, in append order."""

    @abc.abstractmethod
    async def rooms(self) -> list[str]:
        """Every room with at least one event, by first appearance."""

    @abc.abstractmethod
    async def save_stream(self, room: str, state: StreamState) -> None:
        """Replace ``room``'s stream checkpoint (and its saved frames) in one transaction."""

    @abc.abstractmethod
    async def stream(self, room: str) -> StreamState | None:
        """``room``'s stream checkpoint, with its saved frames; None if never saved."""

    @abc.abstractmethod
    async def forget_rooms_idle_since(self, before: float) -> list[str]:
        """Delete every room whose last event is older than ``before`` (retention)."""
