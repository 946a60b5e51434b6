"""A room's stream: coalesce per tick, stamp ``(epoch, seq)``, keep history, tell what was missed.

Everything a room broadcasts enters here:

- ``publish`` queues a discrete frame; ``append_text`` merges narration text
  into the pending ``token`` frame of the tick; ``mark_dirty`` asks for a
  latest-value frame (tally, mood, presence) once per tick.
- ``flush`` (the node's tick, default every 50 ms) turns pending items into
  frames in order, appends the dirty latest-value frames, stamps each with
  ``(epoch, seq)``, encodes it once per codec in use and stores it in the
  history — in that order, so seq and history are consistent before anyone is
  written to. It returns the stamped entries; ``fablecast.server.fanout``
  writes them to the room's clients.
- ``missed`` is the one resume path: the frames after a client's last seq, or
  None when they cannot all be served (then the client resyncs from a snapshot).

The stream never touches a connection: a node with a broker (several nodes,
one room) or an event log (restore after a crash) plugs in here, around the
stamped entries.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import msgspec

from fablecast.protocol.codec import MSGPACK, Codec
from fablecast.protocol.messages import RoomMessage, Token
from fablecast.server.history import Entry, History
from fablecast.server.metrics import Metrics
from fablecast.server.room.effects import StateKind


@dataclass(slots=True)
class _Text:
    beat: int
    parts: list[str]
    times: list[float] = field(default_factory=list)


class RoomStream:
    """Pending frames, ``(epoch, seq)`` and history of one room."""

    def __init__(
        self,
        room: str,
        *,
        state: Callable[[StateKind], RoomMessage | None],
        metrics: Metrics,
        history: History | None = None,
        clock: Callable[[], float] = time.monotonic,
        epoch: str | None = None,
    ) -> None:
        self.room = room
        self.epoch = epoch or secrets.token_hex(4)
        self.seq = 0
        self.history = history if history is not None else History()
        self._state = state
        self._metrics = metrics
        self._clock = clock
        self._pending: list[RoomMessage | _Text] = []
        self._dirty: dict[StateKind, None] = {}

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

    @property
    def has_pending(self) -> bool:
        """Whether the next flush has frames to stamp."""
        return bool(self._pending or self._dirty)

    # ------------------------------------------------------------------ the tick

    def flush(self, codecs: Iterable[Codec] = ()) -> list[Entry]:
        """Stamp everything pending, in order; store and return the entries.

        ``codecs`` are those in use by the room's clients: each entry is encoded
        once per codec here (MessagePack when there is none, for the history's
        size accounting).
        """
        if not self._pending and not self._dirty:
            return []
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
            return []
        in_use = list(codecs) or [MSGPACK]
        entries: list[Entry] = []
        for frame in frames:
            self.seq += 1
            entry = Entry(self.seq, msgspec.structs.replace(frame, epoch=self.epoch, seq=self.seq))
            entry.size = max(len(entry.data(codec)) for codec in in_use)
            self.history.append(entry)
            entries.append(entry)
        now = self._clock()
        self._metrics.room_frames.inc(len(entries))
        for t in latencies:
            self._metrics.token_latency.observe(now - t)
        return entries

    # ------------------------------------------------------------------ resume

    def missed(self, epoch: str | None, since: int, max_bytes: int) -> list[Entry] | None:
        """The frames after ``since`` of ``epoch``; None when they cannot all be served.

        They cannot when the epoch is another one (the stream restarted), when
        they left the history, or when together they exceed ``max_bytes`` (a
        client's outbox bound): written at once, they would close the client as
        a slow consumer (4008) at the next check, and it would come back for
        the same frames. Such a client resyncs from a snapshot instead.
        """
        if epoch != self.epoch:
            return None
        entries = self.history.since(since, self.seq)
        if entries is not None and sum(e.size for e in entries) > max_bytes:
            return None
        return entries
