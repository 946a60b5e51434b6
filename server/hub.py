"""The fan-out hub of one room: stamp, coalesce, encode once per codec, keep history, send.

Everything a room broadcasts passes through ``RoomChannel``:

- ``publish`` queues a discrete frame; ``append_text`` merges narration text
  into the pending ``token`` frame of the tick; ``mark_dirty`` asks for a
  latest-value frame (tally, mood, presence) once per tick.
- ``flush`` (the node's tick, default every 50 ms) stamps pending frames with
  ``(epoch, seq)`` in order, appends them to the history, closes clients whose
  outbox is over its bound (4008) and writes each frame, encoded once per codec,
  to every other client without awaiting any of them.
- Each frame is also *framed* once per codec (``server.wire``): every
  subscriber of a codec is handed the very same WebSocket frame bytes.
- Replies to one client (``vote_ack``, ``error``) queued since the last tick go
  out in the same write as the tick's frames: one ``writelines`` (one system
  call) per client per tick, whatever it receives.

A client's outbox is its transport's write buffer: the hub never queues room
frames per client itself, so a slow client costs memory only up to
``outbox_max_bytes``, checked every ``slow_check_s`` (so the bound can be
passed by at most that long's worth of frames before the client is closed).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import msgspec

from fablecast.protocol.codec import MSGPACK, Codec
from fablecast.protocol.messages import RoomMessage, Token
from fablecast.server.history import Entry, History
from fablecast.server.metrics import Metrics
from fablecast.server.room.effects import StateKind
from fablecast.server.wire import ws_frame


class Subscriber(Protocol):
    """What the hub needs of a session."""

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


@dataclass(slots=True)
class _Text:
    beat: int
    parts: list[str]
    times: list[float] = field(default_factory=list)


class RoomChannel:
    """Fan-out state of one room: pending frames, seq, history, subscribers by codec."""

    def __init__(
        self,
        room: str,
        *,
        state: Callable[[StateKind], RoomMessage | None],
        metrics: Metrics,
        history: History | None = None,
        outbox_max_bytes: int = 1024 * 1024,
        slow_check_s: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
        epoch: str | None = None,
    ) -> None:
        self.room = room
        self.epoch = epoch or secrets.token_hex(4)
        self.seq = 0
        self.history = history if history is not None else History()
        self.outbox_max_bytes = outbox_max_bytes
        self.slow_check_s = slow_check_s
        self._next_slow_check = 0.0
        self._state = state
        self._metrics = metrics
        self._clock = clock
        self._pending: list[RoomMessage | _Text] = []
        self._dirty: dict[StateKind, None] = {}
        self._subs: dict[Codec, dict[object, Subscriber]] = {}
        self._replying: dict[object, Subscriber] = {}

    # ------------------------------------------------------------------ producers

    def publish(self, frame: RoomMessage) -> None:
        """Queue a discrete room frame for the next flush, after everything queued before it."""
        self._pending.append(frame)

    def append_text(self, beat: int, text: str, t: float | None = None) -> None:
        """Merge narration text into the pending token frame of ``beat``.

        ``t`` is when the engine yielded it (``clock`` time), for the latency histogram.
        """
        last = self._pending[-1] if self._pending else None
        if isinstance(last, _Text) and last.beat == beat:
            last.parts.append(text)
        else:
            last = _Text(beat, [text])
            self._pending.append(last)
        last.times.append(self._clock() if t is None else t)

    def mark_dirty(self, kind: StateKind) -> None:
        """Send the latest ``kind`` frame at the next flush (once, however often marked)."""
        self._dirty[kind] = None

    def reply_queued(self, sub: Subscriber) -> None:
        """``sub`` has replies to send: write them at the next flush even if no frame goes."""
        self._replying[sub.connection] = sub

    @property
    def has_pending(self) -> bool:
        """Whether the next flush has anything to send."""
        return bool(self._pending or self._dirty or self._replying)

    # ------------------------------------------------------------------ subscribers

    @property
    def subscriber_count(self) -> int:
        """Connected clients of this room."""
        return sum(len(s) for s in self._subs.values())

    def subscribers(self) -> list[Subscriber]:
        """All connected clients (a copy)."""
        return [s for group in self._subs.values() for s in group.values()]

    def attach(self, sub: Subscriber, *, epoch: str | None, since: int | None) -> bool | None:
        """Flush, then add ``sub``; replay missed frames when it resumes.

        Returns True when the missed frames were replayed (``recovered``), False
        when a resume was asked but cannot be served (the caller sends a
        snapshot), None when no resume was asked (the caller sends a snapshot).
        The caller must send welcome before and snapshot after, with no await in
        between, so no frame can slip between the snapshot and live frames.
        """
        self.flush()
        recovered: bool | None = None
        if since is not None:
            entries = self.missed(epoch, since)
            recovered = entries is not None
            if entries:
                sub.write(wire_frames(entries, sub.codec))
        self._subs.setdefault(sub.codec, {})[sub.connection] = sub
        return recovered

    def missed(self, epoch: str | None, since: int) -> list[Entry] | None:
        """The frames after ``since`` of ``epoch``; None when they cannot all be served.

        They cannot when they left the history, or when together they exceed a
        client's outbox bound: written at once, they would close the client as a
        slow consumer (4008) at the next check, and it would come back for the
        same frames. Such a client resyncs from a snapshot instead.
        """
        if epoch != self.epoch:
            return None
        entries = self.history.since(since, self.seq)
        if entries is not None and sum(e.size for e in entries) > self.outbox_max_bytes:
            return None
        return entries

    def detach(self, sub: Subscriber) -> None:
        """Remove ``sub`` (idempotent)."""
        group = self._subs.get(sub.codec)
        if group is not None:
            group.pop(sub.connection, None)
        self._replying.pop(sub.connection, None)

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

    def _write_replies(self) -> None:
        replying, self._replying = self._replying, {}
        for sub in replying.values():
            sub.write([])

    def flush(self) -> int:
        """Stamp and send everything pending; returns the number of room frames sent."""
        if not self._pending and not self._dirty:
            if self._replying:
                self._write_replies()
            return 0
        frames: list[RoomMessage] = []
        latencies: list[float] = []
        for item in self._pending:
            if isinstance(item, _Text):
                frames.append(Token(beat=item.beat, text="".join(item.parts)))
                latencies.extend(item.times)
            else:
                frames.append(item)
        self._pending = []
        for kind in self._dirty:
            frame = self._state(kind)
            if frame is not None:
                frames.append(frame)
        self._dirty = {}
        if not frames:
            self._write_replies()
            return 0

        # Stamp, encode once per codec in use and keep in history first, so seq and
        # history stay consistent whatever happens while writing to clients.
        codecs = [codec for codec, group in self._subs.items() if group] or [MSGPACK]
        entries: list[Entry] = []
        for frame in frames:
            self.seq += 1
            entry = Entry(self.seq, msgspec.structs.replace(frame, epoch=self.epoch, seq=self.seq))
            entry.size = max(len(entry.data(codec)) for codec in codecs)
            self.history.append(entry)
            entries.append(entry)

        now = self._clock()
        self._drop_slow(now)
        self._replying = {}  # every subscriber writes its replies with the frames below
        sent = 0
        for codec, group in self._subs.items():
            if not group:
                continue
            framed = wire_frames(entries, codec)  # once per codec: shared by the group
            for sub in list(group.values()):
                sub.write(framed)
            sent += len(group) * len(entries)

        m = self._metrics
        m.room_frames.inc(len(entries))
        if sent:
            m.frames_sent.inc(sent)
        for t in latencies:
            m.token_latency.observe(now - t)
        return len(entries)


def wire_frames(entries: list[Entry], codec: Codec) -> list[bytes]:
    """``entries`` as WebSocket frames in ``codec``'s encoding, ready for the wire."""
    return [ws_frame(entry.data(codec), text=codec.is_text) for entry in entries]
