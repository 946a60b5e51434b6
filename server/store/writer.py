"""Appends batched off the hot path: a bounded queue, one writer task, retries, no drops.

Policy (docs/store.md, "When the store is slow or down"):

1. ``append`` never awaits: it queues the event and returns a future resolved
   with the event's id once its batch is durable.
2. One task writes: it takes up to ``max_batch`` queued events and appends them
   in one transaction. The queue is FIFO across rooms, so a room's events are
   durable in the order they were appended.
3. A failed batch is retried, the same batch in the same order, with backoff
   (``retry_s`` doubling up to ``retry_max_s``) until it succeeds or the writer
   is closed. Nothing is dropped. While it fails, ``on_status(reason)`` is called
   once; when a batch succeeds again, ``on_status(None)``.
4. Past ``max_queue`` events waiting, ``append`` raises ``StoreBacklog``: the
   caller keeps the event and retries (a room stays paused, a moderator's call
   gets an error), so memory stays bounded whatever the store does.

Who waits for the futures: the room runner, for the events that make the story
(beats, ballots, results, rewinds), before it shows them (``runner.py``).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable
from typing import Any

from fablecast.server.store.base import EventLog, NewEvent, StoreError

log = logging.getLogger(__name__)


class StoreBacklog(StoreError):
    """The write queue is full: the store is slower than the rooms (retry later)."""


class StoreWriter:
    """The single writer of an ``EventLog``."""

    def __init__(
        self,
        log_: EventLog,
        *,
        max_queue: int = 10_000,
        max_batch: int = 256,
        retry_s: float = 0.2,
        retry_max_s: float = 5.0,
        on_status: Callable[[str | None], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.log = log_
        self.max_queue = max_queue
        self.max_batch = max_batch
        self.retry_s = retry_s
        self.retry_max_s = retry_max_s
        self.on_status = on_status
        self.clock = clock
        #: Why the last batch failed (None while the store works).
        self.down: str | None = None
        self.committed = 0
        self._queue: collections.deque[tuple[NewEvent, asyncio.Future[int]]] = collections.deque()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def backlog(self) -> int:
        """Events queued, not yet durable."""
        return len(self._queue)

    def append(
        self, room: str, kind: str, data: dict[str, Any], at: float | None = None
    ) -> asyncio.Future[int]:
        """Queue one event; the future gets its id once durable. Raises StoreBacklog when full."""
        if len(self._queue) >= self.max_queue:
            raise StoreBacklog(
                f"event log backlog full ({self.max_queue} events): "
                + (self.down or "the store is slower than the rooms")
            )
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._queue.append((NewEvent(room, kind, data, self.clock() if at is None else at), fut))
        self._idle.clear()
        self._wake.set()
        return fut

    async def drain(self) -> None:
        """Wait until every event queued so far is durable (or forever while the store is down)."""
        await self._idle.wait()

    async def run(self) -> None:
        """Write batches until cancelled (the node's task)."""
        delay = self.retry_s
        while True:
            if not self._queue:
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = [self._queue[i] for i in range(min(self.max_batch, len(self._queue)))]
            try:
                ids = await self.log.append([event for event, _ in batch])
            except Exception as exc:  # StoreError, or a driver's own: retried the same way
                if self.down is None:
                    self.down = str(exc)
                    log.error("event log unavailable (retrying, nothing dropped): %s", exc)
                    if self.on_status is not None:
                        self.on_status(self.down)
                await asyncio.sleep(delay)
                delay = min(self.retry_max_s, delay * 2)
                continue
            delay = self.retry_s
            for _ in batch:
                self._queue.popleft()
            for (_, fut), event_id in zip(batch, ids, strict=True):
                if not fut.done():
                    fut.set_result(event_id)
            self.committed += len(batch)
            if self.down is not None:
                log.warning("event log back after: %s", self.down)
                self.down = None
                if self.on_status is not None:
                    self.on_status(None)
