"""Property-based fuzzing of every client message type against a real node.

Hypothesis builds frames of each client type (``hello``, ``vote``, ``react``,
``ping``) with fields of any JSON/MessagePack shape, unknown types, random
bytes and text, frames of the other encoding and deep nesting, and sends them
before and after ``hello``. Each frame the codec refuses gets an ``error``
with the code the codec gives; each valid one gets its documented answer; the
connection is never closed with 1011 and nothing is logged with a traceback.
Meanwhile a witness client sees contiguous ``seq``, and the process's memory
returns near its baseline afterwards (both printed).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import msgspec
import psutil
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from fablecast.inference.backends.scripted import ScriptedEngine
from fablecast.protocol import messages as m
from fablecast.protocol.codec import JSON, MSGPACK, Codec
from fablecast.protocol.errors import ProtocolError
from fablecast.server.config import Config, EngineConfig, RoomConfig, ServerConfig
from fablecast.server.node import Node
from tests.integration.ws_harness import FAST_ROOM
from tests.support import scaled

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FIELDS = {
    "hello": ["participant", "name", "epoch", "since", "token"],
    "vote": ["window", "option"],
    "react": ["reaction", "valence", "arousal"],
    "ping": ["nonce"],
}
#: Answers of a well-formed vote: an ack or the room's refusal (which depends on timing).
VOTE_CODES = {"not_in_phase", "window_closed", "unknown_option", "rejected"}

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=70)
    | st.sampled_from(["joy", "fear", "anger", "", "p-1", "5f2c9a1e"])
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)


@st.composite
def message(draw: st.DrawFn) -> dict[str, Any]:
    """A message of a known type with any subset of its fields, of any value."""
    kind = draw(st.sampled_from(sorted(FIELDS)))
    fields = draw(st.dictionaries(st.sampled_from(FIELDS[kind]), values, max_size=3))
    extra = draw(st.dictionaries(st.text(max_size=6), values, max_size=2))
    return {**extra, **fields, "type": kind}


def _nested(depth: int) -> object:
    value: object = []
    for _ in range(depth):
        value = [value]
    return value


@st.composite
def frame(draw: st.DrawFn, codec: Codec) -> bytes | str:
    """One frame for a connection speaking ``codec``."""
    how = draw(st.sampled_from(["message", "message", "message", "type", "raw", "other", "deep"]))
    if how == "raw":
        return draw(st.text(max_size=200)) if codec.is_text else draw(st.binary(max_size=200))
    if how == "other":  # the other encoding's frame type
        return draw(st.binary(max_size=50)) if codec.is_text else draw(st.text(max_size=50))
    if how == "type":
        obj: dict[str, Any] = {"type": draw(values)}
    elif how == "deep":
        obj = {"type": "vote", "window": 1, "option": 0, "x": _nested(draw(st.integers(28, 400)))}
    else:
        obj = draw(message())
    if codec.is_text:
        return msgspec.json.encode(obj).decode()
    return msgspec.msgpack.encode(obj)


def _expected(codec: Codec, data: bytes | str, joined: bool) -> str | None:
    """What the server must answer: ``error:<code>``, ``vote``, ``pong``, ``welcome``, or None."""
    try:
        msg = codec.decode_client(data)
    except ProtocolError as exc:
        return f"error:{exc.code.value}"
    if not joined:
        return "welcome" if isinstance(msg, m.Hello) else "error:not_joined"
    match msg:
        case m.Hello():
            return "error:already_joined"
        case m.Vote():
            return "vote"
        case m.Ping():
            return "pong"
        case m.React(reaction=None, valence=None, arousal=None):
            return "error:invalid_message"
        case _:
            return None  # a reaction: applied, no answer


def _answer(msg: m.ServerMessage) -> str | None:
    match msg:
        case m.Error(code=code) if code.value in VOTE_CODES:
            return "vote"
        case m.Error(code=code):
            return f"error:{code.value}"
        case m.VoteAck():
            return "vote"
        case m.Pong():
            return "pong"
        case m.Welcome():
            return "welcome"
    return None  # snapshots and room frames


class Witness:
    """A viewer on its own thread that checks seq stays contiguous."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.ws.send('{"type":"hello"}')
        self.seqs: list[int] = []
        self.frames = 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            for data in self.ws:
                msg = JSON.decode_server(data)
                if isinstance(msg, m.Welcome | m.Snapshot):
                    self.seqs.append(msg.seq)
                elif isinstance(msg, m.ROOM_FRAME_TYPES):
                    self.seqs.append(msg.seq)
                    self.frames += 1
        except ConnectionClosed:
            pass

    def gaps(self) -> list[tuple[int, int]]:
        return [(a, b) for a, b in zip(self.seqs[1:], self.seqs[2:], strict=False) if b != a + 1]

    def close(self) -> None:
        self.ws.close()
        self.thread.join(5)


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[Node, Witness]]:
    config = Config(
        server=ServerConfig(
            port=0,
            tick_ms=20,
            address_messages_per_s=100_000.0,  # the fuzzer is one address, and fast
            address_message_burst=100_000,
            anonymous_votes_per_address=100_000,
        ),
        engine=EngineConfig(kind="scripted", stall_timeout_s=0.5),
        rooms=[RoomConfig(name="demo", **{**FAST_ROOM, "vote_s": 0.5})],
    )
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    node = Node(config, engine=ScriptedEngine(tokens_per_s=400, first_token_s=0.01))
    asyncio.run_coroutine_threadsafe(node.start(), loop).result(10)
    url = f"ws://127.0.0.1:{node.port}/rooms/demo"
    with connect(url, subprotocols=["fablecast.v1.json"]) as ws:  # type: ignore[list-item]
        witness = Witness(ws)
        yield node, witness
        witness.close()
    asyncio.run_coroutine_threadsafe(node.stop(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)


def _exchange(node: Node, codec: Codec, frames: list[bytes | str], joined: bool) -> None:
    url = f"ws://127.0.0.1:{node.port}/rooms/demo"
    with connect(url, subprotocols=[codec.subprotocol]) as ws:  # type: ignore[list-item]
        if joined:
            ws.send(codec.encode(m.Hello()).decode() if codec.is_text else codec.encode(m.Hello()))
        expected = []
        for data in frames:
            if not joined and _is_hello(codec, data):
                continue  # before hello, a hello would join: not what this case fuzzes
            expected.append(_expected(codec, data, joined))
            ws.send(data)
        want = sorted(e for e in expected if e is not None)
        if joined:
            want = sorted([*want, "welcome"])
        got: list[str] = []
        deadline = time.monotonic() + scaled(5)
        while len(got) < len(want) and time.monotonic() < deadline:
            answer = _answer(codec.decode_server(ws.recv(timeout=scaled(5))))
            if answer is not None:
                got.append(answer)
        assert sorted(got) == want, (frames, expected)
    assert ws.close_code in (1000, None), ws.close_code


def _is_hello(codec: Codec, data: bytes | str) -> bool:
    try:
        return isinstance(codec.decode_client(data), m.Hello)
    except ProtocolError:
        return False


@st.composite
def case(draw: st.DrawFn) -> tuple[Codec, list[bytes | str]]:
    codec = draw(st.sampled_from([JSON, MSGPACK]))
    return codec, draw(st.lists(frame(codec), min_size=1, max_size=5))


@settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
@given(case=case(), joined=st.booleans())
def test_every_malformed_frame_gets_its_error(
    served: tuple[Node, Witness], case: tuple[Codec, list[bytes | str]], joined: bool
) -> None:
    node, _ = served
    codec, frames = case
    _exchange(node, codec, frames, joined)


def test_witness_seq_contiguous_and_memory_back_near_baseline(
    served: tuple[Node, Witness], caplog: pytest.LogCaptureFixture
) -> None:
    """Runs after the fuzz (same module): the witness saw no gap, memory settled."""
    _, witness = served
    caplog.set_level(logging.INFO)
    gc.collect()
    before = psutil.Process().memory_info().rss / 2**20
    # A second round of the fuzz while measuring: memory must come back.
    test_every_malformed_frame_gets_its_error(served)  # type: ignore[call-arg]
    gc.collect()
    time.sleep(scaled(0.5))
    after = psutil.Process().memory_info().rss / 2**20
    tracebacks = [r for r in caplog.records if r.exc_info]
    print(
        f"\nfuzz: witness saw {witness.frames} room frames, gaps {witness.gaps()}; "
        f"RSS MiB before {before:.1f} after {after:.1f}; {len(tracebacks)} tracebacks logged"
    )
    assert witness.frames > 0 and not witness.gaps()
    assert after - before < 16
    assert not tracebacks
