"""The node: wiring and lifecycle of one server process.

One port serves both WebSocket rooms (``/rooms/<room>``) and HTTP probes
(``/healthz``, ``/readyz``, ``/metrics``, ``/`` lists rooms). One tick task
flushes every room's channel (coalescing), one task measures event-loop lag.
``stop()`` drains: clients are closed with 1001 (going away) so they resume
elsewhere, then engine requests are cancelled and the engine released.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import logging
import re
import secrets
import socket
import time
from collections.abc import Sequence
from urllib.parse import urlsplit

import msgspec
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed, NegotiationError
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from fablecast.inference.backends import create_engine
from fablecast.inference.engine import EngineClient
from fablecast.inference.narrator import Narrator
from fablecast.inference.prompts import StorySpec
from fablecast.inference.scheduled import ScheduledEngine
from fablecast.inference.scheduler import SchedulerConfig
from fablecast.protocol import messages as m
from fablecast.protocol.codec import codec_for_subprotocol
from fablecast.protocol.codes import CloseCode, ErrorCode
from fablecast.protocol.version import PROTOCOL_VERSION, SUBPROTOCOLS
from fablecast.server.config import Config, RoomConfig
from fablecast.server.history import History
from fablecast.server.hub import RoomChannel, wire_frames
from fablecast.server.keepalive import KeepAlive
from fablecast.server.metrics import Metrics
from fablecast.server.room import effects as fx
from fablecast.server.room.runner import RoomRunner
from fablecast.server.room.state import Room
from fablecast.server.session import Session, close_soon

log = logging.getLogger(__name__)

_ROOM_PATH = re.compile(r"/rooms/([A-Za-z0-9_-]{1,64})")


class Node:
    """A Fablecast server: rooms, sessions, engine, probes."""

    def __init__(self, config: Config | None = None, engine: EngineClient | None = None) -> None:
        self.config = config or Config()
        cfg = self.config.engine
        base = engine or create_engine(cfg.kind, cfg.model, cfg.options)
        #: A node closes only the engine it created (a passed-in engine may be shared).
        self.owns_engine = engine is None
        # Every room's requests go through one scheduler: admission, fairness, budgets,
        # a bounded queue, and per-room status (busy/stalled/down) shown to the audience.
        self.engine = ScheduledEngine(
            base, SchedulerConfig(**cfg.scheduler), on_status=self.narrator_status
        )
        self.narrator = Narrator(self.engine, stall_timeout_s=cfg.stall_timeout_s)
        self.metrics = Metrics()
        self.rooms: dict[str, RoomRunner] = {}
        self.ready = False
        self.engine_error: str | None = None
        self._server: Server | None = None
        s = self.config.server
        self.keepalive: KeepAlive[ServerConnection] = KeepAlive(
            s.ping_interval_s,
            s.ping_timeout_s,
            lambda ws: close_soon(
                ws, CloseCode.INTERNAL_ERROR, "keepalive ping timeout", s.close_timeout_s
            ),
        )
        self._tasks: list[asyncio.Task[None]] = []
        self.port = 0

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Open the configured rooms, listen, and warm the engine up in the background."""
        s = self.config.server
        for rc in self.config.rooms:
            self.open_room(rc)
        self._server = await serve(
            self._handle,
            s.host,
            s.port,
            subprotocols=[Subprotocol(p) for p in SUBPROTOCOLS],
            select_subprotocol=_select_subprotocol,
            process_request=self._http,
            max_size=s.max_message_bytes,
            # Keepalive is one sweep for all connections (server/keepalive.py),
            # not a task and a timer per connection.
            ping_interval=None,
            close_timeout=s.close_timeout_s,
            # Encode once per codec: per-connection compression would redo the
            # work for every client (and cost memory per connection).
            compression=None,
        )
        self.port = self._server.sockets[0].getsockname()[1] if self._server.sockets else s.port
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._tick_loop(), name="tick"),
            loop.create_task(self._lag_loop(), name="loop-lag"),
            loop.create_task(self.keepalive.run(), name="keepalive"),
            loop.create_task(self._warm_up(), name="engine-warm-up"),
        ]

    async def stop(self) -> None:
        """Drain: close clients with 1001, stop tasks and rooms, release the engine."""
        if self._server is not None:
            self._server.close(close_connections=True)
            await self._server.wait_closed()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.gather(*(r.close() for r in self.rooms.values()), return_exceptions=True)
        for runner in self.rooms.values():
            with contextlib.suppress(Exception):
                await self.engine.cancel_room(runner.name)
        if self.owns_engine:
            with contextlib.suppress(Exception):
                await self.engine.close()
        self.ready = False

    async def serve_forever(self) -> None:
        """Run until cancelled."""
        assert self._server is not None
        await self._server.serve_forever()

    def url(self, room: str, host: str | None = None) -> str:
        """The WebSocket URL of ``room`` on this node."""
        return f"ws://{host or self.config.server.host}:{self.port}/rooms/{room}"

    def open_room(self, rc: RoomConfig) -> RoomRunner:
        """Create and start a room from its config."""
        if rc.name in self.rooms:
            raise ValueError(f"room {rc.name!r} already exists")
        if len(self.rooms) >= self.config.server.max_rooms:
            raise ValueError("max_rooms reached")
        s = self.config.server
        room = Room(rc.name, rc.settings())
        channel = RoomChannel(
            rc.name,
            state=lambda kind: room.state_frame(kind, _now()),
            metrics=self.metrics,
            history=History(s.history_frames, s.history_bytes),
            outbox_max_bytes=s.outbox_max_bytes,
        )
        runner = RoomRunner(
            room,
            channel,
            self.narrator,
            StorySpec(title=rc.title, premise=rc.premise, style=rc.style),
            self.metrics,
        )
        self.rooms[rc.name] = runner
        self.metrics.rooms.set(len(self.rooms))
        runner.start()
        return runner

    def narrator_status(self, room: str, state: m.NarratorState, message: str = "") -> None:
        """Tell ``room``'s audience the narrator's state (the scheduler's callback)."""
        runner = self.rooms.get(room)
        if runner is not None:
            runner.dispatch(fx.NarratorStatus(state, message))

    # ------------------------------------------------------------------ background tasks

    async def _warm_up(self) -> None:
        try:
            if self.owns_engine or not self.engine.engine.health().ready:
                await self.engine.start()
        except Exception as exc:
            self.engine_error = f"{type(exc).__name__}: {exc}"
            log.exception("engine failed to start")
            return
        self.ready = True
        log.info("engine ready: %s %s", self.engine.name, self.engine.model)

    async def _tick_loop(self) -> None:
        loop = asyncio.get_running_loop()
        interval = self.config.server.tick_ms / 1000
        deadline = loop.time()
        while True:
            deadline += interval
            delay = deadline - loop.time()
            if delay < 0:  # we are late: don't try to catch up with a burst
                deadline = loop.time()
                delay = 0
            await asyncio.sleep(delay)
            for runner in self.rooms.values():
                try:
                    runner.channel.flush()
                except Exception:
                    log.exception("flush of room %s failed", runner.name)

    async def _lag_loop(self) -> None:
        loop = asyncio.get_running_loop()
        interval = 0.1
        while True:
            t = loop.time()
            await asyncio.sleep(interval)
            self.metrics.loop_lag.observe(max(0.0, loop.time() - t - interval))

    # ------------------------------------------------------------------ HTTP

    def readiness(self) -> tuple[bool, dict[str, object]]:
        """Whether the node can narrate, and the body of ``/readyz``."""
        health = self.engine.health()
        ready = self.ready and health.ready
        body: dict[str, object] = {
            "ready": ready,
            "engine": health.engine,
            "model": health.model,
        }
        if not ready:
            body["detail"] = self.engine_error or health.detail or "engine warming up"
        return ready, body

    def _http(self, connection: ServerConnection, request: Request) -> Response | None:
        path = urlsplit(request.path).path
        if _ROOM_PATH.fullmatch(path) or path.startswith("/rooms/"):
            return None  # the WebSocket handshake goes on (426 without Upgrade)
        if path == "/healthz":
            return connection.respond(http.HTTPStatus.OK, "ok\n")
        if path == "/readyz":
            ready, body = self.readiness()
            status = http.HTTPStatus.OK if ready else http.HTTPStatus.SERVICE_UNAVAILABLE
            return _response(status, msgspec.json.encode(body) + b"\n", "application/json")
        if path == "/metrics":
            return _response(
                http.HTTPStatus.OK,
                self.metrics.render(),
                "text/plain; version=0.0.4; charset=utf-8",
            )
        if path == "/":
            host = request.headers.get("Host", f"127.0.0.1:{self.port}")
            lines = [f"Fablecast protocol v{PROTOCOL_VERSION}. Rooms:"]
            lines += [f"  ws://{host}/rooms/{name}" for name in self.rooms]
            return connection.respond(http.HTTPStatus.OK, "\n".join(lines) + "\n")
        return connection.respond(http.HTTPStatus.NOT_FOUND, "not found\n")

    # ------------------------------------------------------------------ WebSocket

    async def _handle(self, ws: ServerConnection) -> None:
        path = urlsplit(ws.request.path if ws.request else "").path
        _shed_handshake(ws)
        match = _ROOM_PATH.fullmatch(path)
        if match is None:
            await ws.close(CloseCode.BAD_PATH, "path must be /rooms/<room>")
            return
        runner = self.rooms.get(match.group(1))
        if runner is None:
            await ws.close(CloseCode.ROOM_NOT_FOUND, f"no room {match.group(1)!r}")
            return
        if runner.channel.subscriber_count >= self.config.server.max_viewers_per_room:
            await ws.close(CloseCode.ROOM_FULL, "room is full")
            return
        sndbuf = self.config.server.socket_send_buffer
        sock = ws.transport.get_extra_info("socket") if ws.transport else None
        if sndbuf is not None and sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
        session = Session(
            ws, codec_for_subprotocol(ws.subprotocol), self.config.server, self.metrics
        )
        self.metrics.connections.inc()
        self.keepalive.add(ws)
        joined = False
        try:
            hello = await self._await_hello(session)
            if hello is None:
                await ws.wait_closed()  # let the closing handshake carry our code
                return
            self._join(session, runner, hello)
            joined = True
            async for data in ws:
                session.receive(data)
        except ConnectionClosed:
            pass
        finally:
            self.keepalive.discard(ws)
            self.metrics.connections.dec()
            if joined:
                runner.channel.detach(session)
                if session.participant is not None:
                    runner.dispatch(fx.ViewerLeft(session.participant))
                    self.engine.set_audience(runner.name, runner.room.viewer_count)

    async def _await_hello(self, session: Session) -> m.Hello | None:
        try:
            async with asyncio.timeout(self.config.server.hello_timeout_s):
                async for data in session.ws:
                    msg = session.decode(data)
                    if isinstance(msg, m.Hello):
                        return msg
                    if msg is not None:
                        session.error(ErrorCode.NOT_JOINED, "send hello first", ref="hello")
                    if session.closed:
                        return None
        except TimeoutError:
            session.close(CloseCode.HELLO_TIMEOUT, "no hello in time")
        if not session.closed:  # the client went away before saying hello
            session.close(CloseCode.GOING_AWAY, "closed before hello")
        return None

    def _join(self, session: Session, runner: RoomRunner, hello: m.Hello) -> None:
        """Welcome, then replay or snapshot, then live: all without awaiting."""
        s = self.config.server
        participant = hello.participant or f"anon-{secrets.token_hex(6)}"
        session.participant = participant
        session.runner = runner
        ch = runner.channel
        ch.flush()
        entries = None
        if hello.since is not None:
            entries = ch.missed(hello.epoch, hello.since)
            self.metrics.resumes.labels(str(entries is not None).lower()).inc()
        session.send_now(
            m.Welcome(
                protocol=PROTOCOL_VERSION,
                room=runner.name,
                participant=participant,
                epoch=ch.epoch,
                seq=ch.seq,
                recovered=None if hello.since is None else entries is not None,
                limits=m.Limits(
                    max_message_bytes=s.max_message_bytes,
                    messages_per_s=s.messages_per_s,
                    message_burst=s.message_burst,
                    reactions_per_s=runner.room.settings.reactions_per_s,
                    history_frames=s.history_frames,
                ),
                reactions=list(m.REACTIONS),
                tick_ms=s.tick_ms,
            )
        )
        if entries is None:
            session.send_now(
                runner.room.snapshot(_now(), epoch=ch.epoch, seq=ch.seq, participant=participant)
            )
        else:
            session.write(wire_frames(entries, session.codec))
        ch.attach(session, epoch=None, since=None)
        runner.dispatch(fx.ViewerJoined(participant), origin=session)
        self.engine.set_audience(runner.name, runner.room.viewer_count)


def _shed_handshake(ws: ServerConnection) -> None:
    """Free the handshake's headers once the connection is open.

    websockets keeps the request and response for the connection's lifetime;
    their headers are ~2.5 KiB per connection from a minimal client and several
    KiB from a browser (user agent, cookies, languages), and nothing reads them
    after the handshake: what a session needs (the path; later the Origin or a
    token) is taken before this. The request line (``path``) stays.
    """
    if ws.request is not None:
        ws.request.headers.clear()
    if ws.response is not None:
        ws.response.headers.clear()


def _now() -> float:
    return time.time()


def _select_subprotocol(
    connection: ServerConnection, subprotocols: Sequence[Subprotocol]
) -> Subprotocol | None:
    """Pick the client's first offer that we speak; JSON when it offered none.

    An offer of only unknown subprotocols is refused at the handshake (HTTP 400).
    """
    offered = list(subprotocols)
    for sub in offered:
        if sub in SUBPROTOCOLS:
            return Subprotocol(sub)
    if not offered:
        return None
    raise NegotiationError(f"unsupported subprotocols {offered}; use one of {list(SUBPROTOCOLS)}")


def _response(status: http.HTTPStatus, body: bytes, content_type: str) -> Response:
    headers = Headers()
    headers["Content-Type"] = content_type
    headers["Content-Length"] = str(len(body))
    headers["Cache-Control"] = "no-store"
    return Response(status.value, status.phrase, headers, body)
