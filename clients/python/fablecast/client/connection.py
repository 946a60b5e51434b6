"""An async Fablecast client with resume, reconnect and exactly-once room frames.

Usage::

    async with FablecastClient("ws://localhost:8080/rooms/lobby") as client:
        async for msg in client:
            ...  # every server message, room frames exactly once and in seq order

The client keeps one identity for its whole life (so a vote survives a
reconnect without being counted twice): the ``token`` it was given, or else the
anonymous identity the server issues in its first ``welcome.identity``, sent
back as ``hello.token`` on every reconnect. It tracks the ``epoch`` and the ``seq`` of
the last room frame it yielded, and when the connection drops (or a seq gap shows
the stream is broken) it reconnects with jittered exponential backoff and sends
``hello`` with ``epoch`` + ``since`` to resume. Frames it has already yielded are
dropped, so the consumer sees each room frame once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Final, Literal, Self

import msgspec
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI
from websockets.typing import Subprotocol

from fablecast.protocol.codec import JSON, MSGPACK, Codec
from fablecast.protocol.codes import CloseCode
from fablecast.protocol.errors import ProtocolError
from fablecast.protocol.messages import (
    ROOM_FRAME_TYPES,
    Hello,
    Ping,
    React,
    Reaction,
    RoomMessage,
    ServerMessage,
    Snapshot,
    Vote,
    Welcome,
)

__all__ = [
    "DEFAULT_RETRY_CLOSE_CODES",
    "Backoff",
    "ConnectError",
    "FablecastClient",
    "FablecastClosed",
    "FablecastError",
    "NotConnectedError",
    "ReconnectFailed",
    "SeqGapError",
    "new_participant_id",
]

log = logging.getLogger("fablecast.client")

#: Close codes after which the client reconnects and resumes. 1006 is "no close
#: frame" (the connection just died); 4008 is the server's slow-consumer eviction.
DEFAULT_RETRY_CLOSE_CODES: Final[frozenset[int]] = frozenset(
    {
        int(CloseCode.GOING_AWAY),
        1006,
        int(CloseCode.INTERNAL_ERROR),
        1012,  # service restart
        1013,  # try again later
        1014,  # bad gateway
        int(CloseCode.SLOW_CONSUMER),
    }
)
#: Close codes that end the stream without an error.
_END_CLOSE_CODES: Final = frozenset({1000})

CodecName = Literal["json", "msgpack"]
_CODECS: Final[dict[str, Codec]] = {"json": JSON, "msgpack": MSGPACK}


# --------------------------------------------------------------------------- errors


class FablecastError(Exception):
    """Base of every error this SDK raises."""


class ConnectError(FablecastError):
    """The (first) connection could not be opened."""


class FablecastClosed(FablecastError):
    """The server closed the connection with a code that does not allow reconnecting.

    ``code`` is the WebSocket close code (see ``protocol.codes.CloseCode``), ``reason``
    the close reason the server gave.
    """

    def __init__(self, code: int, reason: str = "") -> None:
        try:
            name = CloseCode(code).name
        except ValueError:
            name = str(code)
        super().__init__(f"server closed the connection: {code} ({name}) {reason}".rstrip())
        self.code = code
        self.reason = reason


class ReconnectFailed(FablecastError):
    """Reconnecting failed ``attempts`` times in a row (``Backoff.max_attempts``)."""

    def __init__(self, attempts: int, last: BaseException | None) -> None:
        super().__init__(f"gave up reconnecting after {attempts} attempts: {last!r}")
        self.attempts = attempts
        self.last = last


class NotConnectedError(FablecastError):
    """A message could not be sent: the client is not connected (or is reconnecting)."""


class SeqGapError(FablecastError):
    """A room frame was missed and reconnecting is switched off."""

    def __init__(self, expected: int, got: int) -> None:
        super().__init__(f"room frame gap: expected seq {expected}, got {got}")
        self.expected = expected
        self.got = got


class _StreamBroken(Exception):
    """Internal: the stream must be re-established with resume (gap, epoch change)."""


# --------------------------------------------------------------------------- backoff


@dataclass(frozen=True, slots=True)
class Backoff:
    """Jittered exponential backoff between reconnect attempts.

    The n-th consecutive failure (0-based) waits ``d * (1 - jitter) + d * jitter * U``
    seconds where ``d = min(maximum, base * factor**n)`` and ``U`` is uniform in [0, 1).
    ``max_attempts`` bounds consecutive failed attempts (``None``: retry forever).
    """

    base: float = 0.2
    maximum: float = 10.0
    factor: float = 2.0
    jitter: float = 0.5
    max_attempts: int | None = None

    def __post_init__(self) -> None:
        if self.base < 0 or self.maximum < 0 or self.factor < 1:
            raise ValueError("backoff needs base >= 0, maximum >= 0 and factor >= 1")
        if not 0.0 <= self.jitter <= 1.0:
            raise ValueError("backoff jitter must be within [0, 1]")
        if self.max_attempts is not None and self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1 (or None)")

    def cap(self, attempt: int) -> float:
        """The un-jittered delay of the ``attempt``-th consecutive failure (0-based)."""
        exponent = min(max(attempt, 0), 64)  # no float overflow however long it retries
        return min(self.maximum, self.base * self.factor**exponent)

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """The jittered delay before retrying after the ``attempt``-th consecutive failure."""
        cap = self.cap(attempt)
        u = (rng or random).random()
        return cap * (1.0 - self.jitter) + cap * self.jitter * u


def new_participant_id() -> str:
    """A fresh random participant id (valid for ``hello.participant``)."""
    return "py-" + secrets.token_hex(8)


# --------------------------------------------------------------------------- client


class _Probe(msgspec.Struct, gc=False):
    """Enough of any server message to keep seq accounting for types we cannot decode."""

    type: str = ""
    epoch: str | None = None
    seq: int | None = None


_PROBE_JSON: Final = msgspec.json.Decoder(_Probe)
_PROBE_MSGPACK: Final = msgspec.msgpack.Decoder(_Probe)


class FablecastClient:
    """An async client of one Fablecast room.

    ``async with FablecastClient(url) as c: async for msg in c: ...`` yields every
    decoded server message. Room frames are yielded exactly once, in ``seq`` order;
    after a reconnect the consumer sees the new ``welcome`` and then either the missed
    frames (``recovered=True``) or a fresh ``snapshot`` (``recovered=False``).

    ``since`` + ``epoch`` resume from a known position on the first connection too.
    ``reconnect=False`` turns every connection loss into an exception (or the end of
    iteration for a normal close). ``backoff`` sets the delays and the attempt bound;
    ``retry_close_codes`` the close codes that allow reconnecting.
    """

    def __init__(
        self,
        url: str,
        *,
        codec: CodecName = "json",
        participant: str | None = None,
        token: str | None = None,
        name: str | None = None,
        since: int | None = None,
        epoch: str | None = None,
        reconnect: bool = True,
        backoff: Backoff | None = None,
        retry_close_codes: Iterable[int] = DEFAULT_RETRY_CLOSE_CODES,
        open_timeout: float = 10.0,
        welcome_timeout: float = 10.0,
        close_timeout: float = 2.0,
        max_size: int | None = 64 * 1024 * 1024,
        rng: random.Random | None = None,
    ) -> None:
        if codec not in _CODECS:
            raise ValueError(f"unknown codec {codec!r}: use 'json' or 'msgpack'")
        if since is not None and since < 0:
            raise ValueError("since must be >= 0")
        self.url = url
        self.codec: Codec = _CODECS[codec]
        self.name = name
        self.reconnect = reconnect
        self.backoff = backoff or Backoff()
        self.retry_close_codes = frozenset(retry_close_codes)
        self.open_timeout = open_timeout
        self.welcome_timeout = welcome_timeout
        self.close_timeout = close_timeout
        self.max_size = max_size
        self._rng = rng or random.Random()
        self._participant = participant or new_participant_id()
        #: hello.token: an operator token, or the server-issued anonymous identity.
        self._token = token
        self._anonymous = False  # whether _token is a server-issued anonymous identity
        self._epoch = epoch
        self._last_seq = since
        self._ws: ClientConnection | None = None
        self._joined = False  # welcome received on the current connection
        self._awaiting_snapshot = False
        self._held: list[RoomMessage] = []  # room frames received before the awaited snapshot
        self._pending: deque[ServerMessage] = deque()
        self._failures = 0  # consecutive failed (re)connect attempts
        self._closed = False
        self._nonce = 0
        self._welcome: Welcome | None = None
        #: Number of connections opened so far (1 after the first connect).
        self.connections = 0

    # ----------------------------------------------------------------- properties

    @property
    def participant(self) -> str:
        """This client's participant id (kept across reconnects)."""
        return self._participant

    @property
    def token(self) -> str | None:
        """The token sent in ``hello`` (an anonymous identity once the server issued one).

        Store it to keep the same identity in a later process.
        """
        return self._token

    @property
    def epoch(self) -> str | None:
        """The room epoch of the stream, once known."""
        return self._epoch

    @property
    def last_seq(self) -> int | None:
        """The ``seq`` of the last room frame yielded (or of the snapshot), once known."""
        return self._last_seq

    @property
    def welcome(self) -> Welcome | None:
        """The ``welcome`` of the current (or last) connection."""
        return self._welcome

    @property
    def connected(self) -> bool:
        """True while a connection is open and joined (``welcome`` received)."""
        return self._ws is not None and self._joined

    # ----------------------------------------------------------------- lifecycle

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def connect(self) -> None:
        """Open the first connection and send ``hello``; raise ``ConnectError`` on failure."""
        try:
            await self._open()
        except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
            raise ConnectError(f"cannot connect to {self.url}: {exc}") from exc

    async def aclose(self) -> None:
        """Close the connection; iteration ends."""
        self._closed = True
        ws, self._ws = self._ws, None
        self._joined = False
        if ws is not None:
            await ws.close()

    async def _open(self) -> None:
        ws = await connect(
            self.url,
            subprotocols=[Subprotocol(self.codec.subprotocol)],
            open_timeout=self.open_timeout,
            close_timeout=self.close_timeout,
            max_size=self.max_size,
        )
        self.connections += 1
        # Resume whenever a position is known (always after the first snapshot).
        hello = Hello(
            participant=self._participant,
            token=self._token,
            name=self.name,
            epoch=self._epoch if self._last_seq is not None else None,
            since=self._last_seq,
        )
        with contextlib.suppress(ConnectionClosed):
            # Closed at once (e.g. 4004 no such room): the next receive reports the
            # close code, and iteration decides whether it is fatal.
            await ws.send(self.codec.encode(hello), text=self.codec.is_text)
        self._ws = ws
        self._joined = False
        self._awaiting_snapshot = False
        self._held.clear()

    async def _drop(self) -> None:
        ws, self._ws = self._ws, None
        self._joined = False
        if ws is not None:
            with contextlib.suppress(TimeoutError, OSError):
                await asyncio.wait_for(ws.close(), self.close_timeout)

    async def _reconnect(self) -> None:
        """Reconnect with backoff until a connection opens; raise when attempts run out."""
        last: BaseException | None = None
        while not self._closed:
            limit = self.backoff.max_attempts
            if limit is not None and self._failures >= limit:
                raise ReconnectFailed(self._failures, last)
            delay = self.backoff.delay(self._failures, self._rng)
            self._failures += 1
            log.info("reconnecting in %.2fs (attempt %d)", delay, self._failures)
            await asyncio.sleep(delay)
            try:
                await self._open()
                return
            except InvalidStatus as exc:
                if exc.response.status_code < 500:
                    raise ConnectError(f"cannot connect to {self.url}: {exc}") from exc
                last = exc
            except (OSError, TimeoutError, InvalidHandshake, ConnectionClosed) as exc:
                last = exc

    # ----------------------------------------------------------------- iteration

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> ServerMessage:
        while True:
            if self._pending:
                return self._pending.popleft()
            if self._closed:
                raise StopAsyncIteration
            ws = self._ws
            if ws is None:
                await self._reconnect()
                continue
            try:
                if self._joined:
                    data = await ws.recv()
                else:
                    data = await asyncio.wait_for(ws.recv(), self.welcome_timeout)
            except ConnectionClosed as exc:
                self._connection_lost(exc)
                await self._drop()
                continue
            except TimeoutError:
                log.warning("no welcome within %.1fs", self.welcome_timeout)
                if not self.reconnect:
                    await self._drop()
                    raise FablecastClosed(1006, "no welcome") from None
                await self._drop()
                continue
            try:
                self._receive(data)
            except _StreamBroken:
                await self._drop()
                continue

    def _connection_lost(self, exc: ConnectionClosed) -> None:
        """Decide what a closed connection means: end, reconnect, or raise."""
        if self._closed:
            raise StopAsyncIteration
        code = exc.rcvd.code if exc.rcvd is not None else 1006
        reason = exc.rcvd.reason if exc.rcvd is not None else ""
        if code in _END_CLOSE_CODES:
            self._closed = True
            self._ws = None
            raise StopAsyncIteration
        if code in self.retry_close_codes and self.reconnect:
            log.info("connection closed (%d %s); will resume", code, reason)
            return
        if code == CloseCode.UNAUTHORIZED and self._anonymous and self.reconnect:
            # The server no longer accepts the identity it issued (expired, or its
            # keys changed): drop it and join once more without a token.
            log.info("anonymous identity refused (%s); joining with a new one", reason)
            self._token, self._anonymous = None, False
            return
        self._closed = True
        self._ws = None
        raise FablecastClosed(code, reason)

    def _decode(self, data: bytes | str) -> ServerMessage | None:
        try:
            return self.codec.decode_server(data)
        except ProtocolError as exc:
            # Forward compatibility: skip what we cannot decode, but keep seq accounting.
            try:
                if isinstance(data, str) or self.codec.is_text:
                    probe = _PROBE_JSON.decode(data)
                else:
                    probe = _PROBE_MSGPACK.decode(data)
            except msgspec.MsgspecError:
                log.warning("undecodable server message skipped: %s", exc.message)
                return None
            log.debug("skipped server message of type %r: %s", probe.type, exc.message)
            if probe.seq is not None and probe.epoch is not None:
                self._advance(probe.epoch, probe.seq)
            return None

    def _receive(self, data: bytes | str) -> None:
        msg = self._decode(data)
        if msg is None:
            return
        if isinstance(msg, Welcome):
            self._on_welcome(msg)
            self._pending.append(msg)
        elif isinstance(msg, Snapshot):
            self._epoch = msg.epoch
            self._last_seq = msg.seq
            self._awaiting_snapshot = False
            self._pending.append(msg)
            held, self._held = self._held, []
            for frame in held:
                self._room_frame(frame)
        elif isinstance(msg, ROOM_FRAME_TYPES):
            if self._awaiting_snapshot:
                self._held.append(msg)
            else:
                self._room_frame(msg)
        else:
            self._pending.append(msg)

    def _on_welcome(self, msg: Welcome) -> None:
        self._joined = True
        self._welcome = msg
        self._failures = 0
        if msg.participant:
            self._participant = msg.participant
        if msg.identity is not None:
            self._token, self._anonymous = msg.identity, True
        if msg.recovered:
            # The missed frames (last_seq + 1, ...) follow on this connection.
            self._epoch = msg.epoch
        else:
            self._awaiting_snapshot = True

    def _room_frame(self, frame: RoomMessage) -> None:
        if self._advance(frame.epoch, frame.seq):
            self._pending.append(frame)

    def _advance(self, epoch: str, seq: int) -> bool:
        """Account for room frame ``seq``: True if new, False if already seen; raise on a gap."""
        last = self._last_seq
        if self._epoch is not None and epoch != self._epoch:
            log.warning("epoch changed mid-stream (%s -> %s): resyncing", self._epoch, epoch)
            self._break(last + 1 if last is not None else 0, seq)
        if last is None:
            self._epoch = epoch
            self._last_seq = seq
            return True
        if seq <= last:
            return False
        if seq != last + 1:
            log.warning("room frame gap: expected seq %d, got %d: resuming", last + 1, seq)
            self._break(last + 1, seq)
        self._last_seq = seq
        return True

    def _break(self, expected: int, got: int) -> None:
        if not self.reconnect:
            self._closed = True
            raise SeqGapError(expected, got)
        raise _StreamBroken

    # ----------------------------------------------------------------- sending

    async def _send(self, message: msgspec.Struct) -> None:
        ws = self._ws
        if ws is None or not self._joined:
            raise NotConnectedError("not connected")
        try:
            await ws.send(self.codec.encode(message), text=self.codec.is_text)
        except ConnectionClosed as exc:
            raise NotConnectedError("connection closed") from exc

    async def vote(self, window: int, option: int) -> None:
        """Vote for ``option`` (0-based) in vote window ``window``; the server answers
        ``vote_ack`` or ``error``."""
        await self._send(Vote(window=window, option=option))

    async def react(
        self,
        reaction: Reaction | None = None,
        valence: float | None = None,
        arousal: float | None = None,
    ) -> None:
        """Send an emotion reaction and/or a continuous (valence, arousal) sample."""
        if reaction is None and valence is None and arousal is None:
            raise ValueError("react needs a reaction, a valence or an arousal")
        await self._send(React(reaction=reaction, valence=valence, arousal=arousal))

    async def ping(self) -> int:
        """Send ``ping``; returns its nonce (the ``pong`` arrives through iteration)."""
        self._nonce += 1
        await self._send(Ping(nonce=self._nonce))
        return self._nonce
