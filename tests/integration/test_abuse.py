"""Abuse from outside, on loopback: each attack is bounded and closed as documented.

Each test prints its figure (RSS before / peak / after in MiB, or the count it
bounds). The node runs in this process, so its RSS is this process's RSS;
the attacking sockets run in a thread, never reading what the server writes.
"""

from __future__ import annotations

import asyncio
import base64
import gc
import logging
import os
import socket
import struct
import threading
import time
from collections.abc import AsyncIterator

import psutil
import pytest
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from fablecast.inference.backends.scripted import ScriptedEngine
from fablecast.protocol import messages as m
from fablecast.protocol.codes import CloseCode, ErrorCode
from fablecast.server.config import Config, EngineConfig, RoomConfig, ServerConfig
from fablecast.server.node import Node
from tests.integration.ws_harness import FAST_ROOM, connect
from tests.support import scaled, wait_for

pytestmark = pytest.mark.integration

MIB = 1024 * 1024
OUTBOX = 256 * 1024
SNDBUF = 64 * 1024


@pytest.fixture
async def node() -> AsyncIterator[Node]:
    config = Config(
        server=ServerConfig(
            port=0,
            tick_ms=20,
            outbox_max_bytes=OUTBOX,
            # Small kernel buffers (a documented option): the flood reaches the outbox
            # after ~100 KiB instead of after the OS's autotuned megabytes.
            socket_send_buffer=SNDBUF,
            close_timeout_s=scaled(3.0),  # long enough for the flooder to read its close
            max_connections_per_address=8,
        ),
        engine=EngineConfig(kind="scripted", stall_timeout_s=0.5),
        rooms=[RoomConfig(name="demo", **{**FAST_ROOM, "vote_s": 30.0})],
    )
    n = Node(config, engine=ScriptedEngine(tokens_per_s=400, first_token_s=0.01))
    await n.start()
    yield n
    await n.stop()


def _rss() -> float:
    return psutil.Process().memory_info().rss / MIB


def _handshake(port: int) -> socket.socket:
    """A raw WebSocket client socket after its handshake, with a small receive buffer."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)  # before connect: TCP window
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET /rooms/demo HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)  # byte by byte: leave every frame after the 101 unread
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


def _frame(opcode: int, payload: bytes) -> bytes:
    """One masked client frame (payload < 126 bytes)."""
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + masked


def _flood(sock: socket.socket, seconds: float) -> int:
    """Send ping frames (125-byte payloads) for ``seconds`` without reading; bytes sent."""
    burst = _frame(0x9, b"p" * 125) * 512
    sock.setblocking(False)
    sent, deadline = 0, time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            sent += sock.send(burst)
        except BlockingIOError:
            time.sleep(0.001)  # the server stopped reading us: our send buffer is full
        except OSError:
            break
    sock.setblocking(True)
    return sent


def _close_code(sock: socket.socket, timeout: float) -> int | None:
    """Read what the server wrote until its close frame; that frame's code (None: none came)."""
    sock.settimeout(timeout)
    data = b""
    try:
        while chunk := sock.recv(1 << 20):
            data += chunk
            code = _find_close(data)
            if code is not None:
                return code
    except (TimeoutError, ConnectionResetError):
        pass
    return _find_close(data)


def _find_close(data: bytes) -> int | None:
    """Walk the server's (unmasked) frames in ``data``; the code of a close frame."""
    i = 0
    while i + 2 <= len(data):
        opcode, n = data[i] & 0x0F, data[i + 1] & 0x7F
        i += 2
        if n == 126:
            n, i = struct.unpack("!H", data[i : i + 2])[0], i + 2
        elif n == 127:
            n, i = struct.unpack("!Q", data[i : i + 8])[0], i + 8
        if opcode == 0x8 and n >= 2 and i + 2 <= len(data):
            code: int = struct.unpack("!H", data[i : i + 2])[0]
            return code
        i += n
    return None


async def _ping_flood(node: Node, hello: bool) -> None:
    gc.collect()
    before = _rss()
    earlier = set(node.admission.guard.sessions)
    sock = await asyncio.to_thread(_handshake, node.port)
    if hello:
        sock.sendall(_frame(0x1, b'{"type":"hello"}'))
        assert await wait_for(lambda: node.rooms["demo"].room.viewers, 2)
        window = node.rooms["demo"].room.window
        assert window is not None, "flood during a quiet vote window"
    sessions = node.admission.guard.sessions
    assert await wait_for(lambda: len(sessions) == len(earlier) + 1, 2)
    (session,) = sessions - earlier
    peak = before
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, _rss())
            time.sleep(0.01)

    sampler = threading.Thread(target=sample)
    sampler.start()
    t0 = time.monotonic()
    flood = asyncio.create_task(asyncio.to_thread(_flood, sock, 1.5))
    closed = await wait_for(lambda: session.closed, 2.0)
    closed_after = time.monotonic() - t0
    sent = await flood
    code = await asyncio.to_thread(_close_code, sock, scaled(3.0))
    sock.close()
    stop.set()
    sampler.join()
    assert await wait_for(lambda: session not in sessions, 5)
    gc.collect()
    after = _rss()
    where = "joined, quiet vote window" if hello else "before hello"
    print(
        f"\nping flood ({where}): sent {sent / MIB:.1f} MiB of pings; closed with {code} "
        f"after {closed_after:.2f} s; RSS MiB before {before:.1f} peak {peak:.1f} "
        f"after {after:.1f} (outbox bound {OUTBOX / MIB:.2f} MiB)"
    )
    assert closed and closed_after < 1.0
    assert code == CloseCode.SLOW_CONSUMER
    assert peak - before < 24, "bounded by the outbox, not by the flood"
    assert after - before < 16


async def test_ping_flood_before_hello_is_bounded_and_closed(node: Node) -> None:
    await _ping_flood(node, hello=False)


async def test_ping_flood_in_a_quiet_vote_window_is_bounded_and_closed(node: Node) -> None:
    watcher = await connect(node)
    await watcher.until(lambda f: isinstance(f, m.Ballot))
    await _ping_flood(node, hello=True)
    await watcher.ws.close()


def _deep(codec: str, depth: int = 1000) -> str | bytes:
    if codec == "json":
        return '{"type":"vote","window":1,"option":0,"x":' + "[" * depth + "]" * depth + "}"
    return (
        b"\x84\xa4type\xa4vote\xa6window\x01\xa6option\x00\xa1x" + b"\x91" * (depth - 1) + b"\x90"
    )


@pytest.mark.parametrize("codec", ["json", "msgpack"])
async def test_deeply_nested_frames_are_invalid_message_without_traceback(
    node: Node, codec: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    c = await connect(node, codec, hello=m.Hello())
    await c.until(lambda f: isinstance(f, m.Snapshot))
    for _ in range(3):
        await c.send_raw(_deep(codec))
        err = await c.until(lambda f: isinstance(f, m.Error))
        assert isinstance(err, m.Error) and err.code is ErrorCode.INVALID_MESSAGE
    await c.send(m.Ping(nonce=1))  # still served
    await c.until(lambda f: isinstance(f, m.Pong))
    await c.ws.close()
    tracebacks = [r for r in caplog.records if r.exc_info or "Traceback" in r.getMessage()]
    print(f"\n1,000-deep {codec} frame x3: invalid_message x3, {len(tracebacks)} tracebacks logged")
    assert not tracebacks


async def test_connections_per_address_are_capped(node: Node) -> None:
    cap = node.config.server.max_connections_per_address
    url = f"ws://127.0.0.1:{node.port}/rooms/demo"
    opened, refused = [], 0
    for _ in range(cap + 5):
        try:
            opened.append(await websockets.connect(url, open_timeout=scaled(5)))
        except InvalidStatus as exc:
            assert exc.response.status_code == 429
            refused += 1
    print(f"\nconnections from one address: {len(opened)} open, {refused} refused (cap {cap})")
    assert (len(opened), refused) == (cap, 5)
    for ws in opened:
        await ws.close()
    assert await wait_for(lambda: node.admission.addresses.connections("127.0.0.1") == 0, 2)
    async with websockets.connect(url):  # released: a new one is accepted
        pass


async def test_fresh_identity_vote_loop_counts_at_most_the_policy(node: Node) -> None:
    watcher = await connect(node)
    ballot = await watcher.until(lambda f: isinstance(f, m.Ballot))
    assert isinstance(ballot, m.Ballot)
    cap = node.config.server.anonymous_votes_per_address
    statuses: dict[str, int] = {}
    attempts = 60
    for _ in range(attempts):  # connect, vote under a fresh identity, disconnect
        c = await connect(node)
        await c.until(lambda f: isinstance(f, m.Snapshot))
        await c.send(m.Vote(window=ballot.window, option=1))
        reply = await c.until(lambda f: isinstance(f, m.VoteAck | m.Error))
        key = reply.status if isinstance(reply, m.VoteAck) else reply.code.value
        statuses[key] = statuses.get(key, 0) + 1
        await c.ws.close()
    window = node.rooms["demo"].room.window
    assert window is not None and window.window == ballot.window
    counted = sum(window.counts)
    print(
        f"\nconnect-vote-disconnect x{attempts}, fresh identities: {counted} votes counted "
        f"(policy: {cap} per address per window); replies {statuses}"
    )
    assert counted == cap == statuses["counted"]
    assert statuses["rejected"] == attempts - cap
    await watcher.ws.close()


async def test_a_flood_before_hello_gets_bounded_replies_and_its_error_before_4009(
    node: Node,
) -> None:
    c = await connect(node, hello=m.Ping(nonce=0))  # type: ignore[arg-type]
    for i in range(1, 120):
        await c.send(m.Ping(nonce=i))
    errors: list[m.Error] = []
    with pytest.raises(ConnectionClosed) as info:
        while True:
            msg = await c.recv(timeout=5)
            assert isinstance(msg, m.Error)
            errors.append(msg)
    assert info.value.rcvd is not None and info.value.rcvd.code == CloseCode.RATE_LIMIT_EXCEEDED
    cap = 2 * node.config.server.errors_per_s
    print(
        f"\n120 messages before hello: {len(errors)} error replies (cap {cap:g} + rate), "
        f"last {errors[-1].code.value!r} then 4009"
    )
    assert {e.code for e in errors[:-1]} <= {ErrorCode.NOT_JOINED, ErrorCode.RATE_LIMITED}
    assert len(errors) <= cap + 2
    assert errors[-1].code is ErrorCode.RATE_LIMITED and "closing" in errors[-1].message


async def test_an_unfinished_fragmented_message_is_closed(node: Node) -> None:
    node.admission.guard.timeout_s = 0.5
    sock = await asyncio.to_thread(_handshake, node.port)
    sock.sendall(_frame(0x1, b'{"type":"hel'))  # FIN set: a whole frame, then a fragment:
    sock.sendall(bytes([0x01, 0x80 | 4]) + b"\x00" * 4 + b'{"ty')  # text, FIN clear
    t0 = time.monotonic()
    code = await asyncio.to_thread(_close_code, sock, scaled(4.0))
    sock.close()
    print(
        f"\nunfinished fragmented message: closed with {code} after {time.monotonic() - t0:.1f} s"
    )
    assert code == CloseCode.PROTOCOL_ERROR


async def test_fresh_identities_do_not_multiply_one_address_reactions(node: Node) -> None:
    s = node.config.server
    clients = [await connect(node) for _ in range(6)]
    for c in clients:
        await c.until(lambda f: isinstance(f, m.Snapshot))
    t0 = time.monotonic()
    for c in clients:  # 6 fresh identities x 6 reactions: each within its own 4/s burst 8
        for _ in range(6):
            await c.send(m.React(reaction="anger"))
    for c in clients:
        await c.send(m.Ping(nonce=1))
    refused = 0
    for c in clients:
        await c.until(lambda f: isinstance(f, m.Pong))
        refused += sum(isinstance(f, m.Error) and f.code is ErrorCode.RATE_LIMITED for f in c.seen)
        await c.ws.close()
    elapsed = time.monotonic() - t0
    accepted = 36 - refused
    bound = (
        s.anonymous_reaction_burst_per_address + s.anonymous_reactions_per_address_per_s * elapsed
    )
    print(
        f"\n6 fresh identities x 6 reactions from one address: {accepted} applied "
        f"(address bound {bound:.1f} in {elapsed:.2f} s)"
    )
    assert accepted <= bound


@pytest.mark.parametrize("codec", ["json", "msgpack"])
async def test_every_bad_message_is_answered_before_4001(node: Node, codec: str) -> None:
    """All ``max_bad_messages`` errors arrive, the last one included, then the close."""
    for _ in range(3):  # it used to arrive only sometimes
        c = await connect(node, codec)
        await c.until(lambda f: isinstance(f, m.Snapshot))
        n = node.config.server.max_bad_messages
        for _ in range(n):
            await c.send_raw("{" if codec == "json" else b"\xc1")
        with pytest.raises(ConnectionClosed) as info:
            while True:
                await c.recv()
        errors = [f for f in c.seen if isinstance(f, m.Error)]
        assert [e.code for e in errors] == [ErrorCode.BAD_MESSAGE] * n
        assert info.value.rcvd is not None and info.value.rcvd.code == CloseCode.PROTOCOL_ERROR
