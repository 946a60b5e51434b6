"""A fake-clock harness for the pure room core (no asyncio, no network).

``Harness`` feeds events to ``Room.handle`` at a fake ``now``, records every
effect, remembers the latest ``ArmTimer`` of each kind (as the runner does: a
new one replaces the old) and fires timers when the clock passes them. It can
answer the engine requests the room makes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import pytest

from fablecast.server.room import effects as fx
from fablecast.server.room.state import Room, RoomSettings

T0 = 1000.0


class Harness:
    def __init__(self, settings: RoomSettings | None = None, *, name: str = "test") -> None:
        self.room = Room(name, settings or RoomSettings(filter=False))
        self.now = T0
        self.log: list[fx.Effect] = []
        self.timers: dict[str, fx.ArmTimer] = {}
        self.narrations: list[fx.RequestNarration] = []
        self.choice_requests: list[fx.RequestChoices] = []
        self.cancelled: list[int] = []

    # ------------------------------------------------------------------ feeding

    def send(self, event: fx.Event) -> list[fx.Effect]:
        effects = self.room.handle(event, self.now)
        self.log.extend(effects)
        for e in effects:
            match e:
                case fx.ArmTimer():
                    self.timers[e.timer] = e
                case fx.RequestNarration():
                    self.narrations.append(e)
                case fx.RequestChoices():
                    self.choice_requests.append(e)
                case fx.CancelRequest(request):
                    self.cancelled.append(request)
        return effects

    def advance(self, dt: float) -> list[fx.Effect]:
        """Move the clock by ``dt``, firing due timers in time order (at their own time)."""
        target = self.now + dt
        out: list[fx.Effect] = []
        while True:
            due = [t for t in self.timers.values() if t.at <= target]
            if not due:
                break
            timer = min(due, key=lambda t: t.at)
            del self.timers[timer.timer]
            self.now = max(self.now, timer.at)
            out += self.send(fx.TimerFired(timer.timer, timer.token))
        self.now = target
        return out

    def fire(self, kind: str) -> list[fx.Effect]:
        """Jump the clock to the armed ``kind`` timer and fire it (only it)."""
        timer = self.timers.pop(kind)
        self.now = max(self.now, timer.at)
        return self.send(fx.TimerFired(timer.timer, timer.token))

    # ------------------------------------------------------------------ the engine

    @property
    def narration(self) -> fx.RequestNarration:
        return self.narrations[-1]

    @property
    def choices(self) -> fx.RequestChoices:
        return self.choice_requests[-1]

    def narrate(self, *parts: str, done: bool = True) -> list[fx.Effect]:
        request = self.narration.request
        out: list[fx.Effect] = []
        for part in parts:
            out += self.send(fx.NarrationDelta(request, part))
        if done:
            out += self.send(fx.NarrationDone(request))
        return out

    def offer(self, *options: str) -> list[fx.Effect]:
        return self.send(fx.ChoicesReady(self.choices.request, options))

    def fail(self, reason: str = "boom", *, stalled: bool = False) -> list[fx.Effect]:
        request = self.room.current_request
        assert request is not None
        return self.send(fx.EngineFailed(request, reason, stalled))

    # ------------------------------------------------------------------ scenarios

    def open(self, *participants: str) -> list[fx.Effect]:
        out = self.send(fx.Start())
        for p in participants:
            out += self.send(fx.ViewerJoined(p))
        return out

    def to_voting(
        self, text: str = "Beat text.", options: Iterable[str] = ("A", "B", "C")
    ) -> list[fx.Effect]:
        """From narrating: tell the beat, offer choices; the window is open after this."""
        return self.narrate(text) + self.offer(*options)

    def vote(self, participant: str, option: int, window: int | None = None) -> list[fx.Effect]:
        if window is None:
            assert self.room.window is not None
            window = self.room.window.window
        return self.send(fx.VoteCast(participant, window, option))

    def play_beat(
        self, text: str = "Beat text.", votes: dict[str, int] | None = None
    ) -> list[fx.Effect]:
        """Narrating -> voting -> resolving -> the next beat's narration request."""
        out = self.to_voting(text)
        for p, option in (votes or {}).items():
            out += self.vote(p, option)
        out += self.fire("vote_close")
        out += self.fire("reveal")
        return out


@pytest.fixture
def make() -> Callable[..., Harness]:
    """``make(**settings)`` -> a fresh Harness with those RoomSettings."""

    def factory(name: str = "test", **settings: Any) -> Harness:
        # The beat-loop tests see deltas as the engine sent them: the safety gate
        # (on by default) is tested in test_moderation.py.
        settings.setdefault("filter", False)
        return Harness(RoomSettings(**settings), name=name)

    return factory


@pytest.fixture
def h(make: Callable[..., Harness]) -> Harness:
    return make()
