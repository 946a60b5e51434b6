"""The node: builds its parts, starts and stops them, and runs its background tasks.

One port serves both WebSocket rooms (``/rooms/<room>``, ``fablecast.server.ws``)
and HTTP (``fablecast.server.http``: probes, metrics, the room list). Rooms live
in the registry (``fablecast.server.rooms``). The node's tasks: the tick (every
room's stream flushed to its fan-out), event-loop lag, the keepalive sweep and
the engine warm-up. ``stop()`` drains: clients are closed with 1001 (going
away) so they resume elsewhere, then rooms and engine requests are stopped and
the engine released.

The node has one clock (``clock``, wall time): rooms' timers, vote windows and
snapshots read it. The event log (``fablecast.server.store``, on by default)
restores rooms before they open, and saves their streams at ``stop()``. Where
later parts plug in: access control (tokens, Origin) in ``ws.Admission``, a
broker between the streams of several nodes.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import http
import ipaddress
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from fablecast.inference.backends import create_engine
from fablecast.inference.engine import EngineClient
from fablecast.inference.narrator import Narrator
from fablecast.inference.scheduled import ScheduledEngine
from fablecast.inference.scheduler import SchedulerConfig
from fablecast.protocol.codes import CloseCode
from fablecast.protocol.version import PROTOCOL_VERSION, SUBPROTOCOLS
from fablecast.server import pages
from fablecast.server.config import Config, RoomConfig
from fablecast.server.http import HttpRequest, Router, json_response, response, text_response
from fablecast.server.keepalive import KeepAlive
from fablecast.server.metrics import Metrics
from fablecast.server.room.runner import RoomRunner
from fablecast.server.rooms import RoomRegistry
from fablecast.server.session import close_soon, guarded_connection
from fablecast.server.store.archive import Archive
from fablecast.server.store.routes import StoreRoutes
from fablecast.server.ws import ROOM_PATH, Admission, select_subprotocol

log = logging.getLogger(__name__)


class Node:
    """A Fablecast server: rooms, sessions, engine, probes."""

    def __init__(
        self,
        config: Config | None = None,
        engine: EngineClient | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config or Config()
        self.clock = clock
        cfg = self.config.engine
        base = engine or create_engine(cfg.kind, cfg.model, cfg.options)
        #: A node closes only the engine it created (a passed-in engine may be shared).
        self.owns_engine = engine is None
        self.metrics = Metrics()
        # Every room's requests go through one scheduler: admission, fairness, budgets,
        # a bounded queue, and per-room status (busy/stalled) shown to the audience.
        sched = dict(cfg.scheduler)
        if base.name != "scripted":
            # A beat's candidate openings run side by side (best-of-n; docs/stories.md).
            sched.setdefault("max_running_per_room", max(2, cfg.openings))
        self.engine = ScheduledEngine(base, SchedulerConfig(**sched))
        self.narrator = Narrator(
            self.engine, stall_timeout_s=cfg.stall_timeout_s, sentence_guard=cfg.sentence_guard
        )
        s = self.config.server
        self.rooms = RoomRegistry(s, self.engine, self.narrator, self.metrics, clock)
        self.engine.on_status = self.rooms.narrator_status
        self.ready = False
        self.engine_error: str | None = None
        self.keepalive: KeepAlive[ServerConnection] = KeepAlive(
            s.ping_interval_s,
            s.ping_timeout_s,
            lambda ws: close_soon(
                ws, CloseCode.INTERNAL_ERROR, "keepalive ping timeout", s.close_timeout_s
            ),
        )
        self.admission = Admission(
            s, self.rooms, self.metrics, self.keepalive, clock, auth=self.config.auth
        )
        #: The event log (None when ``[store] enabled = false``): restore, transcripts, rewind.
        self.archive = Archive(self.config.store) if self.config.store.enabled else None
        self.http = Router(ROOM_PATH)
        self._routes()
        self._server: Server | None = None
        self._metrics_server: Server | None = None
        #: The separate metrics listener's port (``[auth] metrics_port``), once started.
        self.metrics_port: int | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.port = 0

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Open the configured rooms, listen, and warm the engine up in the background."""
        s = self.config.server
        if self.archive is not None:
            await self._open_logged_rooms()  # StoreError: no start (docs/store.md)
        else:
            for rc in self.config.rooms:
                self.open_room(rc)
        self._server = await serve(
            self.admission.handle,
            s.host,
            s.port,
            subprotocols=[Subprotocol(p) for p in SUBPROTOCOLS],
            select_subprotocol=select_subprotocol,
            process_request=self._process_request,
            # Bounds each connection's outbox as it reads (ping floods): server/session.py.
            create_connection=guarded_connection(s),
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
        a = self.config.auth
        if a.metrics_port is not None:
            self._metrics_server = await serve(
                self._never_upgraded,
                a.metrics_host,
                a.metrics_port,
                process_request=self._metrics_only,
            )
            sockets = self._metrics_server.sockets
            self.metrics_port = sockets[0].getsockname()[1] if sockets else a.metrics_port
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._tick_loop(), name="tick"),
            loop.create_task(self._lag_loop(), name="loop-lag"),
            loop.create_task(self.keepalive.run(), name="keepalive"),
            loop.create_task(self.admission.guard.run(), name="connection-guard"),
            loop.create_task(self._warm_up(), name="engine-warm-up"),
        ]

    async def stop(self) -> None:
        """Drain: close clients with 1001, stop tasks and rooms, release the engine."""
        if self._server is not None:
            self._server.close(close_connections=True)
            await self._server.wait_closed()
        if self._metrics_server is not None:
            self._metrics_server.close()
            await self._metrics_server.wait_closed()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.rooms.close_all()
        if self.archive is not None and self.archive.writer is not None:
            await self.archive.close(self.rooms.values())
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
        """Create and start a room from its config (``RoomError`` if it cannot be)."""
        return self.rooms.open(rc)

    async def open_room_logged(self, rc: RoomConfig) -> RoomRunner:
        """Open a room through the event log: restored at its last committed beat, or logged new."""
        if self.archive is None:
            return self.open_room(rc)
        runner = self.rooms.open(rc, start=False)
        try:
            await self.archive.prepare(runner, rc)
        except BaseException:
            self.rooms.discard(rc.name)
            raise
        runner.start(engine_ready=self.rooms.engine_ready)
        return runner

    async def _open_logged_rooms(self) -> None:
        """Open the event log, then every configured room and fork, restored from it."""
        assert self.archive is not None
        await self.archive.open(on_status=self._store_status)
        writer = self.rooms.journal = self.archive.writer
        assert writer is not None
        self.metrics.store_committed.set_function(lambda: writer.committed)
        self.metrics.store_backlog.set_function(lambda: writer.backlog)
        self.metrics.store_down.set_function(lambda: 0 if writer.down is None else 1)
        configured = {rc.name for rc in self.config.rooms}
        for rc in self.config.rooms:
            await self.open_room_logged(rc)
        for name in await self.archive.forks():  # rooms made at run time
            if name not in configured and len(self.rooms) < self.config.server.max_rooms:
                await self.open_room_logged(await self.archive.stored_config(name))

    def _store_status(self, reason: str | None) -> None:
        for runner in self.rooms.values():
            runner.store_status(reason)

    # ------------------------------------------------------------------ background tasks

    async def _warm_up(self) -> None:
        if self.engine.name != "scripted":
            # Ballot dedupe by meaning (all-MiniLM-L6-v2 where installed; docs/stories.md).
            from fablecast.inference.story.embed import default_embedder

            self.narrator.embedder = await asyncio.to_thread(default_embedder)
            # Best-of-n openings after a vote, scored with that embedder.
            self.narrator.openings = self.config.engine.openings
            self.narrator.rests = self.config.engine.tone_pass
            self.narrator.tone_rounds = self.config.engine.tone_rounds
            self.narrator.tone_by = self.config.engine.tone_by
        try:
            if self.owns_engine or not self.engine.health().ready:
                await self.engine.start()
        except Exception as exc:
            self.engine_error = f"{type(exc).__name__}: {exc}"
            log.exception("engine failed to start")
            return
        self.ready = True
        self.rooms.set_engine_ready()
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
            for name, exc in self.rooms.flush():
                log.error("flush of room %s failed", name, exc_info=exc)

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

    def _routes(self) -> None:
        r = self.http
        r.add("/healthz", lambda req: text_response(http.HTTPStatus.OK, "ok\n"))
        r.add("/readyz", self._readyz)
        r.add("/metrics", self._metrics)
        StoreRoutes(self).add_to(r)  # transcripts, rewind, fork (docs/store.md)
        # The web pages, /api/rooms, and / (home page for browsers, else _index): server/pages.py.
        web_root = self.config.server.web_root
        pages.install(
            r,
            lambda: [runner.room for runner in self.rooms.values()],
            self.clock,
            Path(web_root) if web_root else pages.default_root(),
            self._index,
        )

    def _readyz(self, req: HttpRequest) -> Response:
        ready, body = self.readiness()
        status = http.HTTPStatus.OK if ready else http.HTTPStatus.SERVICE_UNAVAILABLE
        return json_response(body, status)

    def _metrics(self, req: HttpRequest) -> Response:
        return response(
            http.HTTPStatus.OK, self.metrics.render(), "text/plain; version=0.0.4; charset=utf-8"
        )

    def _index(self, req: HttpRequest) -> Response:
        # Paths only: echoing the request's Host header would reflect whatever a client sent.
        lines = [f"Fablecast protocol v{PROTOCOL_VERSION}. Rooms (WebSocket paths):"]
        lines += [f"  /rooms/{name}" for name in self.rooms]
        return text_response(http.HTTPStatus.OK, "\n".join(lines) + "\n")

    # ------------------------------------------------------------------ access (docs/security.md)

    def _process_request(
        self, connection: ServerConnection, request: Request
    ) -> Response | Awaitable[Response] | None:
        """websockets' ``process_request``: who may read ``/metrics``, then routes, then
        the WebSocket handshake checks (method, Origin, per-address cap)."""
        if urlsplit(request.path).path == "/metrics":
            refusal = self._metrics_refusal(connection, request)
            if refusal is not None:
                return refusal
        resp = self.http(connection, request)
        if resp is not None:
            return resp
        return self.admission.check_handshake(connection, request)

    def _metrics_refusal(self, connection: ServerConnection, request: Request) -> Response | None:
        """None when this request may read ``/metrics`` on the main port.

        A separate listener configured: never here (404). A token configured:
        ``Authorization: Bearer <token>`` (401 otherwise). Neither: loopback
        peers only (403 otherwise), so a node on a public address does not show
        its internals to everyone by default.
        """
        a = self.config.auth
        if a.metrics_port is not None:
            return text_response(http.HTTPStatus.NOT_FOUND, "not found\n")
        if a.metrics_token is not None:
            given = request.headers.get("Authorization", "")
            if hmac.compare_digest(given.encode(), f"Bearer {a.metrics_token}".encode()):
                return None
            resp = text_response(http.HTTPStatus.UNAUTHORIZED, "metrics need a bearer token\n")
            resp.headers["WWW-Authenticate"] = 'Bearer realm="metrics"'
            return resp
        peer = connection.remote_address
        host = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        try:
            loopback = ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
        except ValueError:
            loopback = False
        if loopback:
            return None
        return text_response(http.HTTPStatus.FORBIDDEN, "metrics are served to loopback only\n")

    def _metrics_only(self, connection: ServerConnection, request: Request) -> Response:
        """The separate metrics listener: ``GET /metrics`` and nothing else."""
        if urlsplit(request.path).path != "/metrics":
            return text_response(http.HTTPStatus.NOT_FOUND, "not found\n")
        if request.method not in ("GET", "HEAD"):
            return text_response(http.HTTPStatus.METHOD_NOT_ALLOWED, "method not allowed\n")
        return self._metrics(HttpRequest(request.method, "/metrics", {}, request.headers, {}))

    async def _never_upgraded(self, ws: ServerConnection) -> None:
        """The metrics listener answers every request in ``_metrics_only``."""
        await ws.close()
