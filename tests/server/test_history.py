"""server/history.py: bounded resume history; ``since`` returns exactly the missed frames."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fablecast.protocol.codec import JSON, MSGPACK
from fablecast.protocol.messages import Presence
from fablecast.server.history import Entry, History


def entry(seq: int, size: int = 10) -> Entry:
    return Entry(seq, Presence(epoch="e", seq=seq, viewers=seq), size=size)


def fill(history: History, first: int, last: int, size: int = 10) -> None:
    for seq in range(first, last + 1):
        history.append(entry(seq, size))


def seqs(entries: list[Entry] | None) -> list[int] | None:
    return None if entries is None else [e.seq for e in entries]


def test_needs_at_least_one_frame() -> None:
    with pytest.raises(ValueError):
        History(max_frames=0)


def test_empty() -> None:
    h = History()
    assert len(h) == 0
    assert h.first_seq is None
    assert h.since(0, 0) == []
    assert h.since(0, 3) is None


def test_bounded_by_frames() -> None:
    h = History(max_frames=3)
    fill(h, 1, 5)
    assert len(h) == 3
    assert h.first_seq == 3


def test_bounded_by_bytes() -> None:
    h = History(max_frames=100, max_bytes=25)
    fill(h, 1, 5, size=10)
    assert len(h) == 2
    assert h.first_seq == 4
    h.append(entry(6, size=5))  # 10 + 10 + 5 = 25: fits
    assert (len(h), h.first_seq) == (3, 4)


def test_a_single_oversized_frame_is_kept() -> None:
    h = History(max_frames=10, max_bytes=5)
    h.append(entry(1, size=50))
    assert (len(h), h.first_seq) == (1, 1)
    h.append(entry(2, size=60))
    assert (len(h), h.first_seq) == (1, 2)


def test_seq_must_be_contiguous() -> None:
    h = History()
    h.append(entry(7))  # any start (a fresh node's history may start anywhere)
    with pytest.raises(ValueError, match="does not follow"):
        h.append(entry(9))
    with pytest.raises(ValueError):
        h.append(entry(7))
    with pytest.raises(ValueError):
        h.append(entry(6))
    h.append(entry(8))
    assert len(h) == 2


def test_since_returns_exactly_the_missed_entries() -> None:
    h = History()
    fill(h, 1, 10)
    assert seqs(h.since(4, 10)) == [5, 6, 7, 8, 9, 10]
    assert seqs(h.since(0, 10)) == list(range(1, 11))
    assert seqs(h.since(9, 10)) == [10]
    assert h.since(10, 10) == []  # up to date


def test_since_after_drops() -> None:
    h = History(max_frames=5)
    fill(h, 1, 10)  # keeps 6..10
    assert seqs(h.since(5, 10)) == [6, 7, 8, 9, 10]
    assert h.since(4, 10) is None  # frame 5 was dropped
    assert h.since(0, 10) is None


def test_since_future_seq_is_none() -> None:
    h = History()
    fill(h, 1, 3)
    assert h.since(4, 3) is None
    assert h.since(100, 3) is None


def test_entry_encodes_once_per_codec() -> None:
    calls: list[str] = []

    class Counting:
        def __init__(self, inner: object, name: str) -> None:
            self.inner, self.name = inner, name
            self.is_text = inner.is_text  # type: ignore[attr-defined]

        def encode(self, msg: object) -> bytes:
            calls.append(self.name)
            return self.inner.encode(msg)  # type: ignore[attr-defined, no-any-return]

    e = entry(1)
    j, mp = Counting(JSON, "json"), Counting(MSGPACK, "msgpack")
    assert e.data(j) == JSON.encode(e.frame)  # type: ignore[arg-type]
    assert e.data(j) == JSON.encode(e.frame)  # type: ignore[arg-type]
    assert e.data(mp) == MSGPACK.encode(e.frame)  # type: ignore[arg-type]
    assert calls == ["json", "msgpack"]
    assert set(e.encoded) == {"json", "msgpack"}


@settings(max_examples=200, deadline=None)
@given(
    max_frames=st.integers(1, 20),
    first=st.integers(0, 5),
    n=st.integers(1, 40),
    since=st.integers(0, 60),
)
def test_since_property(max_frames: int, first: int, n: int, since: int) -> None:
    h = History(max_frames=max_frames)
    last = first + n - 1
    fill(h, first, last)
    kept_from = max(first, last - max_frames + 1)
    got = h.since(since, last)
    if since > last:
        assert got is None
    elif since == last:
        assert got == []
    elif since + 1 < kept_from:
        assert got is None
    else:
        assert seqs(got) == list(range(since + 1, last + 1))


def test_bytes_is_what_the_bound_applies_to() -> None:
    h = History(max_frames=10, max_bytes=250)
    for seq in range(1, 5):
        e = Entry(seq, Presence(viewers=seq))
        e.size = 100
        h.append(e)
    assert len(h) == 2 and h.bytes == 200
