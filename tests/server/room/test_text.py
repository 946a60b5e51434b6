"""server/room/text.py TextBuffer: pieces in, the same text out, compacted as it grows."""

from __future__ import annotations

import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fablecast.server.room.text import TextBuffer


@given(st.lists(st.text(max_size=8), max_size=600), st.integers(2, 64))
def test_text_is_the_concatenation(pieces: list[str], chunk: int) -> None:
    buf = TextBuffer(chunk)
    for piece in pieces:
        buf.append(piece)
    assert buf.text() == "".join(pieces)
    assert bool(buf) == bool(pieces)


def test_clear_and_reuse() -> None:
    buf = TextBuffer(2)
    for piece in "abcde":
        buf.append(piece)
    buf.clear()
    assert buf.text() == "" and not buf
    buf.append("x")
    assert buf.text() == "x" and "x" in repr(buf)


def test_rejects_a_chunk_below_two() -> None:
    with pytest.raises(ValueError, match="chunk"):
        TextBuffer(1)


def test_a_long_beat_costs_about_its_length() -> None:
    pieces = [f"w{i:03d} " for i in range(4096)]  # 5-character tokens
    buf = TextBuffer()
    for piece in pieces:
        buf.append(piece)
    held = sys.getsizeof(buf._chunks) + sum(sys.getsizeof(c) for c in buf._chunks + buf._tail)
    as_list = sys.getsizeof(pieces) + sum(sys.getsizeof(p) for p in pieces)
    assert held < 1.2 * len(buf.text()) + 4096
    assert held * 5 < as_list
