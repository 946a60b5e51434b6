"""A room's tick, stream then fan-out: stamp, coalesce, encode once per codec, slow clients.

``Channel`` below is the room's tick as ``RoomRunner.flush`` does it
(``RoomStream.flush`` into ``Fanout.send``) plus the resume path of
``ws.Admission.join`` (``RoomStream.missed``, then ``Fanout.attach``), without
welcome and snapshot.

Fake subscribers record every ``write`` (one per flush per subscriber: its
replies and the tick's frames), so each sees, in order, every frame written to
it, replays included.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from fablecast.protocol import messages as m
from fablecast.protocol.codec import JSON, MSGPACK, Codec
from fablecast.server.fanout import Fanout, Subscriber, wire_frames
from fablecast.server.history import Entry, History
from fablecast.server.metrics import Metrics
from fablecast.server.room.effects import StateKind
from fablecast.server.stream import RoomStream
from tests.support import unframe

WRITES: list[tuple[Any, list[bytes]]] = []


class Channel:
    """A ``RoomStream`` flushed into a ``Fanout``, as a room's tick and join use them."""

    def __init__(
        self,
        room: str,
        *,
        state: Callable[[StateKind], Any],
        metrics: Metrics,
        history: History | None = None,
        outbox_max_bytes: int = 1024 * 1024,
        slow_check_s: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
        epoch: str | None = None,
    ) -> None:
        self.stream = RoomStream(
            room, state=state, metrics=metrics, history=history, clock=clock, epoch=epoch
        )
        self.fanout = Fanout(
            metrics, outbox_max_bytes=outbox_max_bytes, slow_check_s=slow_check_s, clock=clock
        )
        self.publish = self.stream.publish
        self.append_text = self.stream.append_text
        self.mark_dirty = self.stream.mark_dirty
        self.detach = self.fanout.detach
        self.reply_queued = self.fanout.reply_queued
        self.subscribers = self.fanout.subscribers

    @property
    def epoch(self) -> str:
        return self.stream.epoch

    @property
    def seq(self) -> int:
        return self.stream.seq

    @property
    def history(self) -> History:
        return self.stream.history

    @property
    def subscriber_count(self) -> int:
        return self.fanout.subscriber_count

    @property
    def has_pending(self) -> bool:
        return self.stream.has_pending or self.fanout.has_replies

    def flush(self) -> int:
        entries = self.stream.flush(self.fanout.codecs())
        self.fanout.send(entries)
        return len(entries)

    def missed(self, epoch: str | None, since: int) -> list[Entry] | None:
        return self.stream.missed(epoch, since, self.fanout.outbox_max_bytes)

    def attach(self, sub: Subscriber, *, epoch: str | None, since: int | None) -> bool | None:
        self.flush()
        recovered = None
        if since is not None:
            entries = self.missed(epoch, since)
            recovered = entries is not None
            if entries:
                sub.write(wire_frames(entries, sub.codec))
        self.fanout.attach(sub)
        return recovered


class FakeConn:
    def __init__(self) -> None:
        self.frames: list[tuple[bytes, bool]] = []


class FakeSub:
    def __init__(self, codec: Any, buffered: int = 0) -> None:
        self.codec = codec
        self.connection = FakeConn()
        self.buffered = buffered
        self.closed_slow = 0

    def buffered_bytes(self) -> int:
        return self.buffered

    def close_slow(self) -> None:
        self.closed_slow += 1

    def write(self, frames: list[bytes]) -> None:
        WRITES.append((self, list(frames)))
        self.connection.frames.extend(unframe(f) for f in frames)

    def received(self) -> list[Any]:
        return [JSON.decode_server(d) if t else MSGPACK.decode_server(d) for d, t in self.frames]

    @property
    def frames(self) -> list[tuple[bytes, bool]]:
        return self.connection.frames


class CountingCodec:
    """Wraps a Codec and counts encode calls."""

    def __init__(self, inner: Codec) -> None:
        self.inner = inner
        self.name = inner.name
        self.is_text = inner.is_text
        self.calls = 0

    def encode(self, message: Any) -> bytes:
        self.calls += 1
        return self.inner.encode(message)


class Broadcasts:
    """Every write of every fake subscriber, in order."""

    @property
    def calls(self) -> list[tuple[Any, list[bytes]]]:
        return WRITES


class Clock:
    def __init__(self, t: float = 100.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def sent() -> Broadcasts:
    WRITES.clear()
    return Broadcasts()


class State:
    """The room's latest-value frames, counting how often each kind is asked for."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {
            "tally": m.Tally(window=1, counts=[1, 2], voters=3),
            "mood": m.Mood(valence=0.1, arousal=0.2, intensity=1.0, reactions={}),
            "presence": m.Presence(viewers=4),
        }
        self.asked: list[str] = []

    def __call__(self, kind: str) -> Any:
        self.asked.append(kind)
        return self.values[kind]


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
def state() -> State:
    return State()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def ch(sent: Broadcasts, state: State, metrics: Metrics, clock: Clock) -> Channel:
    return Channel("demo", state=state, metrics=metrics, clock=clock, epoch="ep0")


def sample(metrics: Metrics, name: str) -> float:
    value = metrics.registry.get_sample_value(name)
    return 0.0 if value is None else value


def history_frames(ch: Channel) -> list[Any]:
    return [e.frame for e in ch.history.since(0, ch.seq) or []]


# --------------------------------------------------------------------------- coalescing


def test_text_is_coalesced_into_one_token_per_tick(ch: Channel) -> None:
    sub = FakeSub(JSON)
    ch.attach(sub, epoch=None, since=None)
    for part in ("Once ", "upon ", "a time"):
        ch.append_text(1, part)
    assert ch.flush() == 1
    assert sub.received() == [m.Token(epoch="ep0", seq=1, beat=1, text="Once upon a time")]


def test_text_of_different_beats_is_not_merged(ch: Channel) -> None:
    sub = FakeSub(JSON)
    ch.attach(sub, epoch=None, since=None)
    ch.append_text(1, "end of one. ")
    ch.append_text(2, "start of two")
    ch.append_text(2, ", more")
    ch.flush()
    assert [(f.beat, f.text) for f in sub.received()] == [
        (1, "end of one. "),
        (2, "start of two, more"),
    ]


def test_discrete_frames_keep_their_order_relative_to_text(ch: Channel) -> None:
    sub = FakeSub(MSGPACK)
    ch.attach(sub, epoch=None, since=None)
    ch.append_text(1, "a")
    ch.append_text(1, "b")
    ch.publish(m.BeatEnd(beat=1, text="ab"))
    ch.append_text(1, "c")  # after the discrete frame: a new token frame
    ch.publish(m.BeatStart(beat=2))
    ch.append_text(2, "d")
    ch.flush()
    got = sub.received()
    assert [type(f).__name__ for f in got] == ["Token", "BeatEnd", "Token", "BeatStart", "Token"]
    assert [getattr(f, "text", None) for f in got] == ["ab", "ab", "c", None, "d"]
    assert [f.seq for f in got] == [1, 2, 3, 4, 5]


def test_dirty_state_is_sent_once_at_the_end(ch: Channel, state: State) -> None:
    sub = FakeSub(JSON)
    ch.attach(sub, epoch=None, since=None)
    ch.mark_dirty("tally")
    ch.mark_dirty("presence")
    ch.publish(m.Phase(phase="voting", beat=1))
    ch.mark_dirty("tally")
    ch.append_text(1, "x")
    ch.mark_dirty("presence")
    assert ch.has_pending
    ch.flush()
    assert [type(f).__name__ for f in sub.received()] == ["Phase", "Token", "Tally", "Presence"]
    assert state.asked == ["tally", "presence"]
    assert not ch.has_pending
    assert ch.flush() == 0
    assert state.asked == ["tally", "presence"]


def test_dirty_state_is_the_latest_value_at_flush(ch: Channel, state: State) -> None:
    sub = FakeSub(JSON)
    ch.attach(sub, epoch=None, since=None)
    ch.mark_dirty("presence")
    state.values["presence"] = m.Presence(viewers=99)
    ch.flush()
    assert sub.received() == [m.Presence(epoch="ep0", seq=1, viewers=99)]


def test_dirty_state_without_a_value_consumes_no_seq(ch: Channel, state: State) -> None:
    state.values["tally"] = None
    ch.mark_dirty("tally")
    assert ch.flush() == 0
    assert ch.seq == 0
    ch.mark_dirty("tally")
    ch.mark_dirty("mood")
    assert ch.flush() == 1
    assert ch.seq == 1


# --------------------------------------------------------------------------- stamping


def test_seq_is_contiguous_across_flushes(ch: Channel) -> None:
    sub = FakeSub(JSON)
    ch.attach(sub, epoch=None, since=None)
    assert ch.flush() == 0  # nothing pending: no seq used
    ch.publish(m.BeatStart(beat=1))
    ch.append_text(1, "a")
    assert ch.flush() == 2
    ch.mark_dirty("mood")
    assert ch.flush() == 1
    ch.publish(m.BeatEnd(beat=1, text="a"))
    ch.publish(m.Phase(phase="voting", beat=1))
    ch.flush()
    got = sub.received()
    assert [f.seq for f in got] == [1, 2, 3, 4, 5]
    assert {f.epoch for f in got} == {"ep0"}
    assert ch.seq == 5


def test_published_frames_are_not_mutated(ch: Channel) -> None:
    frame = m.Presence(viewers=1)
    ch.publish(frame)
    ch.flush()
    assert (frame.epoch, frame.seq) == ("", 0)


def test_random_epoch_by_default(sent: Broadcasts, state: State, metrics: Metrics) -> None:
    a = Channel("a", state=state, metrics=metrics)
    b = Channel("b", state=state, metrics=metrics)
    assert a.epoch != b.epoch
    assert len(a.epoch) == 8


def test_history_gets_every_stamped_frame(ch: Channel) -> None:
    ch.publish(m.BeatStart(beat=1))  # nobody listening: still kept
    ch.flush()
    sub = FakeSub(JSON)
    ch.attach(sub, epoch=None, since=None)
    ch.append_text(1, "x")
    ch.mark_dirty("presence")
    ch.flush()
    frames = history_frames(ch)
    assert [f.seq for f in frames] == [1, 2, 3]
    assert [type(f).__name__ for f in frames] == ["BeatStart", "Token", "Presence"]
    assert all(f.epoch == "ep0" for f in frames)
    assert all(e.size > 0 for e in ch.history.since(0, ch.seq) or [])


def test_history_bounds_apply(sent: Broadcasts, state: State, metrics: Metrics) -> None:
    ch = Channel("r", state=state, metrics=metrics, history=History(max_frames=3))
    for n in range(5):
        ch.publish(m.Presence(viewers=n))
        ch.flush()
    assert len(ch.history) == 3
    assert ch.history.first_seq == 3


def test_history_entry_size_is_its_largest_encoding(ch: Channel) -> None:
    ch.attach(FakeSub(JSON), epoch=None, since=None)
    ch.attach(FakeSub(MSGPACK), epoch=None, since=None)
    frame = m.Token(beat=1, text="some narration text " * 5)
    ch.publish(frame)
    ch.flush()
    (entry,) = ch.history.since(0, ch.seq) or []
    sizes = (len(JSON.encode(entry.frame)), len(MSGPACK.encode(entry.frame)))
    assert entry.size == max(sizes) == sizes[0]


# --------------------------------------------------------------------------- fan-out


def test_encode_once_per_codec(ch: Channel, sent: Broadcasts, metrics: Metrics) -> None:
    jc, mc = CountingCodec(JSON), CountingCodec(MSGPACK)
    jsubs = [FakeSub(jc) for _ in range(3)]
    msubs = [FakeSub(mc) for _ in range(2)]
    for sub in jsubs + msubs:
        ch.attach(sub, epoch=None, since=None)
    assert ch.subscriber_count == 5
    ch.publish(m.BeatStart(beat=1))
    ch.append_text(1, "a")
    ch.publish(m.BeatEnd(beat=1, text="a"))
    ch.mark_dirty("tally")
    assert ch.flush() == 4
    assert (jc.calls, mc.calls) == (4, 4)
    # One write per subscriber per flush, carrying all four frames; the frames of
    # one codec are the same bytes objects for every subscriber (encoded once).
    assert [w[0] for w in sent.calls] == jsubs + msubs
    assert all(len(datas) == 4 for _sub, datas in sent.calls)
    for group in (jsubs, msubs):
        first = next(d for s, d in sent.calls if s is group[0])
        for s, datas in sent.calls:
            if s in group:
                assert all(a is b for a, b in zip(datas, first, strict=True))
    for sub in jsubs + msubs:
        assert [f.seq for f in sub.received()] == [1, 2, 3, 4]
        assert all(is_text == sub.codec.is_text for _d, is_text in sub.frames)
    assert sample(metrics, "fablecast_room_frames_total") == 4
    assert sample(metrics, "fablecast_frames_sent_total") == 20


def test_no_subscribers_still_stamps(ch: Channel, sent: Broadcasts, metrics: Metrics) -> None:
    ch.publish(m.Presence(viewers=0))
    assert ch.flush() == 1
    assert sent.calls == []
    assert sample(metrics, "fablecast_room_frames_total") == 1
    assert sample(metrics, "fablecast_frames_sent_total") == 0


def test_slow_subscriber_is_dropped_and_others_still_receive(
    sent: Broadcasts, state: State, metrics: Metrics
) -> None:
    ch = Channel("r", state=state, metrics=metrics, outbox_max_bytes=1000, epoch="e")
    fast_j, fast_m = FakeSub(JSON, buffered=1000), FakeSub(MSGPACK)  # at the bound: kept
    slow_j, slow_m = FakeSub(JSON, buffered=1001), FakeSub(MSGPACK, buffered=10**6)
    for sub in (fast_j, slow_j, fast_m, slow_m):
        ch.attach(sub, epoch=None, since=None)
    ch.publish(m.BeatStart(beat=1))
    ch.append_text(1, "text")
    ch.flush()
    assert (slow_j.closed_slow, slow_m.closed_slow) == (1, 1)
    assert (fast_j.closed_slow, fast_m.closed_slow) == (0, 0)
    assert slow_j.frames == [] and slow_m.frames == []
    assert [f.seq for f in fast_j.received()] == [1, 2]
    assert [f.seq for f in fast_m.received()] == [1, 2]
    assert ch.subscriber_count == 2
    assert set(map(id, ch.subscribers())) == {id(fast_j), id(fast_m)}
    assert sample(metrics, "fablecast_slow_clients_dropped_total") == 2
    # once dropped, never closed again
    ch.publish(m.Presence(viewers=1))
    ch.flush()
    assert slow_j.closed_slow == 1
    assert [f.seq for f in fast_j.received()] == [1, 2, 3]


def test_token_latency_is_observed(ch: Channel, clock: Clock, metrics: Metrics) -> None:
    ch.append_text(1, "a", t=99.0)
    ch.append_text(1, "b")  # at clock time 100
    clock.t = 100.5
    ch.flush()
    assert sample(metrics, "fablecast_token_latency_seconds_count") == 2
    assert sample(metrics, "fablecast_token_latency_seconds_sum") == pytest.approx(2.0)


# --------------------------------------------------------------------------- attach / detach


def _publish_n(ch: Channel, n: int) -> None:
    for i in range(n):
        ch.publish(m.Presence(viewers=i))
        ch.flush()


def test_attach_flushes_first_so_pending_frames_are_not_live(ch: Channel) -> None:
    ch.publish(m.BeatStart(beat=1))
    sub = FakeSub(JSON)
    assert ch.attach(sub, epoch=None, since=None) is None
    assert sub.frames == []
    assert ch.seq == 1


def test_attach_with_resume_replays_exactly_the_missed_frames(ch: Channel) -> None:
    _publish_n(ch, 6)
    sub = FakeSub(MSGPACK)
    assert ch.attach(sub, epoch="ep0", since=3) is True
    assert [f.seq for f in sub.received()] == [4, 5, 6]
    assert all(not is_text for _d, is_text in sub.frames)
    ch.publish(m.BeatStart(beat=1))
    ch.flush()
    assert [f.seq for f in sub.received()] == [4, 5, 6, 7]


def test_attach_replays_pending_frames_too(ch: Channel) -> None:
    _publish_n(ch, 2)
    ch.append_text(1, "pending")
    sub = FakeSub(JSON)
    assert ch.attach(sub, epoch="ep0", since=1) is True
    got = sub.received()
    assert [f.seq for f in got] == [2, 3]
    assert got[-1].text == "pending"


def test_attach_up_to_date_is_recovered_with_nothing_to_replay(ch: Channel) -> None:
    _publish_n(ch, 3)
    sub = FakeSub(JSON)
    assert ch.attach(sub, epoch="ep0", since=3) is True
    assert sub.frames == []


@pytest.mark.parametrize(
    ("epoch", "since"),
    [("other", 2), (None, 2), ("ep0", 99), ("ep0", 0)],
    ids=["wrong-epoch", "no-epoch", "future", "dropped"],
)
def test_attach_resume_that_cannot_be_served(
    sent: Broadcasts, state: State, metrics: Metrics, epoch: str | None, since: int
) -> None:
    ch = Channel("r", state=state, metrics=metrics, history=History(max_frames=3), epoch="ep0")
    _publish_n(ch, 6)  # history keeps 4..6
    sub = FakeSub(JSON)
    assert ch.attach(sub, epoch=epoch, since=since) is False
    assert sub.frames == []
    assert ch.subscriber_count == 1  # attached anyway: the caller sends a snapshot


def test_a_replay_larger_than_the_outbox_bound_is_a_resync(
    sent: Broadcasts, state: State, metrics: Metrics
) -> None:
    ch = Channel("r", state=state, metrics=metrics, epoch="ep0", outbox_max_bytes=200)
    for i in range(6):
        ch.publish(m.BeatEnd(beat=i, text="x" * 60))  # ~100 bytes encoded each
        ch.flush()
    assert ch.missed("ep0", 5) is not None  # one frame fits
    assert ch.missed("ep0", 0) is None  # six would close the client as slow at once
    sub = FakeSub(JSON)
    assert ch.attach(sub, epoch="ep0", since=0) is False
    assert sub.frames == []


def test_replay_reuses_cached_encodings(ch: Channel) -> None:
    jc = CountingCodec(JSON)
    live = FakeSub(jc)
    ch.attach(live, epoch=None, since=None)
    _publish_n(ch, 3)
    assert jc.calls == 3
    late = FakeSub(jc)
    ch.attach(late, epoch="ep0", since=0)
    assert jc.calls == 3
    assert late.frames == live.frames


def test_detach_is_idempotent(ch: Channel) -> None:
    a, b = FakeSub(JSON), FakeSub(MSGPACK)
    ch.attach(a, epoch=None, since=None)
    ch.attach(b, epoch=None, since=None)
    ch.detach(a)
    ch.detach(a)
    ch.detach(FakeSub(JSON))  # never attached
    ch.detach(FakeSub(CountingCodec(JSON)))  # a codec with no group
    assert ch.subscriber_count == 1
    ch.publish(m.Presence(viewers=1))
    ch.flush()
    assert a.frames == []
    assert len(b.frames) == 1


def test_same_connection_attached_twice_is_one_subscriber(ch: Channel) -> None:
    a = FakeSub(JSON)
    ch.attach(a, epoch=None, since=None)
    ch.attach(a, epoch=None, since=None)
    assert ch.subscriber_count == 1


def test_replies_go_out_with_the_next_flush(ch: Channel, sent: Broadcasts) -> None:
    sub = FakeSub(JSON)
    ch.attach(sub, epoch=None, since=None)
    # A session queues its reply and tells the channel; the flush writes it even
    # when no room frame is pending, once.
    ch.reply_queued(sub)
    assert ch.has_pending
    assert ch.flush() == 0
    assert [w[0] for w in sent.calls] == [sub]
    assert not ch.has_pending
    ch.flush()
    assert len(sent.calls) == 1


def test_slow_check_runs_at_most_every_slow_check_s(
    sent: Broadcasts, state: State, metrics: Metrics, clock: Clock
) -> None:
    ch = Channel(
        "demo", state=state, metrics=metrics, clock=clock, outbox_max_bytes=10, slow_check_s=0.1
    )
    sub = FakeSub(JSON)
    ch.attach(sub, epoch=None, since=None)
    ch.publish(m.Presence(viewers=1))
    ch.flush()  # checked now: not slow
    sub.buffered = 11
    clock.t += 0.05
    ch.publish(m.Presence(viewers=1))
    ch.flush()  # too soon to check again: still written
    assert sub.closed_slow == 0 and len(sub.frames) == 2
    clock.t += 0.06
    ch.publish(m.Presence(viewers=1))
    ch.flush()
    assert sub.closed_slow == 1 and len(sub.frames) == 2
