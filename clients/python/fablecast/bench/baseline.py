"""The bare baseline: ``websockets.broadcast()`` of the same frames, nothing else.

Same bench engine (``StampEngine``) and rate, same per-room coalescing per tick,
same codec and the same frame types (``welcome``, ``snapshot``, then ``token``
room frames with ``epoch``/``seq``), but no rooms, sessions, outboxes, history,
votes or mood: one engine stream per room appended to a list, and one tick loop
that encodes each room's pending text once per codec and broadcasts it. This
is the ceiling the real server's fan-out is compared to (``ratio_vs_raw``).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from dataclasses import dataclass, field

import websockets
from websockets.asyncio.server import Server, ServerConnection

from fablecast.bench.engine import StampEngine
from fablecast.inference.types import ChatMessage, GenerationRequest
from fablecast.protocol.codec import CODECS, Codec, codec_for_subprotocol
from fablecast.protocol.messages import REACTIONS, Limits, Mood, Snapshot, Token, Welcome
from fablecast.protocol.version import SUBPROTOCOL_JSON, SUBPROTOCOL_MSGPACK


@dataclass(slots=True)
class _Room:
    name: str
    epoch: str
    seq: int = 0
    beat: int = 1
    pending: list[str] = field(default_factory=list)
    conns: dict[str, set[ServerConnection]] = field(default_factory=dict)


class BaselineServer:
    """A bare broadcast server streaming ``engine`` narration to ``/rooms/<name>``."""

    def __init__(self, engine: StampEngine, *, tick_ms: int = 50, beat_tokens: int = 256) -> None:
        self.engine = engine
        self.tick_ms = tick_ms
        self.beat_tokens = beat_tokens
        self.rooms: dict[str, _Room] = {}
        self.port = 0
        self._server: Server | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._ids = itertools.count(1)

    @property
    def connections(self) -> int:
        """Open connections over all rooms."""
        return sum(len(s) for r in self.rooms.values() for s in r.conns.values())

    async def start(self) -> None:
        """Listen on 127.0.0.1 (a free port) and start ticking."""
        await self.engine.start()
        self._server = await websockets.serve(
            self._handler,
            "127.0.0.1",
            0,
            subprotocols=[SUBPROTOCOL_JSON, SUBPROTOCOL_MSGPACK],  # type: ignore[list-item]
            compression=None,
            max_queue=16,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._tasks.append(asyncio.create_task(self._tick()))

    async def stop(self) -> None:
        """Close every connection and stop."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        await self.engine.close()

    def _room(self, name: str) -> _Room:
        room = self.rooms.get(name)
        if room is None:
            room = self.rooms[name] = _Room(name, epoch=f"e{time.time_ns() % 10**9}")
            self._tasks.append(asyncio.create_task(self._narrate(room)))
        return room

    async def _narrate(self, room: _Room) -> None:
        while True:
            request = GenerationRequest(
                request_id=f"{room.name}:{next(self._ids)}",
                messages=(ChatMessage("user", "go"),),
                max_tokens=self.beat_tokens,
                room=room.name,
            )
            async for delta in self.engine.generate(request):
                room.pending.append(delta.text)
            room.beat += 1

    async def _tick(self) -> None:
        interval = self.tick_ms / 1000.0
        loop = asyncio.get_running_loop()
        due = loop.time()
        while True:
            due += interval
            await asyncio.sleep(max(0.0, due - loop.time()))
            for room in self.rooms.values():
                if not room.pending:
                    continue
                text = "".join(room.pending)
                room.pending.clear()
                room.seq += 1
                frame = Token(epoch=room.epoch, seq=room.seq, beat=room.beat, text=text)
                for codec_name, conns in room.conns.items():
                    if conns:
                        codec = CODECS[codec_name]
                        websockets.broadcast(conns, codec.encode(frame), text=codec.is_text)

    async def _handler(self, ws: ServerConnection) -> None:
        path = ws.request.path if ws.request is not None else "/"
        if not path.startswith("/rooms/"):
            await ws.close(1008, "bad path")
            return
        codec: Codec = codec_for_subprotocol(ws.subprotocol)
        hello = codec.decode_client(await ws.recv())
        participant = getattr(hello, "participant", None) or f"p{next(self._ids)}"
        room = self._room(path.removeprefix("/rooms/"))
        welcome = Welcome(
            protocol=1,
            room=room.name,
            participant=participant,
            epoch=room.epoch,
            seq=room.seq,
            limits=Limits(
                max_message_bytes=codec.max_message_bytes,
                messages_per_s=100.0,
                message_burst=100,
                reactions_per_s=10.0,
                reaction_burst=20,
                history_frames=0,
            ),
            reactions=list(REACTIONS),
            tick_ms=self.tick_ms,
        )
        snapshot = Snapshot(
            epoch=room.epoch,
            seq=room.seq,
            title="baseline",
            phase="narrating",
            beat=room.beat,
            story=[],
            truncated=False,
            partial="",
            ballot=None,
            tally=None,
            mood=Mood(valence=0.0, arousal=0.0, intensity=0.0, reactions={}),
            viewers=self.connections + 1,
            narrator="ok",
        )
        # Synchronous from here to joining the room: no frame can slip in between.
        websockets.broadcast([ws], codec.encode(welcome), text=codec.is_text)
        websockets.broadcast([ws], codec.encode(snapshot), text=codec.is_text)
        conns = room.conns.setdefault(codec.subprotocol, set())
        conns.add(ws)
        try:
            async for _message in ws:
                pass  # the baseline ignores votes and reactions
        except websockets.ConnectionClosed:
            pass
        finally:
            conns.discard(ws)
