"""Keepalive from the node's sweep: live clients stay, silent ones are closed with 1011."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import struct
from collections.abc import AsyncIterator

import pytest
from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader

from fablecast.inference.backends.scripted import ScriptedEngine
from fablecast.protocol import messages as m
from fablecast.protocol.codec import JSON
from fablecast.protocol.codes import CloseCode
from fablecast.server.node import Node
from tests.integration.ws_harness import connect, make_config
from tests.support import scaled, wait_for

pytestmark = pytest.mark.integration

INTERVAL, TIMEOUT = 0.2, 0.3


@pytest.fixture
async def node() -> AsyncIterator[Node]:
    n = Node(
        make_config({"ping_interval_s": INTERVAL, "ping_timeout_s": TIMEOUT}),
        engine=ScriptedEngine(tokens_per_s=50, first_token_s=0.01),
    )
    await n.start()
    yield n
    await n.stop()


async def test_a_client_that_answers_pings_stays(node: Node) -> None:
    client = await connect(node, ping_interval=None)  # only the server pings
    await client.until(lambda f: isinstance(f, m.Snapshot))
    (sub,) = node.rooms["demo"].fanout.subscribers()
    server_side = sub.connection

    async def read_on() -> None:  # a client that does not read cannot answer pings
        while True:
            await client.recv()

    reading = asyncio.create_task(read_on())
    await asyncio.sleep(scaled(6 * INTERVAL))
    reading.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await reading
    # Several pings went out and their pongs were matched (websockets measures latency).
    assert server_side.latency > 0  # type: ignore[attr-defined]
    assert node.keepalive.timeouts == 0
    await client.send(m.Ping(nonce=7))
    await client.until(lambda f: isinstance(f, m.Pong) and f.nonce == 7)
    await client.ws.close()


async def test_handshake_headers_are_freed_but_the_path_stays(node: Node) -> None:
    client = await connect(node, additional_headers={"X-Filler": "x" * 2000})
    await client.until(lambda f: isinstance(f, m.Snapshot))
    (sub,) = node.rooms["demo"].fanout.subscribers()
    ws = sub.connection
    assert ws.request.path == "/rooms/demo"  # type: ignore[attr-defined]
    assert len(ws.request.headers) == 0  # type: ignore[attr-defined]
    assert len(ws.response.headers) == 0  # type: ignore[attr-defined]
    await client.ws.close()


async def _read_frames(reader: asyncio.StreamReader, out: list[Frame]) -> None:
    """Parse server frames until EOF, answering nothing (a client that went silent)."""
    buffer = StreamReader()
    parser = None
    while data := await reader.read(65536):
        buffer.feed_data(data)
        while True:
            parser = parser or Frame.parse(buffer.read_exact, mask=False)
            try:
                next(parser)
            except StopIteration as done:
                out.append(done.value)
                parser = None
            else:
                break  # needs more bytes


async def test_a_client_that_never_answers_is_closed_with_1011(node: Node) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", node.port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        (
            "GET /rooms/demo HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            f"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: {JSON.subprotocol}\r\n\r\n"
        ).encode()
    )
    status = await reader.readuntil(b"\r\n\r\n")
    assert status.startswith(b"HTTP/1.1 101")
    writer.write(Frame(Opcode.TEXT, JSON.encode(m.Hello())).serialize(mask=True))
    await writer.drain()
    frames: list[Frame] = []
    async with asyncio.timeout(scaled(10)):
        await _read_frames(reader, frames)  # ends when the server closes the TCP connection
    writer.close()
    opcodes = [f.opcode for f in frames]
    assert Opcode.PING in opcodes
    close = frames[-1]
    assert close.opcode is Opcode.CLOSE
    code, reason = struct.unpack("!H", close.data[:2])[0], close.data[2:].decode()
    assert (code, reason) == (CloseCode.INTERNAL_ERROR, "keepalive ping timeout")
    assert node.keepalive.timeouts == 1
    assert await wait_for(lambda: len(node.keepalive) == 0, 2.0)
    assert node.rooms["demo"].fanout.subscriber_count == 0
