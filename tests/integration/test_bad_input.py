"""Bad input is answered with a code (or the documented close code); nobody else is affected."""

from __future__ import annotations

import asyncio

import msgspec
import pytest
import websockets

from fablecast.protocol import messages as m
from fablecast.protocol.codes import CloseCode, ErrorCode
from fablecast.server.node import Node
from tests.integration.ws_harness import Client, connect, make_config
from tests.support import scaled

pytestmark = pytest.mark.integration


async def joined(node: Node, codec: str = "json", **hello: object) -> Client:
    c = await connect(node, codec, hello=m.Hello(**hello))  # type: ignore[arg-type]
    await c.until(lambda f: isinstance(f, m.Snapshot))
    return c


async def error_for(c: Client, data: str | bytes) -> m.Error:
    await c.send_raw(data)
    err = await c.until(lambda f: isinstance(f, m.Error))
    assert isinstance(err, m.Error)
    return err


async def test_each_kind_of_bad_message_gets_its_code(node: Node) -> None:
    c = await joined(node)
    assert (await error_for(c, "{not json")).code == ErrorCode.BAD_MESSAGE
    assert (await error_for(c, b"\x81\xa4type\xa4vote")).code == ErrorCode.BAD_MESSAGE
    assert (await error_for(c, '{"type": "teleport"}')).code == ErrorCode.UNKNOWN_TYPE
    assert (await error_for(c, '{"window": 1}')).code == ErrorCode.UNKNOWN_TYPE
    bad_vote = '{"type": "vote", "window": "one", "option": 0}'
    assert (await error_for(c, bad_vote)).code == ErrorCode.INVALID_MESSAGE
    bad_react = '{"type": "react", "valence": 3}'
    assert (await error_for(c, bad_react)).code == ErrorCode.INVALID_MESSAGE
    assert (await error_for(c, '{"type": "react"}')).code == ErrorCode.INVALID_MESSAGE
    assert (await error_for(c, '{"type": "hello"}')).code == ErrorCode.ALREADY_JOINED
    # The connection is still fine.
    await c.send(m.Ping(nonce=7))
    pong = await c.until(lambda f: isinstance(f, m.Pong))
    assert isinstance(pong, m.Pong) and pong.nonce == 7
    await c.ws.close()


async def test_msgpack_bad_input(node: Node) -> None:
    c = await joined(node, "msgpack")
    assert (await error_for(c, b"\xc1")).code == ErrorCode.BAD_MESSAGE
    assert (await error_for(c, "text frame")).code == ErrorCode.BAD_MESSAGE
    unknown = msgspec.msgpack.encode({"type": "nope"})
    assert (await error_for(c, unknown)).code == ErrorCode.UNKNOWN_TYPE
    await c.ws.close()


async def test_messages_before_hello_are_refused(node: Node) -> None:
    ws = await websockets.connect(
        f"ws://127.0.0.1:{node.port}/rooms/demo",
        subprotocols=["fablecast.v1.json"],  # type: ignore[list-item]
    )
    from fablecast.protocol.codec import JSON

    c = Client(ws, JSON)
    err = await error_for(c, '{"type": "vote", "window": 1, "option": 0}')
    assert err.code == ErrorCode.NOT_JOINED
    await c.send(m.Hello())
    assert isinstance(await c.until(lambda f: isinstance(f, m.Welcome)), m.Welcome)
    await ws.close()


async def test_votes_outside_a_window_and_for_unknown_options(node: Node) -> None:
    c = await joined(node, participant="v")
    # Narrating: no window is open yet.
    err = await error_for(c, '{"type": "vote", "window": 1, "option": 0}')
    assert err.code == ErrorCode.NOT_IN_PHASE
    ballot = await c.until(lambda f: isinstance(f, m.Ballot))
    assert isinstance(ballot, m.Ballot)
    stale = f'{{"type": "vote", "window": {ballot.window + 1}, "option": 0}}'
    assert (await error_for(c, stale)).code == ErrorCode.WINDOW_CLOSED
    n = len(ballot.options)
    if n < 5:
        unknown = f'{{"type": "vote", "window": {ballot.window}, "option": {n}}}'
        assert (await error_for(c, unknown)).code == ErrorCode.UNKNOWN_OPTION
    result = await c.until(lambda f: isinstance(f, m.VoteResult))
    assert isinstance(result, m.VoteResult) and result.voters == 0
    await c.ws.close()


async def test_too_many_bad_messages_close_4001_and_others_keep_going(node: Node) -> None:
    other = await joined(node)
    bad = await joined(node)
    for _ in range(node.config.server.max_bad_messages):
        await bad.send_raw("{")
    with pytest.raises(websockets.ConnectionClosed):
        async with asyncio.timeout(scaled(5)):
            while True:
                await bad.recv()
    assert bad.ws.close_code == CloseCode.PROTOCOL_ERROR
    # The room goes on for the other client.
    before = len(other.room_frames())
    await other.until(lambda f: isinstance(f, m.RoomFrame) and len(other.room_frames()) > before)
    await other.ws.close()


async def test_oversized_message_closes_1009(node: Node) -> None:
    c = await joined(node)
    await c.send_raw('{"type": "ping", "pad": "' + "x" * (70 * 1024) + '"}')
    with pytest.raises(websockets.ConnectionClosed):
        async with asyncio.timeout(scaled(5)):
            while True:
                await c.recv()
    assert c.ws.close_code == CloseCode.MESSAGE_TOO_BIG


async def test_rate_limit_answers_then_closes_4009() -> None:
    node = Node(make_config({"messages_per_s": 1, "message_burst": 2, "max_rate_violations": 5}))
    await node.start()
    try:
        c = await joined(node)
        for i in range(3):
            await c.send(m.Ping(nonce=i))
        err = await c.until(lambda f: isinstance(f, m.Error))
        assert isinstance(err, m.Error) and err.code == ErrorCode.RATE_LIMITED
        for i in range(10):
            await c.send(m.Ping(nonce=i))
        with pytest.raises(websockets.ConnectionClosed):
            async with asyncio.timeout(scaled(5)):
                while True:
                    await c.recv()
        assert c.ws.close_code == CloseCode.RATE_LIMIT_EXCEEDED
    finally:
        await node.stop()


async def test_hello_timeout_closes_4002() -> None:
    node = Node(make_config({"hello_timeout_s": 0.2}))
    await node.start()
    try:
        ws = await websockets.connect(f"ws://127.0.0.1:{node.port}/rooms/demo")
        with pytest.raises(websockets.ConnectionClosed):
            async with asyncio.timeout(scaled(5)):
                await ws.recv()
        assert ws.close_code == CloseCode.HELLO_TIMEOUT
    finally:
        await node.stop()


@pytest.mark.parametrize(
    ("path", "code"),
    [("/rooms/nowhere", CloseCode.ROOM_NOT_FOUND), ("/rooms/bad%20name", CloseCode.BAD_PATH)],
)
async def test_bad_room_paths_close_with_their_code(node: Node, path: str, code: int) -> None:
    ws = await websockets.connect(f"ws://127.0.0.1:{node.port}{path}")
    with pytest.raises(websockets.ConnectionClosed):
        async with asyncio.timeout(scaled(5)):
            await ws.recv()
    assert ws.close_code == code


async def test_unsupported_subprotocol_is_refused_at_the_handshake(node: Node) -> None:
    with pytest.raises(websockets.InvalidStatus) as info:
        await websockets.connect(
            f"ws://127.0.0.1:{node.port}/rooms/demo",
            subprotocols=["fablecast.v9.xml"],  # type: ignore[list-item]
        )
    assert info.value.response.status_code == 400


async def test_no_subprotocol_means_json(node: Node) -> None:
    ws = await websockets.connect(f"ws://127.0.0.1:{node.port}/rooms/demo")
    await ws.send('{"type": "hello"}')
    first = await ws.recv()
    assert isinstance(first, str) and '"type":"welcome"' in first
    await ws.close()
