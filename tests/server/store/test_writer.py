"""The writer: batches, order, retries without dropping, a bounded queue."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from fablecast.server.store import NewEvent, StoreBacklog, StoreUnavailable, StoreWriter
from fablecast.server.store.base import EventLog, StoredEvent, StreamState


class FakeLog(EventLog):
    """Appends in memory; fails while ``failing``."""

    def __init__(self) -> None:
        self.batches: list[list[NewEvent]] = []
        self.failing = False

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def schema_version(self) -> int:
        return 1

    async def append(self, events: Sequence[NewEvent]) -> list[int]:
        await asyncio.sleep(0)
        if self.failing:
            raise StoreUnavailable("disk on fire")
        start = sum(len(b) for b in self.batches)
        self.batches.append(list(events))
        return list(range(start + 1, start + 1 + len(events)))

    async def events(self, room: str, after: int = 0) -> list[StoredEvent]:
        return []

    async def rooms(self) -> list[str]:
        return []

    async def save_stream(self, room: str, state: StreamState) -> None: ...
    async def stream(self, room: str) -> StreamState | None:
        return None

    async def forget_rooms_idle_since(self, before: float) -> list[str]:
        return []


async def test_appends_are_batched_in_order_and_resolved_with_ids() -> None:
    log = FakeLog()
    w = StoreWriter(log, max_batch=3, clock=lambda: 5.0)
    futs = [w.append("r", "beat", {"beat": i}) for i in range(7)]
    task = asyncio.create_task(w.run())
    assert await asyncio.gather(*futs) == [1, 2, 3, 4, 5, 6, 7]
    assert [len(b) for b in log.batches] == [3, 3, 1]
    assert [e.data["beat"] for b in log.batches for e in b] == list(range(7))
    await w.drain()
    task.cancel()


async def test_a_failing_store_is_retried_and_nothing_is_dropped() -> None:
    log = FakeLog()
    log.failing = True
    status: list[str | None] = []
    w = StoreWriter(log, retry_s=0.01, retry_max_s=0.02, on_status=status.append)
    task = asyncio.create_task(w.run())
    futs = [w.append("r", "beat", {"beat": i}) for i in range(5)]
    await asyncio.sleep(0.1)
    assert status == ["disk on fire"] and not any(f.done() for f in futs)
    assert w.down == "disk on fire" and w.backlog == 5
    log.failing = False
    assert await asyncio.wait_for(asyncio.gather(*futs), 2) == [1, 2, 3, 4, 5]
    assert status == ["disk on fire", None] and w.down is None
    task.cancel()


async def test_a_full_queue_refuses_appends_instead_of_growing() -> None:
    w = StoreWriter(FakeLog(), max_queue=2)
    w.append("r", "a", {})
    w.append("r", "b", {})
    with pytest.raises(StoreBacklog, match="backlog full"):
        w.append("r", "c", {})
    assert w.backlog == 2
