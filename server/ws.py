"""WebSocket admission, hello and join: from a handshake to a session in a room.

``Admission.handle`` is websockets' connection handler. In order:

0. **Handshake** (``check_handshake``, before websockets upgrades): only
   ``GET`` (405), an allowed ``Origin`` (403), and an address under its
   connection cap (429) — refused with plain HTTP, before any state.
1. **Admit**: the path names an open room (else 4003 bad path / 4004 no such
   room), the room has room for one more (else 4029 full), the address holds
   fewer than ``max_connections_per_address`` (else 4029: a race past step 0).
2. **Hello**: the first message must be ``hello`` within ``hello_timeout_s``
   (4002); anything else is answered ``not_joined`` (rate-limited). The
   hello's token is admitted by ``server/auth.py`` (else ``unauthorized``,
   then 4401): the session's principal is the token's subject and role.
3. **Join**: welcome, then the missed frames (resume) or a snapshot, then live
   frames — all without awaiting, so no frame can fall in between.
4. **Receive** until the connection closes; then leave the room.
"""

from __future__ import annotations

import asyncio
import http
import re
import socket
import time
from collections.abc import Callable, Sequence
from urllib.parse import urlsplit

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed, NegotiationError
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from fablecast.protocol import messages as m
from fablecast.protocol.codec import codec_for_subprotocol
from fablecast.protocol.codes import CloseCode
from fablecast.protocol.version import PROTOCOL_VERSION, SUBPROTOCOLS
from fablecast.server.auth import Action, Authenticator, KeyRing, authorize, origin_allowed
from fablecast.server.auth import Admission as Admitted
from fablecast.server.config import AuthConfig, ServerConfig
from fablecast.server.fanout import wire_frames
from fablecast.server.http import text_response
from fablecast.server.keepalive import KeepAlive
from fablecast.server.limits import AddressLimits, AnonymousVoteQuota, address_key
from fablecast.server.metrics import Metrics
from fablecast.server.room import effects as fx
from fablecast.server.room.runner import RoomRunner
from fablecast.server.rooms import RoomRegistry
from fablecast.server.session import ConnectionGuard, Session

#: The WebSocket paths: ``/rooms/<room>``.
ROOM_PATH = re.compile(r"/rooms/([A-Za-z0-9_-]{1,64})")


class Admission:
    """Admits WebSocket connections into rooms and runs each one's session."""

    def __init__(
        self,
        config: ServerConfig,
        rooms: RoomRegistry,
        metrics: Metrics,
        keepalive: KeepAlive[ServerConnection],
        clock: Callable[[], float],
        *,
        auth: AuthConfig | None = None,
        authenticator: Authenticator | None = None,
    ) -> None:
        self.config = config
        self.rooms = rooms
        self.metrics = metrics
        self.keepalive = keepalive
        self.clock = clock
        # Access control (server/auth.py, server/limits.py; docs/security.md).
        self.auth_config = auth or AuthConfig()
        a = self.auth_config
        self.authenticator = authenticator or Authenticator(
            KeyRing.from_config(a.keys, a.current_key) or KeyRing.ephemeral(),
            anonymous_ttl_s=a.anonymous_ttl_s,
        )
        self.addresses = AddressLimits(
            config.max_connections_per_address,
            config.address_messages_per_s,
            config.address_message_burst,
            config.anonymous_reactions_per_address_per_s,
            config.anonymous_reaction_burst_per_address,
        )
        self.vote_quota = AnonymousVoteQuota(config.anonymous_votes_per_address)
        self.guard = ConnectionGuard(config.fragment_timeout_s)

    def check_handshake(self, connection: ServerConnection, request: Request) -> Response | None:
        """Refuse a WebSocket handshake by method, Origin or address (step 0), else None."""
        if request.method != "GET":
            resp = text_response(http.HTTPStatus.METHOD_NOT_ALLOWED, "method not allowed\n")
            resp.headers["Allow"] = "GET"
            return resp
        headers = request.headers
        if not origin_allowed(
            headers.get("Origin"), headers.get("Host"), self.auth_config.allowed_origins
        ):
            self.metrics.refused.labels("origin").inc()
            return text_response(http.HTTPStatus.FORBIDDEN, "origin not allowed\n")
        address = _address(connection)
        if self.addresses.connections(address) >= self.config.max_connections_per_address:
            self.metrics.refused.labels("connections_per_address").inc()
            return text_response(
                http.HTTPStatus.TOO_MANY_REQUESTS, "too many connections from this address\n"
            )
        return None

    async def handle(self, ws: ServerConnection) -> None:
        """websockets' handler: admit, hello, join, receive, leave."""
        path = urlsplit(ws.request.path if ws.request else "").path
        _shed_handshake(ws)
        match = ROOM_PATH.fullmatch(path)
        if match is None:
            await ws.close(CloseCode.BAD_PATH, "path must be /rooms/<room>")
            return
        runner = self.rooms.get(match.group(1))
        if runner is None:
            await ws.close(CloseCode.ROOM_NOT_FOUND, f"no room {match.group(1)!r}")
            return
        if runner.fanout.subscriber_count >= self.config.max_viewers_per_room:
            await ws.close(CloseCode.ROOM_FULL, "room is full")
            return
        address = _address(ws)
        if not self.addresses.connect(address, time.monotonic()):
            self.metrics.refused.labels("connections_per_address").inc()
            await ws.close(CloseCode.ROOM_FULL, "too many connections from this address")
            return
        sndbuf = self.config.socket_send_buffer
        sock = ws.transport.get_extra_info("socket") if ws.transport else None
        if sndbuf is not None and sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
        session = Session(
            ws,
            codec_for_subprotocol(ws.subprotocol),
            self.config,
            self.metrics,
            address=address,
            addresses=self.addresses,
            vote_quota=self.vote_quota,
        )
        self.metrics.connections.inc()
        self.keepalive.add(ws)
        self.guard.add(session)
        joined = False
        try:
            hello = await self._await_hello(session)
            if hello is None or not self.admit(session, runner, hello):
                await ws.wait_closed()  # let the closing handshake carry our code
                return
            if _banned(session, runner):
                await ws.wait_closed()
                return
            self.join(session, runner, hello)
            joined = True
            async for data in ws:
                session.receive(data)
        except ConnectionClosed:
            pass
        finally:
            self.guard.discard(session)
            self.addresses.disconnect(address)
            self.keepalive.discard(ws)
            self.metrics.connections.dec()
            if joined:
                runner.fanout.detach(session)
                if session.participant is not None:
                    runner.dispatch(fx.ViewerLeft(session.participant))
                    self.rooms.audience_changed(runner)

    async def _await_hello(self, session: Session) -> m.Hello | None:
        try:
            async with asyncio.timeout(self.config.hello_timeout_s):
                async for data in session.ws:
                    hello = session.receive_before_hello(data)
                    if hello is not None:
                        return hello
                    if session.closed:
                        return None
        except TimeoutError:
            session.close(CloseCode.HELLO_TIMEOUT, "no hello in time")
        if not session.closed:  # the client went away before saying hello
            session.close(CloseCode.GOING_AWAY, "closed before hello")
        return None

    def admit(self, session: Session, runner: RoomRunner, hello: m.Hello) -> bool:
        """Verify the hello's token for this room; set the session's principal.

        Refused: ``unauthorized`` (saying why), then close 4401; nothing else
        happens (no join, no presence, no vote can follow).
        """
        admitted = self.authenticator.admit(
            hello.token,
            runner.name,
            allow_anonymous=self.rooms.config_of(runner.name).anonymous,
            now=self.clock(),
        )
        if isinstance(admitted, Admitted):
            refusal = authorize(admitted.principal, Action.WATCH, runner.name)
            if refusal is None:
                session.principal = admitted.principal
                session.identity = admitted.identity
                return True
        else:
            refusal = admitted
        self.metrics.refused.labels(refusal.code.value).inc()
        session.error(refusal.code, refusal.message, ref="hello", force=True)
        session.close(CloseCode.UNAUTHORIZED, "unauthorized")
        return False

    def join(self, session: Session, runner: RoomRunner, hello: m.Hello) -> None:
        """Welcome, then replay or snapshot, then live: all without awaiting.

        This is the one resume path: the stream says what the client missed
        (``RoomStream.missed``), or that it cannot say, and then the client
        gets a snapshot with ``recovered: false``.
        """
        s = self.config
        principal = session.principal
        assert principal is not None, "admit() comes first"
        # Votes count under the token's subject; hello.participant is never trusted.
        participant = principal.subject
        session.participant = participant
        session.runner = runner
        runner.flush()
        stream = runner.stream
        entries = None
        if hello.since is not None:
            entries = stream.missed(hello.epoch, hello.since, runner.fanout.outbox_max_bytes)
            self.metrics.resumes.labels(str(entries is not None).lower()).inc()
        session.send_now(
            m.Welcome(
                protocol=PROTOCOL_VERSION,
                room=runner.name,
                participant=participant,
                role=principal.role,
                identity=session.identity,
                epoch=stream.epoch,
                seq=stream.seq,
                recovered=None if hello.since is None else entries is not None,
                limits=m.Limits(
                    max_message_bytes=s.max_message_bytes,
                    messages_per_s=s.messages_per_s,
                    message_burst=s.message_burst,
                    reactions_per_s=runner.settings.reactions_per_s,
                    reaction_burst=runner.settings.reaction_burst,
                    history_frames=s.history_frames,
                ),
                reactions=list(m.REACTIONS),
                tick_ms=s.tick_ms,
            )
        )
        if entries is None:
            session.send_now(
                runner.room.snapshot(
                    self.clock(), epoch=stream.epoch, seq=stream.seq, participant=participant
                )
            )
        else:
            session.write(wire_frames(entries, session.codec))
        runner.fanout.attach(session)
        runner.dispatch(fx.ViewerJoined(participant), origin=session)
        self.rooms.audience_changed(runner)


def _banned(session: Session, runner: RoomRunner) -> bool:
    """A moderator banned this identity (the token's subject) from the room: close 4403
    before any welcome."""
    principal = session.principal
    if principal is None or principal.subject not in runner.room.mod.banned:
        return False
    session.close(CloseCode.BANNED, "banned from this room by a moderator")
    return True


def select_subprotocol(
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


def _address(ws: ServerConnection) -> str:
    """The per-address limits' key of the peer (``limits.address_key``)."""
    peer = ws.remote_address
    host = peer[0] if isinstance(peer, tuple) and peer else str(peer)
    return address_key(str(host))
