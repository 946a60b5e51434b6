"""Text that arrives in many small pieces (engine deltas), kept compact.

A beat's narration arrives a token or two at a time. Kept as a list of pieces,
each piece is a ``str`` object of its own: about 50 bytes of header per piece,
so a 4-character token costs ~60 bytes and a long beat about 15 times its
length. ``TextBuffer`` joins every ``chunk`` pieces into one string, so a beat
costs about its length; appends stay amortized O(1) and ``text()`` is O(n).
"""

from __future__ import annotations


class TextBuffer:
    """An append-only string built from pieces."""

    __slots__ = ("_chunk", "_chunks", "_tail")

    def __init__(self, chunk: int = 256) -> None:
        if chunk < 2:
            raise ValueError("chunk must be >= 2")
        self._chunk = chunk
        self._chunks: list[str] = []
        self._tail: list[str] = []

    def append(self, piece: str) -> None:
        """Add ``piece`` at the end."""
        tail = self._tail
        tail.append(piece)
        if len(tail) >= self._chunk:
            self._chunks.append("".join(tail))
            self._tail = []

    def text(self) -> str:
        """Everything appended so far, as one string."""
        return "".join(self._chunks + self._tail)

    def clear(self) -> None:
        """Forget everything."""
        self._chunks = []
        self._tail = []

    def __bool__(self) -> bool:
        return bool(self._chunks or self._tail)

    def __repr__(self) -> str:
        return f"TextBuffer({self.text()!r})"
