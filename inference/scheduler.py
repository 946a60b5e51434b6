"""Admission, fairness, budgets and cancellation for engine requests of many rooms.

Two layers, after vLLM v1's split of policy from I/O:

- ``Scheduler`` is the pure policy: plain method calls with an explicit ``now``,
  no asyncio, no clock, no engine. It decides which request runs, which waits,
  which is refused, and how many tokens each may spend.
- ``ScheduledEngine`` (``fablecast.inference.scheduled``) is a thin async
  wrapper that is itself an ``EngineClient`` around another one: the Narrator
  talks to it exactly as to a bare engine.

Rules (in the order they apply):

1. **Admission.** At most ``max_running`` requests run in the engine at once
   (default: the engine's ``max_concurrency``, its useful batch size), and at
   most ``max_running_per_room`` of one room, so no room fills the batch.
2. **Bounded queue.** Requests that cannot run now wait in one queue of at most
   ``max_queue`` entries; past that ``submit`` raises ``EngineBusy`` at once
   (the room shows "busy" and retries later) instead of queueing unboundedly.
3. **Order of the queue.** Among requests whose room has a free slot:
   a. *Aged* requests first — waiting ``max_wait_s`` or more — oldest first.
      This is the no-starvation guarantee: nothing waits much past ``max_wait_s``
      while the engine makes progress.
   b. *Urgent* requests next — with a deadline within ``urgent_within_s`` —
      earliest deadline first (a vote window about to close, a live show cue).
   c. Everything else by weighted fair queuing across rooms (start-time fair
      queuing): each room has a virtual clock that advances by
      ``tokens / weight`` per request, so a room with twice the weight gets
      about twice the tokens when rooms compete, and an idle room returning
      starts at the global virtual time (no hoarded credit). A room's weight is
      ``1 + audience_weight * log2(1 + audience)``, capped at ``max_weight``:
      bigger audiences go faster, sub-linearly, and never starve small rooms.
4. **Token budgets.** A request's ``max_tokens`` is capped at ``max_tokens_cap``;
   with ``beat_token_budget`` set, all requests of one (room, beat) together
   may spend at most that many tokens (reserved at admission, refunded by what
   was not used). A beat with its budget spent raises ``TokenBudgetExceeded``.
5. **Cancellation.** ``cancel(request_id)`` and ``cancel_room(room)`` remove
   queued requests and report running ones, which the wrapper aborts in the
   engine (room closed, veto, rewind).
6. **Status.** A room's queue status is ``busy`` while one of its requests
   has waited ``busy_after_s`` or more in the queue (a short wait behind the
   room's own requests, such as a beat's candidate openings, is not news to
   its audience) or was refused, ``stalled`` when one waited
   ``stalled_after_s`` or more, ``ok`` when its request streams; the wrapper
   reports them through ``on_status(room, state, message)``. Engine failures
   are raised to the room, the one owner of the narrator's state.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from fablecast.inference.types import (
    EngineBusy,
    EngineError,
)

RoomState = Literal["ok", "busy", "stalled"]
StatusCallback = Callable[[str, RoomState, str], None]


class TokenBudgetExceeded(EngineError):
    """The (room, beat) has spent its ``beat_token_budget``."""


@dataclass(frozen=True, slots=True)
class SchedulerConfig:
    """Tunable policy; every field is documented in docs/engines.md (``[engine.scheduler]``)."""

    max_running: int | None = None
    """Requests run at once; None: the engine's ``max_concurrency``."""
    max_queue: int = 256
    """Requests that may wait; past it ``EngineBusy``."""
    max_running_per_room: int = 2
    """Requests of one room that run at once."""
    max_tokens_cap: int = 512
    """Upper bound on any request's ``max_tokens``."""
    beat_token_budget: int | None = None
    """Tokens all requests of one (room, beat) may spend together; None: unlimited."""
    audience_weight: float = 1.0
    """How much audience size speeds a room up (0: all rooms equal)."""
    max_weight: float = 8.0
    """Upper bound of a room's weight."""
    urgent_within_s: float = 2.0
    """A request whose deadline is this close goes before fair-share order."""
    max_wait_s: float = 10.0
    """A request queued this long goes first (anti-starvation)."""
    stalled_after_s: float = 5.0
    """A request queued this long turns its room's status to ``stalled``."""
    busy_after_s: float = 1.0
    """A request queued this long turns its room's status to ``busy`` (0: at once)."""

    def __post_init__(self) -> None:
        if self.max_running is not None and self.max_running < 1:
            raise ValueError("max_running must be >= 1")
        if self.max_queue < 0 or self.max_running_per_room < 1 or self.max_tokens_cap < 1:
            raise ValueError("max_queue >= 0, max_running_per_room >= 1, max_tokens_cap >= 1")
        if self.beat_token_budget is not None and self.beat_token_budget < 1:
            raise ValueError("beat_token_budget must be >= 1")


@dataclass(slots=True)
class Ticket:
    """A request as the scheduler sees it."""

    request_id: str
    room: str
    beat: str
    max_tokens: int
    submitted: float
    deadline: float | None
    vstart: float
    seq: int
    running: bool = False
    admitted_at: float | None = None


@dataclass(slots=True)
class _Room:
    audience: int = 0
    vfinish: float = 0.0
    running: int = 0
    queued: int = 0
    budget_beat: str = ""
    budget_left: int = 0


@dataclass(frozen=True, slots=True)
class Cancelled:
    """What a cancel removed: running ids to abort in the engine, queued ids dropped."""

    running: tuple[str, ...] = ()
    queued: tuple[str, ...] = ()
    admitted: tuple[Ticket, ...] = ()
    """Queued requests admitted because the cancel freed slots."""


@dataclass(slots=True)
class Scheduler:
    """The pure policy (see the module docstring for its rules)."""

    config: SchedulerConfig
    max_running: int
    _tickets: dict[str, Ticket] = field(default_factory=dict)
    _rooms: dict[str, _Room] = field(default_factory=dict)
    _vtime: float = 0.0
    _seq: int = 0
    _running: int = 0
    _queued: int = 0

    @classmethod
    def create(cls, config: SchedulerConfig, engine_concurrency: int) -> Scheduler:
        """A scheduler admitting ``config.max_running`` or else ``engine_concurrency``."""
        return cls(config=config, max_running=max(1, config.max_running or engine_concurrency))

    # -- queries ------------------------------------------------------------

    @property
    def running(self) -> int:
        """Requests admitted and not yet released."""
        return self._running

    @property
    def queued(self) -> int:
        """Requests waiting."""
        return self._queued

    def ticket(self, request_id: str) -> Ticket | None:
        """The ticket of ``request_id`` if the scheduler holds it."""
        return self._tickets.get(request_id)

    def weight(self, room: str) -> float:
        """The fair-share weight of ``room`` (see rule 3c)."""
        st = self._rooms.get(room)
        audience = st.audience if st else 0
        w = 1.0 + self.config.audience_weight * math.log2(1 + max(0, audience))
        return max(1.0, min(self.config.max_weight, w))

    def position(self, request_id: str, now: float) -> int:
        """1-based place of a queued request in the current order (0: running or unknown)."""
        t = self._tickets.get(request_id)
        if t is None or t.running:
            return 0
        order = sorted((q for q in self._tickets.values() if not q.running), key=self._key(now))
        return order.index(t) + 1

    def overdue(self, now: float) -> list[Ticket]:
        """Queued requests waiting ``stalled_after_s`` or more, oldest first."""
        limit = self.config.stalled_after_s
        out = [t for t in self._tickets.values() if not t.running and now - t.submitted >= limit]
        return sorted(out, key=lambda t: t.submitted)

    # -- changes --------------------------------------------------------------

    def set_audience(self, room: str, audience: int) -> None:
        """Record the audience size of ``room`` (changes its weight from now on)."""
        self._rooms.setdefault(room, _Room()).audience = max(0, audience)

    def forget_room(self, room: str) -> None:
        """Drop the accounting of a closed room (call after ``cancel_room``)."""
        st = self._rooms.get(room)
        if st is not None and st.running == 0 and st.queued == 0:
            del self._rooms[room]

    def submit(
        self,
        request_id: str,
        room: str,
        max_tokens: int,
        now: float,
        *,
        beat: str = "",
        deadline: float | None = None,
    ) -> Ticket:
        """Take a request: returns its ticket, ``running`` when it was admitted at once.

        Raises ``EngineBusy`` when it would have to wait and the queue is full,
        ``TokenBudgetExceeded`` when its beat's budget is spent, ``ValueError``
        for a duplicate id.
        """
        if request_id in self._tickets:
            raise ValueError(f"duplicate request id {request_id!r}")
        st = self._rooms.setdefault(room, _Room())
        tokens = max(1, min(max_tokens, self.config.max_tokens_cap))
        budget = self.config.beat_token_budget
        if budget is not None:
            if st.budget_beat != beat or (st.running == 0 and st.queued == 0 and not beat):
                st.budget_beat, st.budget_left = beat, budget
            if st.budget_left <= 0:
                raise TokenBudgetExceeded(f"room {room!r} beat {beat!r} spent {budget} tokens")
            tokens = min(tokens, st.budget_left)
        can_run = self._running < self.max_running and st.running < self.config.max_running_per_room
        if not can_run and self._queued >= self.config.max_queue:
            raise EngineBusy(f"engine queue full ({self._queued} waiting, {self._running} running)")
        if budget is not None:
            st.budget_left -= tokens
        vstart = max(self._vtime, st.vfinish)
        st.vfinish = vstart + tokens / self.weight(room)
        self._seq += 1
        t = Ticket(request_id, room, beat, tokens, now, deadline, vstart, self._seq)
        self._tickets[request_id] = t
        st.queued += 1
        self._queued += 1
        self.admit(now)
        return t

    def admit(self, now: float) -> list[Ticket]:
        """Admit queued requests into free slots, best first; returns those admitted."""
        out: list[Ticket] = []
        if self._queued == 0 or self._running >= self.max_running:
            return out
        key = self._key(now)
        order = sorted((t for t in self._tickets.values() if not t.running), key=key)
        cap = self.config.max_running_per_room
        for t in order:
            if self._running >= self.max_running:
                break
            st = self._rooms[t.room]
            if st.running >= cap:
                continue
            t.running, t.admitted_at = True, now
            st.queued -= 1
            st.running += 1
            self._queued -= 1
            self._running += 1
            self._vtime = max(self._vtime, t.vstart)
            out.append(t)
        return out

    def release(self, request_id: str, used_tokens: int, now: float) -> list[Ticket]:
        """A running request ended after ``used_tokens``: free its slot, admit the next."""
        if not self._remove(request_id, used_tokens):
            return []
        return self.admit(now)

    def _remove(self, request_id: str, used_tokens: int) -> bool:
        t = self._tickets.pop(request_id, None)
        if t is None:
            return False
        st = self._rooms[t.room]
        if t.running:
            st.running -= 1
            self._running -= 1
        else:
            st.queued -= 1
            self._queued -= 1
            used_tokens = 0
        if self.config.beat_token_budget is not None and st.budget_beat == t.beat:
            st.budget_left += max(0, t.max_tokens - max(0, used_tokens))
        return True

    def cancel(self, request_id: str, now: float) -> Cancelled:
        """Remove one request (queued: dropped; running: to be aborted by the caller)."""
        t = self._tickets.get(request_id)
        if t is None:
            return Cancelled()
        was_running = t.running
        admitted = self.release(request_id, t.max_tokens if was_running else 0, now)
        if was_running:
            return Cancelled(running=(request_id,), admitted=tuple(admitted))
        return Cancelled(queued=(request_id,), admitted=tuple(admitted))

    def cancel_room(self, room: str, now: float) -> Cancelled:
        """Remove every request of ``room`` (closed, veto, rewind)."""
        running: list[str] = []
        queued: list[str] = []
        for t in list(self._tickets.values()):
            if t.room != room:
                continue
            (running if t.running else queued).append(t.request_id)
            self._remove(t.request_id, t.max_tokens)
        admitted = self.admit(now)
        st = self._rooms.get(room)
        if st is not None:
            st.budget_beat = ""
        return Cancelled(tuple(running), tuple(queued), tuple(admitted))

    def _key(self, now: float) -> Callable[[Ticket], tuple[int, float, float, int]]:
        cfg = self.config

        def key(t: Ticket) -> tuple[int, float, float, int]:
            if now - t.submitted >= cfg.max_wait_s:
                return (0, t.submitted, 0.0, t.seq)
            if t.deadline is not None and t.deadline - now <= cfg.urgent_within_s:
                return (1, t.deadline, 0.0, t.seq)
            return (2, t.vstart, t.submitted, t.seq)

        return key


# -- the async wrapper --------------------------------------------------------------
