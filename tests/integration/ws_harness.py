"""Helpers of the integration tests: a fast config and a raw protocol client."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Callable
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection

from fablecast.protocol import messages as m
from fablecast.protocol.codec import CODECS, Codec
from fablecast.server.config import Config, EngineConfig, RoomConfig, ServerConfig, StoreConfig
from fablecast.server.node import Node
from tests.support import scaled

FAST_ROOM = {
    "vote_s": 0.8,
    "reveal_s": 0.1,
    "retry_s": 0.2,
    "narration_tokens": 24,
}


def make_config(server: dict[str, Any] | None = None, **room: Any) -> Config:
    """A fast config: short beats and windows, port 0."""
    return Config(
        server=ServerConfig(**{"port": 0, "tick_ms": 20, **(server or {})}),
        engine=EngineConfig(kind="scripted", stall_timeout_s=0.5),
        rooms=[RoomConfig(name="demo", **{**FAST_ROOM, **room})],
        # No event log unless a test asks for one (tests/integration/test_store.py).
        store=StoreConfig(enabled=False),
    )


class Client:
    """A raw protocol client: sends typed messages, decodes every frame."""

    def __init__(self, ws: ClientConnection, codec: Codec) -> None:
        self.ws = ws
        self.codec = codec
        self.seen: list[m.ServerMessage] = []

    async def send(self, msg: Any) -> None:
        data = self.codec.encode(msg)
        await self.ws.send(data.decode() if self.codec.is_text else data)

    async def send_raw(self, data: str | bytes) -> None:
        await self.ws.send(data)

    async def recv(self, timeout: float = 5.0) -> m.ServerMessage:
        async with asyncio.timeout(scaled(timeout)):
            data = await self.ws.recv()
        msg = self.codec.decode_server(data)
        self.seen.append(msg)
        return msg

    async def until(
        self, predicate: Callable[[m.ServerMessage], bool], timeout: float = 10.0
    ) -> m.ServerMessage:
        """Receive until a message matches; returns it (all are kept in ``seen``)."""
        async with asyncio.timeout(scaled(timeout)):
            while True:
                msg = await self.recv(timeout=timeout)
                if predicate(msg):
                    return msg

    def room_frames(self) -> list[m.RoomMessage]:
        return [f for f in self.seen if isinstance(f, m.ROOM_FRAME_TYPES)]


async def connect(
    node: Node,
    codec: str = "json",
    room: str = "demo",
    hello: m.Hello | None = None,
    **kwargs: Any,
) -> Client:
    """Connect, send hello (unless ``hello`` is False-y via kwargs), return the client."""
    c = CODECS[f"fablecast.v1.{codec}"]
    ws = await websockets.connect(
        f"ws://127.0.0.1:{node.port}/rooms/{room}", subprotocols=[c.subprotocol], **kwargs
    )
    client = Client(ws, c)
    await client.send(hello or m.Hello())
    return client


def stalled_socket(port: int) -> socket.socket:
    """A client socket with a tiny receive buffer, so not reading backs up the server fast."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    return sock


def dump(msg: m.ServerMessage) -> str:
    return json.dumps(json.loads(CODECS["fablecast.v1.json"].encode(msg)))
