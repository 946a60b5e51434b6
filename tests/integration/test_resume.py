"""Resume: every missed frame exactly once and in order, or recovered=false plus a snapshot."""

from __future__ import annotations

import asyncio

import pytest

from fablecast.inference.backends.scripted import ScriptedEngine
from fablecast.protocol import messages as m
from fablecast.server.node import Node
from tests.integration.ws_harness import connect, make_config
from tests.support import scaled

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("codec", ["json", "msgpack"])
async def test_resume_replays_exactly_the_missed_frames(node: Node, codec: str) -> None:
    witness = await connect(node, "json", hello=m.Hello(participant="witness"))
    c = await connect(node, codec, hello=m.Hello(participant="r"))
    welcome = await c.recv()
    assert isinstance(welcome, m.Welcome)
    await c.until(lambda f: isinstance(f, m.Token))
    last = c.room_frames()[-1].seq
    await c.ws.close()

    # Miss a few ticks' worth of frames while the witness keeps watching.
    await witness.until(lambda f: isinstance(f, m.RoomFrame) and f.seq >= last + 15)
    back = await connect(
        node, codec, hello=m.Hello(participant="r", epoch=welcome.epoch, since=last)
    )
    w2 = await back.recv()
    assert isinstance(w2, m.Welcome) and w2.recovered is True and w2.epoch == welcome.epoch
    await back.until(lambda f: isinstance(f, m.RoomFrame) and f.seq >= last + 25)
    assert not any(isinstance(f, m.Snapshot) for f in back.seen)
    got = back.room_frames()
    assert [f.seq for f in got] == list(range(last + 1, last + 1 + len(got)))

    await witness.until(lambda f: isinstance(f, m.RoomFrame) and f.seq >= got[-1].seq)
    seen = {f.seq: f for f in witness.room_frames()}
    for frame in got:
        assert frame == seen[frame.seq], "replayed frames equal the live ones"
    await witness.ws.close()
    await back.ws.close()


async def test_resume_past_the_history_gets_a_snapshot() -> None:
    node = Node(
        make_config({"history_frames": 5}),
        engine=ScriptedEngine(tokens_per_s=200, first_token_s=0.01),
    )
    await node.start()
    try:
        witness = await connect(node)
        c = await connect(node, hello=m.Hello(participant="r"))
        welcome = await c.recv()
        assert isinstance(welcome, m.Welcome)
        await c.until(lambda f: isinstance(f, m.Token))
        last = c.room_frames()[-1].seq
        await c.ws.close()
        await witness.until(lambda f: isinstance(f, m.RoomFrame) and f.seq >= last + 20)

        back = await connect(node, hello=m.Hello(participant="r", epoch=welcome.epoch, since=last))
        w2 = await back.recv()
        assert isinstance(w2, m.Welcome) and w2.recovered is False
        snap = await back.recv()
        assert isinstance(snap, m.Snapshot) and snap.seq == w2.seq
        nxt = await back.until(lambda f: isinstance(f, m.RoomFrame))
        assert isinstance(nxt, m.RoomFrame) and nxt.seq == snap.seq + 1
        await witness.ws.close()
        await back.ws.close()
    finally:
        await node.stop()


async def test_resume_with_another_epoch_gets_a_snapshot(node: Node) -> None:
    c = await connect(node, hello=m.Hello(epoch="not-this-one", since=3))
    welcome = await c.recv()
    assert isinstance(welcome, m.Welcome) and welcome.recovered is False
    assert isinstance(await c.recv(), m.Snapshot)
    await c.ws.close()


async def test_resume_from_the_future_gets_a_snapshot(node: Node) -> None:
    first = await connect(node)
    welcome = await first.recv()
    assert isinstance(welcome, m.Welcome)
    c = await connect(node, hello=m.Hello(epoch=welcome.epoch, since=welcome.seq + 1000))
    w2 = await c.recv()
    assert isinstance(w2, m.Welcome) and w2.recovered is False
    assert isinstance(await c.recv(), m.Snapshot)
    await asyncio.sleep(scaled(0.01))
    await first.ws.close()
    await c.ws.close()
