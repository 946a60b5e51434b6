"""A room's bounded history of stamped frames, for resume.

Bounded by frame count and by encoded bytes: an entry's size is its largest
encoding made when it was stamped (the codecs in use then; JSON and MessagePack
differ by about 20%). Frames keep their per-codec encodings so a replay costs no
re-encoding.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from fablecast.protocol.codec import JSON, MSGPACK, Codec
from fablecast.protocol.messages import RoomMessage


@dataclass(slots=True)
class Entry:
    """One stamped room frame, kept as its encodings (text codec, binary codec).

    Memory matters here: the history holds thousands of entries per room. So an
    entry keeps two slots rather than a dict by codec name, and once it is in
    the history it drops the decoded frame (``compact``): a replay to a codec
    nobody used when the frame was stamped decodes the other encoding again
    (rare, and lossless for protocol messages).
    """

    seq: int
    _frame: RoomMessage | None
    text: bytes | None = None
    binary: bytes | None = None
    size: int = 0

    @property
    def frame(self) -> RoomMessage:
        """The frame as a message (decoded again from an encoding once compacted)."""
        if self._frame is not None:
            return self._frame
        msg = JSON.decode_server(self.text) if self.text is not None else None
        if msg is None:
            assert self.binary is not None
            msg = MSGPACK.decode_server(self.binary)
        return msg  # type: ignore[return-value]

    def data(self, codec: Codec) -> bytes:
        """The frame in ``codec``'s encoding (encoded once, then cached)."""
        if codec.is_text:
            if self.text is None:
                self.text = codec.encode(self.frame)
            return self.text
        if self.binary is None:
            self.binary = codec.encode(self.frame)
        return self.binary

    def compact(self) -> None:
        """Drop the decoded frame when an encoding of it is kept."""
        if self.text is not None or self.binary is not None:
            self._frame = None

    @property
    def encoded(self) -> dict[str, bytes]:
        """The encodings made so far, by kind (``json`` / ``msgpack``)."""
        out = {}
        if self.text is not None:
            out["json"] = self.text
        if self.binary is not None:
            out["msgpack"] = self.binary
        return out


class History:
    """The last ``max_frames`` frames (and at most ``max_bytes``) of one room epoch."""

    def __init__(self, max_frames: int = 1024, max_bytes: int = 8 * 1024 * 1024) -> None:
        if max_frames < 1:
            raise ValueError("max_frames must be >= 1")
        self.max_frames = max_frames
        self.max_bytes = max_bytes
        self._entries: deque[Entry] = deque()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def bytes(self) -> int:
        """Encoded bytes held (the bound ``max_bytes`` applies to)."""
        return self._bytes

    @property
    def first_seq(self) -> int | None:
        """The oldest seq kept, or None when empty."""
        return self._entries[0].seq if self._entries else None

    def append(self, entry: Entry) -> None:
        """Keep ``entry`` (seq must follow the last one); drop the oldest past the bounds."""
        if self._entries and entry.seq != self._entries[-1].seq + 1:
            raise ValueError(f"seq {entry.seq} does not follow {self._entries[-1].seq}")
        entry.compact()
        self._entries.append(entry)
        self._bytes += entry.size
        while len(self._entries) > self.max_frames or (
            self._bytes > self.max_bytes and len(self._entries) > 1
        ):
            self._bytes -= self._entries.popleft().size

    def since(self, seq: int, last_seq: int) -> list[Entry] | None:
        """Every entry after ``seq`` up to ``last_seq``; None when some were already dropped."""
        if seq > last_seq:
            return None  # the client claims frames we never sent: resync
        if seq == last_seq:
            return []
        first = self.first_seq
        if first is None or seq + 1 < first:
            return None
        start = seq + 1 - first
        return [self._entries[i] for i in range(start, len(self._entries))]
