"""One client connection: decode and validate, rate-limit, route to the room, write replies.

A session never awaits a write: replies and room frames go to the transport's
write buffer (its outbox), which the fan-out bounds (``outbox_max_bytes``, 4008).

Policy on bad input (every case answered, nothing of the room's state lost):
- undecodable / unknown / invalid message -> ``error`` with its code; after
  ``max_bad_messages`` in a row -> close 4001.
- over the rate limit -> ``error rate_limited``, message dropped; after
  ``max_rate_violations`` in a row -> close 4009.
- oversized frame -> closed by the WebSocket layer with 1009.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Final

from websockets.asyncio.server import ServerConnection
from websockets.protocol import State

from fablecast.protocol import messages as m
from fablecast.protocol.codec import Codec
from fablecast.protocol.codes import CloseCode, ErrorCode
from fablecast.protocol.errors import ProtocolError
from fablecast.server.config import ServerConfig
from fablecast.server.metrics import Metrics
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


class Session:
    """State of one connection after the handshake."""

    def __init__(
        self, ws: ServerConnection, codec: Codec, config: ServerConfig, metrics: Metrics
    ) -> None:
        self.ws = ws
        self.codec = codec
        self.config = config
        self.metrics = metrics
        self.participant: str | None = None
        self.runner: RoomRunner | None = None
        self._replies: list[bytes] = []
        self.closed = False
        self._tokens = float(config.message_burst)
        self._t = time.monotonic()
        self._bad = 0
        self._violations = 0

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
        """Close with 4008: the client fell behind its outbox bound."""
        self.close(CloseCode.SLOW_CONSUMER, "slow consumer: reconnect and resume")

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

    def error(self, code: ErrorCode, message: str, ref: str | None = None) -> None:
        """Answer with an ``error`` message."""
        self.send_message(m.Error(code=code, message=message, ref=ref))

    def close(self, code: CloseCode, reason: str) -> None:
        """Close the connection with ``code`` (once)."""
        if not self.closed:
            self.closed = True
            close_soon(self.ws, code, reason, self.config.close_timeout_s)

    # ------------------------------------------------------------------ input

    def _rate_ok(self) -> bool:
        now = time.monotonic()
        cfg = self.config
        self._tokens = min(
            float(cfg.message_burst), self._tokens + (now - self._t) * cfg.messages_per_s
        )
        self._t = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            self._violations = 0
            return True
        self._violations += 1
        if self._violations >= cfg.max_rate_violations:
            self.close(CloseCode.RATE_LIMIT_EXCEEDED, "rate limit exceeded repeatedly")
        else:
            self.error(
                ErrorCode.RATE_LIMITED, f"at most {cfg.messages_per_s:g} messages per second"
            )
        return False

    def decode(self, data: bytes | str) -> m.ClientMessage | None:
        """Decode one frame; answer and count bad input (None when it was bad)."""
        try:
            msg = self.codec.decode_client(data, self.config.max_message_bytes)
        except ProtocolError as exc:
            self._bad += 1
            if self._bad >= self.config.max_bad_messages:
                self.error(exc.code, exc.message)
                self.close(CloseCode.PROTOCOL_ERROR, "too many bad messages")
            else:
                self.error(exc.code, exc.message)
            return None
        self._bad = 0
        self.metrics.messages_received.labels(type(msg).__name__.lower()).inc()
        return msg

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
