"""Engine failures pause the room with a message within a second, and it resumes."""

from __future__ import annotations

import itertools
import time

import msgspec
import pytest

from fablecast.inference.backends.scripted import ScriptedEngine
from fablecast.protocol import messages as m
from fablecast.server.node import Node
from tests.integration.ws_harness import connect, make_config
from tests.support import scaled

pytestmark = pytest.mark.integration


async def start(engine: ScriptedEngine) -> Node:
    # The faulty engine yields one word before it fails; the safety filter's holdback
    # would keep that word back (test_moderation.py covers it), and these tests are
    # about what clients see of a partial beat.
    node = Node(make_config(narration_tokens=40, filter=False), engine=engine)
    await node.start()
    return node


@pytest.mark.parametrize("fault", ["fail", "stall"])
async def test_a_failed_or_stalled_beat_is_aborted_paused_and_retold(fault: str) -> None:
    engine = ScriptedEngine(tokens_per_s=100, first_token_s=0.01)
    if fault == "fail":
        engine.fail_next = 1
    else:
        engine.stall_next = 1
    node = await start(engine)
    try:
        c = await connect(node)
        first = await c.until(lambda f: isinstance(f, m.Token))
        t0 = time.monotonic()
        paused = await c.until(lambda f: isinstance(f, m.Phase) and f.phase == "paused")
        # Stall timeout is 0.5 s in the test config; the pause reaches clients within 1 s of it.
        assert time.monotonic() - t0 < scaled(0.5 + 1.0)
        assert isinstance(paused, m.Phase) and paused.reason == "engine"
        abort = next(f for f in c.seen if isinstance(f, m.BeatAbort))
        assert isinstance(first, m.Token) and abort.beat == first.beat == 1
        narrator = next(f for f in c.seen if isinstance(f, m.Narrator))
        assert narrator.state == ("down" if fault == "fail" else "stalled")
        assert not any(isinstance(f, m.BeatEnd) for f in c.seen), "no partial beat committed"

        again = await c.until(lambda f: isinstance(f, m.BeatStart))
        assert isinstance(again, m.BeatStart) and again.beat == 1
        end = await c.until(lambda f: isinstance(f, m.BeatEnd))
        assert isinstance(end, m.BeatEnd) and end.beat == 1
        tokens_after = [
            f for f in c.seen if isinstance(f, m.Token) and f.seq > again.seq and f.beat == 1
        ]
        assert "".join(t.text for t in tokens_after).strip() == end.text
        # The room is the one owner of the narrator's state: one frame per change
        # (down or stalled, then ok when retrying), never the same state twice in a row.
        states = [f.state for f in c.seen if isinstance(f, m.Narrator)]
        assert states[:2] == [narrator.state, "ok"]
        assert all(a != b for a, b in itertools.pairwise(states)), states
        await c.ws.close()
    finally:
        await node.stop()


async def test_saturated_engine_shows_busy_and_every_room_still_narrates() -> None:
    config = make_config(narration_tokens=20)
    config.engine.scheduler = {"max_running": 1, "max_queue": 0}
    config.rooms.append(msgspec.structs.replace(config.rooms[0], name="second"))
    node = Node(config, engine=ScriptedEngine(tokens_per_s=100, first_token_s=0.01))
    await node.start()
    try:
        a = await connect(node, room="demo")
        await a.until(lambda f: isinstance(f, m.Token))
        b = await connect(node, room="second")
        busy = await b.until(lambda f: isinstance(f, m.Narrator) and f.state == "busy")
        assert isinstance(busy, m.Narrator)
        paused = await b.until(lambda f: isinstance(f, m.Phase) and f.phase == "paused")
        assert isinstance(paused, m.Phase) and paused.reason == "busy"
        # Retried with backoff, the second room gets the engine once the first is done.
        end = await b.until(lambda f: isinstance(f, m.BeatEnd), timeout=20)
        assert isinstance(end, m.BeatEnd) and end.beat == 1
        assert await a.until(lambda f: isinstance(f, m.BeatEnd))
        await a.ws.close()
        await b.ws.close()
    finally:
        await node.stop()
