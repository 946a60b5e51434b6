"""Helpers of the SDK tests: timeouts and a scripted fake Fablecast server."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, Self

import msgspec
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.typing import Subprotocol

from fablecast.protocol.codec import JSON, MSGPACK, Codec
from fablecast.protocol.messages import (
    ClientMessage,
    Hello,
    Limits,
    Mood,
    Snapshot,
    Token,
    Welcome,
)

#: Multiplies every timeout of these tests (slow machines: set it above 1).
SCALE = float(os.environ.get("FABLECAST_TEST_TIMEOUT_SCALE", "1"))


def timeout(seconds: float) -> float:
    """A test timeout, scaled by ``FABLECAST_TEST_TIMEOUT_SCALE``."""
    return seconds * SCALE


def welcome(epoch: str = "e1", seq: int = 0, recovered: bool | None = None, **kw: Any) -> Welcome:
    """A ``welcome`` with plausible defaults."""
    fields: dict[str, Any] = {
        "protocol": 1,
        "room": "test",
        "participant": kw.pop("participant", "p1"),
        "epoch": epoch,
        "seq": seq,
        "recovered": recovered,
        "limits": Limits(
            max_message_bytes=65536,
            messages_per_s=20,
            message_burst=40,
            reactions_per_s=5,
            reaction_burst=10,
            history_frames=1024,
        ),
        "reactions": ["joy"],
        "tick_ms": 50,
    }
    fields.update(kw)
    return Welcome(**fields)


def mood(**kw: Any) -> Mood:
    """A neutral ``mood``."""
    fields: dict[str, Any] = {"valence": 0.0, "arousal": 0.0, "intensity": 0.0, "reactions": {}}
    fields.update(kw)
    return Mood(**fields)


def snapshot(epoch: str = "e1", seq: int = 0, **kw: Any) -> Snapshot:
    """An empty-room ``snapshot`` current to ``seq``."""
    fields: dict[str, Any] = {
        "epoch": epoch,
        "seq": seq,
        "title": "Test",
        "phase": "narrating",
        "beat": 1,
        "story": [],
        "truncated": False,
        "partial": "",
        "ballot": None,
        "tally": None,
        "mood": mood(),
        "viewers": 1,
        "narrator": "ok",
    }
    fields.update(kw)
    return Snapshot(**fields)


def token(seq: int, text: str | None = None, epoch: str = "e1", beat: int = 1) -> Token:
    """A ``token`` room frame."""
    return Token(epoch=epoch, seq=seq, beat=beat, text=text if text is not None else f"t{seq} ")


class Conn:
    """One connection to the fake server, as its script sees it."""

    def __init__(self, ws: ServerConnection, codec: Codec, index: int, hello: Hello) -> None:
        self.ws = ws
        self.codec = codec
        self.index = index
        self.hello = hello

    async def send(self, *messages: msgspec.Struct) -> None:
        """Send messages in order."""
        for msg in messages:
            await self.send_raw(self.codec.encode(msg))

    async def send_raw(self, data: bytes) -> None:
        """Send encoded bytes as a frame of this codec's kind."""
        await self.ws.send(data, text=self.codec.is_text)

    async def recv(self) -> ClientMessage:
        """The next client message."""
        return self.codec.decode_client(await self.ws.recv())

    async def close(self, code: int, reason: str = "") -> None:
        """Close with a close frame."""
        await self.ws.close(code, reason)

    def abort(self) -> None:
        """Drop the TCP connection without a close frame (the client sees 1006)."""
        self.ws.transport.abort()

    async def hold(self) -> None:
        """Keep the connection open until the client closes it."""
        await self.ws.wait_closed()


Script = Callable[[Conn], Awaitable[None]]


class FakeServer:
    """A real WebSocket server on port 0 running ``script`` for each connection.

    Every connection's ``hello`` is decoded and kept in ``hellos``.
    """

    def __init__(self, script: Script, codec: Codec = JSON) -> None:
        self.script = script
        self.codec = codec
        self.hellos: list[Hello] = []
        self.conns: list[Conn] = []
        self._server: Server | None = None
        self.port = 0
        #: (code, reason): close every connection at once, before reading its hello.
        self.close_before_hello: tuple[int, str] | None = None

    @property
    def url(self) -> str:
        """The URL of room ``test``."""
        return f"ws://127.0.0.1:{self.port}/rooms/test"

    async def _handle(self, ws: ServerConnection) -> None:
        if self.close_before_hello is not None:
            await ws.close(*self.close_before_hello)
            return
        first = self.codec.decode_client(await ws.recv())
        assert isinstance(first, Hello), first
        conn = Conn(ws, self.codec, len(self.hellos), first)
        self.hellos.append(first)
        self.conns.append(conn)
        await self.script(conn)

    async def __aenter__(self) -> Self:
        self._server = await serve(
            self._handle,
            "127.0.0.1",
            0,
            subprotocols=[Subprotocol(JSON.subprotocol), Subprotocol(MSGPACK.subprotocol)],
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        """Stop listening and close every connection."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
