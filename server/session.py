"""One client connection: decode and validate, rate-limit, route to the room, write replies.

A session never awaits a write: replies and room frames go to the transport's
write buffer (its outbox), which the fan-out bounds (``outbox_max_bytes``, 4008).

Policy on bad input (every case answered, nothing of the room's state lost):
- undecodable / unknown / invalid message -> ``error`` with its code; after
  ``max_bad_messages`` in a row -> close 4001.
- over the rate limit (the connection's, or its address's) -> ``error
  rate_limited``, message dropped; after ``max_rate_violations`` in a row ->
  close 4009. The same holds before ``hello`` (``not_joined`` replies).
- a message the connection's role may not send -> ``error forbidden``
  (``server/auth.py``); an anonymous identity past its address's vote cap ->
  ``error rejected`` (``server/limits.py``). Nothing is applied.
- oversized frame -> closed by the WebSocket layer with 1009.

Every reply a client can provoke is bounded: ``error`` replies go out at most
``errors_per_s`` per connection (the rest are counted, not sent), and nothing a
client sends is logged. A policy close (4001, 4009) writes the ``error`` that
explains it, and any queued replies, before its close frame.

Memory per connection, joined or not, is bounded by its outbox:
``GuardedConnection`` checks the write buffer each time the connection reads
(a flood of WebSocket pings makes the library write a pong per ping, and a
client that never reads lets them pile up); past ``outbox_max_bytes`` it stops
reading from the client and closes it with 4008. ``ConnectionGuard`` sweeps
every connection for unfinished fragmented messages (``fragment_timeout_s``,
close 4001).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable
from typing import Final

from websockets.asyncio.server import ServerConnection
from websockets.protocol import State

from fablecast.protocol import messages as m
from fablecast.protocol.codec import Codec
from fablecast.protocol.codes import CloseCode, ErrorCode
from fablecast.protocol.errors import ProtocolError
from fablecast.server.auth import Action, Principal, authorize
from fablecast.server.config import ServerConfig
from fablecast.server.limits import AddressLimits, AnonymousVoteQuota, TokenBucket
from fablecast.server.metrics import Metrics
from fablecast.server.moderation.types import Principal as ModeratorPrincipal
from fablecast.server.room import effects as fx
from fablecast.server.room.runner import RoomRunner
from fablecast.server.wire import ws_frame

log = logging.getLogger(__name__)

_BACKGROUND: Final[set[asyncio.Task[None]]] = set()


def close_soon(ws: ServerConnection, code: CloseCode, reason: str, timeout_s: float) -> None:
    """Start the closing handshake without awaiting it; drop the connection after ``timeout_s``.

    websockets' ``close()`` first waits for the write buffer to drain, and a
    client that stopped reading (the very client closed as a slow consumer, or
    for a missed keepalive pong) never drains it: the close would wait, and the
    connection hold its buffer, until the client reads again or TCP gives up.
    Past ``timeout_s`` the connection is aborted instead; the client finds it
    reset when it reads again, and resumes.
    """

    async def close() -> None:
        try:
            async with asyncio.timeout(timeout_s):
                await ws.close(code, reason)
        except TimeoutError:
            if ws.transport is not None:
                ws.transport.abort()

    task = asyncio.get_running_loop().create_task(close())
    _BACKGROUND.add(task)
    task.add_done_callback(_BACKGROUND.discard)


class GuardedConnection(ServerConnection):
    """A connection whose outbox is checked every time it reads (see the module docstring).

    ``outbox_max_bytes`` is set per node by ``guarded_connection``. ``on_overflow``
    is the session's 4008 close once there is a session; before that the
    connection is closed with 4008 directly.
    """

    outbox_max_bytes: int = 1024 * 1024
    close_timeout_s: float = 2.0
    on_overflow: Callable[[], None] | None = None
    #: The request head read so far while the handshake runs; None once it is complete.
    _head: bytearray | None = None
    _head_done = False

    def _screen_request(self, data: bytes) -> bytes | None:
        """The bytes of the first request's head to feed the protocol; None when refused.

        HTTP here is one request per connection, answered and closed: bytes after
        the head (a body, a second pipelined request) are dropped, and a request
        that announces a body is answered 400 at once (websockets' parser would
        drop it without an answer, and a pipelined request trips an assertion in
        its handshake code). A WebSocket client sends nothing before the 101.
        """
        if self._head_done:
            return b""
        head = self._head if self._head is not None else bytearray()
        start = max(0, len(head) - 3)
        head += data
        end = head.find(b"\r\n\r\n", start)
        if end < 0:
            self._head = head
            return data
        self._head, self._head_done = None, True
        extra = len(head) - (end + 4)
        if _BODY.search(bytes(head[:end])):
            transport = self.transport
            if transport is not None:
                transport.write(_NO_BODY)
                transport.close()
            return None
        return data[: len(data) - extra] if extra else data

    def data_received(self, data: bytes) -> None:
        """Feed the protocol (which may write pongs); stop reading past the outbox bound."""
        if self.protocol.state is State.CONNECTING:
            screened = self._screen_request(data)
            if not screened:
                return
            data = screened
        super().data_received(data)
        transport = self.transport
        if transport is None or transport.get_write_buffer_size() <= self.outbox_max_bytes:
            return
        if transport.is_reading():
            transport.pause_reading()  # no more input, so no more pongs to pile up
            if self.on_overflow is not None:
                self.on_overflow()
            elif self.state is State.OPEN:
                close_soon(
                    self, CloseCode.SLOW_CONSUMER, "outbox over its bound", self.close_timeout_s
                )
            else:  # still in the handshake: nothing to close politely
                transport.abort()


_BODY = re.compile(rb"\r\n(?:content-length[ \t]*:[ \t]*0*[1-9]|transfer-encoding[ \t]*:)", re.I)
_NO_BODY_TEXT = b"requests with a body are not accepted\n"
_NO_BODY = (
    b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(_NO_BODY_TEXT) + _NO_BODY_TEXT
)


def guarded_connection(config: ServerConfig) -> type[GuardedConnection]:
    """The connection class of a node (websockets' ``create_connection``)."""
    return type(
        "NodeConnection",
        (GuardedConnection,),
        {"outbox_max_bytes": config.outbox_max_bytes, "close_timeout_s": config.close_timeout_s},
    )


class ConnectionGuard:
    """Closes connections that hold an unfinished fragmented message too long.

    websockets assembles fragments until the final one arrives; a client that
    sends a first fragment and stops would hold it (up to ``max_message_bytes``)
    for ever. ``sweep(now)`` runs every second or so over the open sessions.
    """

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._since: dict[Session, float] = {}
        self.sessions: set[Session] = set()

    def add(self, session: Session) -> None:
        """Watch ``session`` until ``discard``."""
        self.sessions.add(session)

    def discard(self, session: Session) -> None:
        """Stop watching ``session``."""
        self.sessions.discard(session)
        self._since.pop(session, None)

    def sweep(self, now: float) -> list[Session]:
        """Close (4001) and return the sessions whose fragments are overdue."""
        overdue = []
        for session in self.sessions:
            if session.closed or session.ws.protocol.current_size is None:
                self._since.pop(session, None)
                continue
            since = self._since.setdefault(session, now)
            if now - since >= self.timeout_s:
                overdue.append(session)
        for session in overdue:
            self._since.pop(session, None)
            session.close(
                CloseCode.PROTOCOL_ERROR,
                f"fragmented message not finished within {self.timeout_s:g} s",
            )
        return overdue

    async def run(self, interval_s: float = 1.0) -> None:
        """Sweep every ``interval_s`` until cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(interval_s)
            self.sweep(loop.time())


#: The action each client message asks for (server/auth.py's role table).
_ACTIONS: Final[dict[type[m.ClientMessage], Action]] = {
    m.Vote: Action.VOTE,
    m.React: Action.REACT,
    m.Ping: Action.PING,
}


class Session:
    """State of one connection after the handshake."""

    def __init__(
        self,
        ws: ServerConnection,
        codec: Codec,
        config: ServerConfig,
        metrics: Metrics,
        *,
        address: str = "",
        addresses: AddressLimits | None = None,
        vote_quota: AnonymousVoteQuota | None = None,
    ) -> None:
        self.ws = ws
        self.codec = codec
        self.config = config
        self.metrics = metrics
        #: Who this connection is (set when its ``hello`` is admitted).
        self.principal: Principal | None = None
        self.participant: str | None = None
        #: The anonymous identity to hand back in ``welcome.identity`` (None: operator token).
        self.identity: str | None = None
        self.runner: RoomRunner | None = None
        #: The key per-address limits count under (``limits.address_key``).
        self.address = address
        self.addresses = addresses
        self.vote_quota = vote_quota
        self._replies: list[bytes] = []
        self.closed = False
        self._tokens = float(config.message_burst)
        self._t = time.monotonic()
        self._errors = TokenBucket.full(config.errors_per_s, 2 * config.errors_per_s, self._t)
        self._bad = 0
        self._violations = 0
        if isinstance(ws, GuardedConnection):
            ws.on_overflow = self._overflow

    def _overflow(self) -> None:
        if not self.closed:
            self.metrics.slow_clients_dropped.inc()
        self.close_slow()

    # ------------------------------------------------------------------ fan-out side

    @property
    def connection(self) -> object:
        """The websockets connection."""
        return self.ws

    def buffered_bytes(self) -> int:
        """Bytes in this client's outbox (the transport write buffer)."""
        transport = self.ws.transport
        return 0 if transport is None else int(transport.get_write_buffer_size())

    def close_slow(self) -> None:
        """Close with 4008: the client fell behind its outbox bound.

        Its queued replies are dropped (it is not reading them) and it is read no
        more: nothing it sends can grow its outbox further.
        """
        self._replies = []
        transport = self.ws.transport
        if transport is not None and transport.is_reading():
            transport.pause_reading()
        self._close(CloseCode.SLOW_CONSUMER, "slow consumer: reconnect and resume")

    def write(self, frames: list[bytes]) -> None:
        """Write queued replies, then ``frames`` (WebSocket frames), in one ``writelines``.

        Room frames arrive framed once per codec by the fan-out (``server.wire``), the
        same bytes for every client; this writes them straight to the transport,
        so a tick costs one system call per client and no copy. Nothing else
        writes data frames on this connection, so no frame can interleave with a
        fragmented message; websockets' own control frames (pong, close) go
        through the same transport, in order.
        """
        replies, self._replies = self._replies, []
        ws = self.ws
        transport = ws.transport
        if ws.protocol.state is not State.OPEN or transport is None:
            return
        transport.writelines([*replies, *frames] if replies else frames)

    def send_now(self, message: m.ServerMessage) -> None:
        """Encode and write one personal message at once (welcome, snapshot, pong)."""
        self._count(message)
        self.write([self._frame(message)])

    def _frame(self, message: m.ServerMessage) -> bytes:
        return ws_frame(self.codec.encode(message), text=self.codec.is_text)

    def send_message(self, message: m.ServerMessage) -> None:
        """Queue a reply (vote_ack, error): it goes out with the next tick's frames.

        Before the client joined a room, it is written at once.
        """
        runner = self.runner
        if runner is None:
            self.send_now(message)
            return
        self._count(message)
        self._replies.append(self._frame(message))
        runner.fanout.reply_queued(self)

    def _count(self, message: m.ServerMessage) -> None:
        if isinstance(message, m.Error):
            self.metrics.protocol_errors.labels(message.code).inc()

    def error(
        self, code: ErrorCode, message: str, ref: str | None = None, *, force: bool = False
    ) -> None:
        """Answer with an ``error`` message, within ``errors_per_s`` unless ``force``."""
        if not force and not self._errors.take(time.monotonic()):
            self.metrics.protocol_errors.labels(code.value).inc()
            self.metrics.replies_dropped.inc()
            return
        self.send_message(m.Error(code=code, message=message, ref=ref))

    def close(self, code: CloseCode, reason: str) -> None:
        """Close the connection with ``code`` (once), after writing its queued replies.

        The replies (the ``error`` that explains a policy close among them) are
        written now, ahead of the close frame, instead of with the next tick.
        """
        if self.closed:
            return
        if self._replies:
            replies, self._replies = self._replies, []
            transport = self.ws.transport
            if self.ws.protocol.state is State.OPEN and transport is not None:
                transport.writelines(replies)
        self._close(code, reason)

    def _close(self, code: CloseCode, reason: str) -> None:
        if not self.closed:
            self.closed = True
            close_soon(self.ws, code, reason, self.config.close_timeout_s)

    def refuse(self, error: ProtocolError, ref: str | None) -> None:
        """Answer a refusal by policy (``forbidden``, ``rejected``) and count it."""
        self.metrics.refused.labels(error.code.value).inc()
        self.error(error.code, error.message, ref=ref)

    # ------------------------------------------------------------------ input

    def _rate_ok(self) -> bool:
        now = time.monotonic()
        cfg = self.config
        self._tokens = min(
            float(cfg.message_burst), self._tokens + (now - self._t) * cfg.messages_per_s
        )
        self._t = now
        if self._tokens >= 1.0:
            addresses = self.addresses
            if addresses is None or addresses.message(self.address, now):
                self._tokens -= 1.0
                self._violations = 0
                return True
            limit = f"at most {cfg.address_messages_per_s:g} messages per second per address"
        else:
            limit = f"at most {cfg.messages_per_s:g} messages per second"
        self._violations += 1
        if self._violations >= cfg.max_rate_violations:
            self.error(ErrorCode.RATE_LIMITED, f"{limit}: closing", force=True)
            self.close(CloseCode.RATE_LIMIT_EXCEEDED, "rate limit exceeded repeatedly")
        else:
            self.error(ErrorCode.RATE_LIMITED, limit)
        return False

    def decode(self, data: bytes | str) -> m.ClientMessage | None:
        """Decode one frame; answer and count bad input (None when it was bad)."""
        try:
            msg = self.codec.decode_client(data, self.config.max_message_bytes)
        except ProtocolError as exc:
            self._bad += 1
            if self._bad >= self.config.max_bad_messages:
                self.error(exc.code, exc.message, force=True)
                self.close(CloseCode.PROTOCOL_ERROR, "too many bad messages")
            else:
                self.error(exc.code, exc.message)
            return None
        self._bad = 0
        self.metrics.messages_received.labels(type(msg).__name__.lower()).inc()
        return msg

    def receive_before_hello(self, data: bytes | str) -> m.Hello | None:
        """Handle one frame before ``hello``: the hello, or None (answered ``not_joined``).

        Rate-limited like any message, so a client cannot make the server write
        ``not_joined`` replies faster than ``messages_per_s``.
        """
        if self.closed or not self._rate_ok():
            return None
        msg = self.decode(data)
        if isinstance(msg, m.Hello):
            return msg
        if msg is not None:
            self.error(ErrorCode.NOT_JOINED, "send hello first", ref=_tag(msg))
        return None

    def _allowed(self, msg: m.ClientMessage, runner: RoomRunner) -> bool:
        """Authorization (role and room) and the anonymous vote cap; answers refusals."""
        principal = self.principal
        action = _ACTIONS.get(type(msg))
        if principal is None or action is None:
            return True
        refusal = authorize(principal, action, runner.name)
        if refusal is None and principal.anonymous:
            if isinstance(msg, m.Vote):
                refusal = self._vote_quota(msg, runner, principal)
            elif isinstance(msg, m.React) and not self._address_reaction_ok():
                refusal = ProtocolError(
                    ErrorCode.RATE_LIMITED,
                    f"at most {self.config.anonymous_reactions_per_address_per_s:g} "
                    "anonymous reactions per second per address",
                )
        if refusal is not None:
            self.refuse(refusal, _tag(msg))
            return False
        return True

    def _address_reaction_ok(self) -> bool:
        addresses = self.addresses
        return addresses is None or addresses.reaction(self.address, time.monotonic())

    def _vote_quota(
        self, vote: m.Vote, runner: RoomRunner, principal: Principal
    ) -> ProtocolError | None:
        quota = self.vote_quota
        window = runner.room.window
        if quota is None or window is None or vote.window != window.window:
            return None  # the room answers (not_in_phase, window_closed)
        if not 0 <= vote.option < len(window.options):
            return None  # unknown_option: spends nothing
        if quota.admit(runner.name, window.window, self.address, principal.subject):
            return None
        return ProtocolError(
            ErrorCode.REJECTED,
            f"at most {quota.per_address} anonymous voters per address in one window: "
            "this vote is not counted",
        )

    def receive(self, data: bytes | str) -> None:
        """Handle one frame from a joined client."""
        if self.closed or not self._rate_ok():
            return
        msg = self.decode(data)
        if msg is None:
            return
        runner = self.runner
        participant = self.participant
        assert runner is not None and participant is not None
        if not self._allowed(msg, runner):
            return
        match msg:
            case m.Vote(window=window, option=option):
                runner.dispatch(fx.VoteCast(participant, window, option), origin=self)
            case m.React(reaction=reaction, valence=valence, arousal=arousal):
                runner.dispatch(
                    fx.ReactionSent(participant, reaction, valence, arousal), origin=self
                )
            case m.Ping(nonce=nonce):
                self.send_now(m.Pong(nonce=nonce, server_time_ms=int(time.time() * 1000)))
            case m.Hello():
                self.error(ErrorCode.ALREADY_JOINED, "hello was already received", ref="hello")
            case m.Moderate():
                # The room core authorizes (role, room scope) and audits every one.
                who = self.principal or ModeratorPrincipal(participant)
                runner.dispatch(fx.Moderated(who, msg), origin=self)


def _tag(msg: m.ClientMessage) -> str:
    tag: str = msg.__struct_config__.tag  # type: ignore[assignment]
    return tag
