"""The node's local fan-out of one room: subscribers by codec, replies, slow clients.

``send(entries)`` writes a tick's stamped entries (``fablecast.server.stream``)
to every subscriber without awaiting any of them:

- Each entry is *framed* once per codec (``fablecast.server.wire``): every
  subscriber of a codec is handed the very same WebSocket frame bytes.
- Replies to one client (``vote_ack``, ``error``) queued since the last tick go
  out in the same write as the tick's frames: one ``writelines`` (one system
  call) per client per tick, whatever it receives.

A client's outbox is its transport's write buffer: the fan-out never queues
room frames per client itself, so a slow client costs memory only up to
``outbox_max_bytes``, checked every ``slow_check_s`` (so the bound can be
passed by at most that long's worth of frames before the client is closed
with 4008; the others see no delay).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

from fablecast.protocol.codec import Codec
from fablecast.server.history import Entry
from fablecast.server.metrics import Metrics
from fablecast.server.wire import ws_frame


class Subscriber(Protocol):
    """What the fan-out needs of a session."""

    codec: Codec

    @property
    def connection(self) -> object:
        """The websockets connection (the key this subscriber is stored under)."""
        ...

    def buffered_bytes(self) -> int:
        """Bytes written but not yet sent to this client."""
        ...

    def close_slow(self) -> None:
        """Close this client with 4008 (slow consumer), without awaiting."""
        ...

    def write(self, frames: list[bytes]) -> None:
        """Write its queued replies, then ``frames`` (WebSocket frames), without awaiting."""
        ...


class Fanout:
    """The connected clients of one room on this node."""

    def __init__(
        self,
        metrics: Metrics,
        *,
        outbox_max_bytes: int = 1024 * 1024,
        slow_check_s: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.outbox_max_bytes = outbox_max_bytes
        self.slow_check_s = slow_check_s
        self._next_slow_check = 0.0
        self._metrics = metrics
        self._clock = clock
        self._subs: dict[Codec, dict[object, Subscriber]] = {}
        self._replying: dict[object, Subscriber] = {}

    # ------------------------------------------------------------------ subscribers

    @property
    def subscriber_count(self) -> int:
        """Connected clients of this room."""
        return sum(len(s) for s in self._subs.values())

    def subscribers(self) -> list[Subscriber]:
        """All connected clients (a copy)."""
        return [s for group in self._subs.values() for s in group.values()]

    def codecs(self) -> list[Codec]:
        """The codecs at least one subscriber uses."""
        return [codec for codec, group in self._subs.items() if group]

    def attach(self, sub: Subscriber) -> None:
        """Add ``sub``: it receives every entry sent from now on.

        The caller sends welcome and the snapshot or missed frames first, with
        no await in between, so no frame can slip between them and live frames.
        """
        self._subs.setdefault(sub.codec, {})[sub.connection] = sub

    def detach(self, sub: Subscriber) -> None:
        """Remove ``sub`` (idempotent)."""
        group = self._subs.get(sub.codec)
        if group is not None:
            group.pop(sub.connection, None)
        self._replying.pop(sub.connection, None)

    def reply_queued(self, sub: Subscriber) -> None:
        """``sub`` has replies to send: write them at the next send even if no frame goes."""
        self._replying[sub.connection] = sub

    @property
    def has_replies(self) -> bool:
        """Whether some subscriber waits for its replies to be written."""
        return bool(self._replying)

    # ------------------------------------------------------------------ the tick

    def _drop_slow(self, now: float) -> None:
        # Polling every subscriber's buffer costs O(subscribers): do it every
        # slow_check_s, not on every tick.
        if now < self._next_slow_check:
            return
        self._next_slow_check = now + self.slow_check_s
        limit = self.outbox_max_bytes
        for group in self._subs.values():
            slow = [s for s in group.values() if s.buffered_bytes() > limit]
            for sub in slow:
                del group[sub.connection]
                self._replying.pop(sub.connection, None)
                sub.close_slow()
                self._metrics.slow_clients_dropped.inc()

    def send(self, entries: list[Entry]) -> None:
        """Write ``entries`` (and queued replies) to every subscriber, without awaiting."""
        if not entries:
            replying, self._replying = self._replying, {}
            for sub in replying.values():
                sub.write([])
            return
        self._drop_slow(self._clock())
        self._replying = {}  # every subscriber writes its replies with the frames below
        sent = 0
        for codec, group in self._subs.items():
            if not group:
                continue
            framed = wire_frames(entries, codec)  # once per codec: shared by the group
            for sub in list(group.values()):
                sub.write(framed)
            sent += len(group) * len(entries)
        if sent:
            self._metrics.frames_sent.inc(sent)


def wire_frames(entries: list[Entry], codec: Codec) -> list[bytes]:
    """``entries`` as WebSocket frames in ``codec``'s encoding, ready for the wire."""
    return [ws_frame(entry.data(codec), text=codec.is_text) for entry in entries]
