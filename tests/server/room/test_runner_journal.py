"""The runner with an event log: story frames wait, in order, until their event is durable."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from fablecast.inference.prompts import StorySpec
from fablecast.protocol import messages as m
from fablecast.server.fanout import Fanout
from fablecast.server.metrics import Metrics
from fablecast.server.room import effects as fx
from fablecast.server.room.runner import RoomRunner
from fablecast.server.room.state import Room, RoomSettings
from fablecast.server.store import StoreBacklog
from fablecast.server.stream import RoomStream


class Journal:
    """Appends kept in memory; each future resolved by the test."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any], asyncio.Future[int]]] = []
        self.full = False

    def append(self, room: str, kind: str, data: dict[str, Any]) -> asyncio.Future[int]:
        if self.full:
            raise StoreBacklog("full")
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.events.append((kind, data, fut))
        return fut

    def ack(self) -> None:
        for _, _, fut in self.events:
            if not fut.done():
                fut.set_result(1)


class IdleNarrator:
    """Never answers: the test feeds the room's engine events itself."""

    async def narrate(self, *args: object) -> AsyncIterator[Any]:
        await asyncio.Event().wait()
        yield None  # pragma: no cover

    async def ballot(self, *args: object) -> Any:
        await asyncio.Event().wait()  # pragma: no cover

    async def cue(self, *args: object) -> Any:
        await asyncio.Event().wait()  # pragma: no cover

    async def state(self, *args: object) -> Any:
        await asyncio.Event().wait()  # pragma: no cover


@pytest.fixture
async def setup() -> AsyncIterator[tuple[RoomRunner, Journal]]:
    room = Room("r", RoomSettings(pause_when_empty=False))
    journal = Journal()
    metrics = Metrics()
    runner = RoomRunner(
        room,
        stream=RoomStream("r", state=lambda kind: room.state_frame(kind, 0.0), metrics=metrics),
        fanout=Fanout(metrics),
        narrator=IdleNarrator(),  # type: ignore[arg-type]
        spec=StorySpec(title="T", premise="P", style="S"),
        metrics=metrics,
        journal=journal,  # type: ignore[arg-type]
    )
    runner.start()
    yield runner, journal
    await runner.close()


def sent(runner: RoomRunner) -> list[str]:
    return [type(e.frame).__name__ for e in runner.stream.flush()]


async def test_beat_end_and_what_follows_wait_for_the_log(
    setup: tuple[RoomRunner, Journal],
) -> None:
    runner, journal = setup
    sent(runner)
    runner.dispatch(fx.NarrationDelta(1, "Once upon a time."))
    runner.dispatch(fx.NarrationDone(1))
    assert [k for k, _, _ in journal.events] == ["beat"]
    assert journal.events[0][1]["text"] == "Once upon a time."
    assert set(journal.events[0][1]["mood"]) == {"valence", "arousal", "intensity"}
    assert journal.events[0][1]["why"]["beat"] == 1  # the room's why record, as sent
    assert "BeatEnd" not in sent(runner) and runner.holding
    runner.dispatch(fx.NarratorStatus("busy", "queued"))  # status passes the hold
    assert sent(runner) == ["Narrator"]
    runner.dispatch(fx.ChoicesReady(2, ("Go left now", "Go right now")))  # while held
    journal.ack()
    await asyncio.sleep(0)
    # In order: the beat, its why, the phase; the ballot's event is appended and held in turn.
    assert sent(runner) == ["BeatEnd", "Why", "Phase"]
    assert [k for k, _, _ in journal.events] == ["beat", "ballot"] and runner.holding
    journal.ack()
    await asyncio.sleep(0)
    assert sent(runner)[0] == "Ballot" and not runner.holding


async def test_a_full_queue_is_retried_and_nothing_is_shown_meanwhile(
    setup: tuple[RoomRunner, Journal],
) -> None:
    runner, journal = setup
    sent(runner)
    journal.full = True
    runner.dispatch(fx.NarrationDelta(1, "Text."))
    runner.dispatch(fx.NarrationDone(1))
    assert journal.events == [] and runner.holding and "BeatEnd" not in sent(runner)
    journal.full = False
    await asyncio.sleep(0.6)  # the runner retries after 0.5 s
    assert [k for k, _, _ in journal.events] == ["beat"]
    journal.ack()
    await asyncio.sleep(0)
    assert sent(runner) == ["BeatEnd", "Why"]


async def test_store_status_is_shown_past_the_hold(setup: tuple[RoomRunner, Journal]) -> None:
    runner, _ = setup
    sent(runner)
    runner.store_status("disk full")
    frames = runner.stream.flush()
    assert isinstance(frames[0].frame, m.Narrator) and frames[0].frame.state == "down"
    assert "disk full" in frames[0].frame.message
    runner.store_status(None)
    frame = runner.stream.flush()[0].frame
    assert isinstance(frame, m.Narrator) and frame.message == "event log back"


STATE = {
    "summary": "Mira finds the key",
    "location": "the market",
    "present": ["Mira"],
    "carrying": ["the key"],
    "goal": "Mira must open the gate",
    "threads": ["Who left the key"],
}


async def test_the_engines_story_state_is_logged_before_the_ballot(
    setup: tuple[RoomRunner, Journal],
) -> None:
    runner, journal = setup
    runner.dispatch(fx.NarrationDelta(1, "Once upon a time."))
    runner.dispatch(fx.NarrationDone(1))
    journal.ack()
    await asyncio.sleep(0)
    sent(runner)
    runner.dispatch(fx.ChoicesReady(2, ("Go left now", "Go right now"), None, STATE))
    # The state is recorded first, on beat 1; the ballot waits for it.
    assert [k for k, _, _ in journal.events] == ["beat", "state"] and runner.holding
    assert journal.events[1][1] == {"beat": 1, **STATE}
    assert runner.room.story[-1].state == STATE
    assert "Ballot" not in sent(runner)
    journal.ack()
    await asyncio.sleep(0)
    assert [k for k, _, _ in journal.events] == ["beat", "state", "ballot"]
    journal.ack()
    await asyncio.sleep(0)
    assert "Ballot" in sent(runner) and not runner.holding


async def test_a_stale_story_state_is_neither_kept_nor_logged(
    setup: tuple[RoomRunner, Journal],
) -> None:
    runner, journal = setup
    runner.dispatch(fx.NarrationDelta(1, "Once upon a time."))
    runner.dispatch(fx.NarrationDone(1))
    journal.ack()
    await asyncio.sleep(0)
    runner.dispatch(fx.ChoicesReady(7, ("Go left now", "Go right now"), None, STATE))
    assert [k for k, _, _ in journal.events] == ["beat"]
    assert runner.room.story[-1].state is None
