"""A stalled client is closed with 4008 while everyone else's frames keep arriving on time."""

from __future__ import annotations

import asyncio
import time

import pytest
import websockets

from fablecast.inference.backends.scripted import ScriptedEngine
from fablecast.protocol import messages as m
from fablecast.protocol.codec import JSON
from fablecast.protocol.codes import CloseCode
from fablecast.server.node import Node
from tests.integration.ws_harness import connect, make_config, stalled_socket
from tests.support import scaled, wait_for

pytestmark = pytest.mark.integration


async def _flooding_node(**server: object) -> Node:
    """A started node narrating 4,000 tokens/s in 10 ms ticks, small kernel send buffers."""
    node = Node(
        make_config(
            {"socket_send_buffer": 8192, "tick_ms": 10, **server},
            narration_tokens=4000,
            vote_s=0.2,
            reveal_s=0.05,
        ),
        engine=ScriptedEngine(tokens_per_s=4000, first_token_s=0.0),
    )
    await node.start()
    return node


async def _stalled_client(node: Node) -> websockets.ClientConnection:
    """A client that joins, then stops reading: its receive buffer is tiny and
    websockets stops reading the socket once max_queue frames are unread."""
    stalled = await websockets.connect(
        f"ws://127.0.0.1:{node.port}/rooms/demo",
        subprotocols=[JSON.subprotocol],  # type: ignore[list-item]
        sock=stalled_socket(node.port),
        max_queue=1,
    )
    await stalled.send(JSON.encode(m.Hello(participant="stalled")).decode())
    return stalled


async def test_stalled_client_is_dropped_and_others_are_unaffected() -> None:
    node = await _flooding_node(outbox_max_bytes=16 * 1024)
    try:
        healthy = await connect(node, hello=m.Hello(participant="healthy"))
        stalled = await _stalled_client(node)

        # Gaps between consecutive token frames of one beat, as the healthy client sees them.
        gaps: list[float] = []
        last: tuple[int, float] = (-1, 0.0)

        async def watch_healthy() -> None:
            nonlocal last
            while True:
                frame = await healthy.recv()
                if isinstance(frame, m.Token):
                    now = time.monotonic()
                    if frame.beat == last[0]:
                        gaps.append(now - last[1])
                    last = (frame.beat, now)

        watcher = asyncio.create_task(watch_healthy())
        dropped = await wait_for(
            lambda: node.metrics.slow_clients_dropped._value.get() >= 1, timeout=20
        )
        assert dropped, "the stalled client was closed for falling behind"
        count_at_drop = len(gaps)
        assert await wait_for(lambda: len(gaps) > count_at_drop + 20, timeout=5), (
            "the healthy client keeps receiving after the drop"
        )
        watcher.cancel()
        # Tokens come every 10 ms tick; a stalled peer must not delay them.
        assert max(gaps) < scaled(0.25), f"healthy client's worst gap {max(gaps):.3f}s"
        assert healthy.ws.state is websockets.protocol.State.OPEN

        # Once it reads again, the stalled client finds the 4008 close after its backlog
        # (or an aborted connection if the close handshake timed out meanwhile).
        code = None
        try:
            async with asyncio.timeout(scaled(10)):
                async for _ in stalled:
                    pass
        except websockets.ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd else None
        assert code in (CloseCode.SLOW_CONSUMER, None)
        if stalled.close_code is not None and stalled.close_code != 1006:
            assert stalled.close_code == CloseCode.SLOW_CONSUMER
        await healthy.ws.close()
    finally:
        await node.stop()


async def test_a_slow_client_that_never_reads_again_is_released() -> None:
    """The 4008 close cannot reach a client that stopped reading: the connection is
    dropped after ``close_timeout_s`` instead of holding its buffer until it reads."""
    # An outbox past websockets' write high-water mark (32 KiB): its writing is
    # paused, and close() would wait for a drain that never comes.
    node = await _flooding_node(outbox_max_bytes=64 * 1024, close_timeout_s=0.5)
    try:
        stalled = await _stalled_client(node)
        connections = node.metrics.connections
        assert await wait_for(lambda: connections._value.get() == 1, timeout=5)
        assert await wait_for(
            lambda: node.metrics.slow_clients_dropped._value.get() >= 1, timeout=20
        )
        # The client still reads nothing; the server lets go of it anyway.
        assert await wait_for(lambda: connections._value.get() == 0, timeout=5)
        assert stalled.state is not websockets.protocol.State.CLOSED  # it has not noticed
        stalled.transport.abort()
    finally:
        await node.stop()
