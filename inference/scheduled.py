"""The async side of the scheduler: ``ScheduledEngine`` wraps an engine with the policy.

``fablecast.inference.scheduler.Scheduler`` decides (pure, explicit ``now``);
this module waits, wakes, aborts, and reports each room's queue status
(``busy``, ``stalled``, ``ok``) to ``on_status``. It keeps no narrator state:
the room owns it and publishes each change once; engine failures reach the
room as the exception its request raises.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import replace

from fablecast.inference.engine import EngineClient, close_stream
from fablecast.inference.scheduler import (
    RoomState,
    Scheduler,
    SchedulerConfig,
    StatusCallback,
    Ticket,
)
from fablecast.inference.types import (
    EngineBusy,
    EngineError,
    EngineHealth,
    GenerationDelta,
    GenerationRequest,
)


def _deadline(request: GenerationRequest, now: float) -> float | None:
    return None if request.deadline_s is None else now + request.deadline_s


class ScheduledEngine:
    """An ``EngineClient`` that schedules requests of many rooms onto another one.

    Reads ``request.room``, ``request.beat`` (budget key) and ``request.deadline_s``
    (seconds from submission this request should start by).
    """

    def __init__(
        self,
        engine: EngineClient,
        config: SchedulerConfig | None = None,
        *,
        on_status: StatusCallback | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.engine = engine
        self.config = config or SchedulerConfig()
        self.on_status = on_status
        self._clock = clock
        self._sched: Scheduler | None = None
        self._waiters: dict[str, asyncio.Future[bool]] = {}

    # -- EngineClient -----------------------------------------------------------

    @property
    def name(self) -> str:
        """The wrapped engine's name."""
        return self.engine.name

    @property
    def model(self) -> str:
        """The wrapped engine's model."""
        return self.engine.model

    @property
    def max_concurrency(self) -> int:
        """Requests this wrapper accepts at once: running plus queue."""
        return self.scheduler.max_running + self.config.max_queue

    @property
    def scheduler(self) -> Scheduler:
        """The policy (created on first use from the engine's concurrency)."""
        if self._sched is None:
            self._sched = Scheduler.create(self.config, self.engine.max_concurrency)
        return self._sched

    async def start(self) -> None:
        """Start the wrapped engine."""
        await self.engine.start()
        _ = self.scheduler

    async def close(self) -> None:
        """Fail queued requests and close the wrapped engine."""
        for fut in self._waiters.values():
            if not fut.done():
                fut.set_exception(EngineError("engine closed"))
        await self.engine.close()

    def health(self) -> EngineHealth:
        """The wrapped engine's health, with queue figures in ``detail``."""
        h = self.engine.health()
        s = self.scheduler
        load = f"running {s.running}/{s.max_running}, queued {s.queued}/{self.config.max_queue}"
        return replace(h, detail=f"{h.detail}; {load}" if h.detail else load)

    async def abort(self, request_id: str) -> None:
        """Abort a queued or running request."""
        res = self.scheduler.cancel(request_id, self._now())
        self._wake(res.admitted)
        self._drop_waiters(res.queued)
        if res.running or request_id not in self._waiters:
            await self.engine.abort(request_id)

    def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationDelta]:
        """Wait for admission, then stream from the wrapped engine."""
        return self._generate(request)

    # -- rooms ------------------------------------------------------------------

    async def cancel_room(self, room: str) -> None:
        """Abort every request of ``room`` (room closed, veto, rewind)."""
        res = self.scheduler.cancel_room(room, self._now())
        self._wake(res.admitted)
        self._drop_waiters(res.queued)
        for rid in res.running:
            await self.engine.abort(rid)

    def set_audience(self, room: str, audience: int) -> None:
        """Tell the scheduler how many watch ``room`` (its fair-share weight)."""
        self.scheduler.set_audience(room, audience)

    def forget_room(self, room: str) -> None:
        """Drop the state kept for a closed room."""
        self.scheduler.forget_room(room)

    # -- internals --------------------------------------------------------------

    def _now(self) -> float:
        return self._clock() if self._clock else asyncio.get_running_loop().time()

    def _status(self, room: str, state: RoomState, message: str) -> None:
        if self.on_status is not None:
            self.on_status(room, state, message)

    def _wake(self, tickets: tuple[Ticket, ...] | list[Ticket]) -> None:
        for t in tickets:
            fut = self._waiters.pop(t.request_id, None)
            if fut is not None and not fut.done():
                fut.set_result(True)

    def _drop_waiters(self, ids: tuple[str, ...]) -> None:
        for rid in ids:
            fut = self._waiters.pop(rid, None)
            if fut is not None and not fut.done():
                fut.set_result(False)

    async def _wait_admission(self, ticket: Ticket) -> bool:
        fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiters[ticket.request_id] = fut
        s = self.scheduler
        cfg = self.config
        try:
            grace = min(cfg.busy_after_s, cfg.stalled_after_s)
            done, _ = await asyncio.wait({fut}, timeout=grace) if grace > 0 else (set(), set())
            if done:
                return await fut
            self._status(
                ticket.room,
                "busy",
                f"waiting for the engine: {s.running} running, "
                f"place {s.position(ticket.request_id, self._now())} in queue",
            )
            done, _ = await asyncio.wait({fut}, timeout=cfg.stalled_after_s - grace)
            if not done:
                # Aging may have reordered the queue; let it take effect now.
                self._wake(s.admit(self._now()))
                if not fut.done():
                    self._status(
                        ticket.room,
                        "stalled",
                        f"waited {self.config.stalled_after_s:g} s for the engine",
                    )
            return await fut
        finally:
            self._waiters.pop(ticket.request_id, None)

    async def _generate(self, request: GenerationRequest) -> AsyncIterator[GenerationDelta]:
        s = self.scheduler
        room = request.room
        now = self._now()
        try:
            ticket = s.submit(
                request.request_id,
                room,
                request.max_tokens,
                now,
                beat=str(request.beat),
                deadline=_deadline(request, now),
            )
        except EngineBusy as exc:
            self._status(room, "busy", str(exc))
            raise
        used = 0
        try:
            if not ticket.running and not await self._wait_admission(ticket):
                yield GenerationDelta("", 0, finished=True, finish_reason="abort")
                return
            health = self.engine.health()
            if not health.ready:
                raise EngineError(f"engine not ready: {health.detail or 'down'}")
            agen = self.engine.generate(replace(request, max_tokens=ticket.max_tokens))
            try:
                first = True
                async for delta in agen:
                    used += delta.tokens
                    if first:  # the room was maybe shown busy or stalled: no longer
                        first = False
                        self._status(room, "ok", "engine streaming")
                    yield delta
                    if delta.finished:
                        return
            finally:
                await close_stream(agen)
        finally:
            self._wake(s.release(request.request_id, used, self._now()))
