"""protocol/codec.py: both codecs round-trip every message; decode errors carry the right code."""

from __future__ import annotations

import json
import typing

import msgspec
import pytest

from fablecast.protocol import messages as m
from fablecast.protocol.codec import (
    CODECS,
    DEFAULT_MAX_MESSAGE_BYTES,
    JSON,
    MAX_DEPTH,
    MSGPACK,
    Codec,
    codec_for_subprotocol,
    json_depth,
    msgpack_depth,
)
from fablecast.protocol.codes import ErrorCode
from fablecast.protocol.errors import ProtocolError
from fablecast.protocol.version import SUBPROTOCOL_JSON, SUBPROTOCOL_MSGPACK, SUBPROTOCOLS

MOOD = m.Mood(valence=0.25, arousal=-0.5, intensity=3.0, reactions={"joy": 2.0, "fear": 0.5})
BALLOT = m.Ballot(
    epoch="ab12cd34",
    seq=7,
    window=3,
    beat=2,
    options=[m.Option(index=0, text="Open the door"), m.Option(index=1, text="Run")],
    duration_ms=15000,
    closes_at_ms=1_700_000_015_000,
)
TALLY = m.Tally(epoch="ab12cd34", seq=8, window=3, counts=[4, 1], voters=5)

CLIENT_SAMPLES: list[m.ClientMessage] = [
    m.Hello(),
    m.Hello(
        participant="user-1.a:b_c",
        name="Ada Lovelace ✨",
        epoch="ab12cd34",
        since=42,
        token="t" * 100,
    ),
    m.Vote(window=1, option=0),
    m.Vote(window=2**53, option=4),
    m.React(reaction="joy"),
    m.React(valence=-1.0, arousal=1.0),
    m.React(reaction="bored", valence=0.5, arousal=-0.25),
    m.Ping(),
    m.Ping(nonce=2**53),
    m.Moderate(action="pause"),
    m.Moderate(action="edit", ref="r" * 64, hold=2**53, text="Edited ✨", participant="p-1"),
]

ROOM_SAMPLES: list[m.RoomMessage] = [
    m.BeatStart(epoch="e", seq=1, beat=1),
    m.BeatStart(epoch="e", seq=2, beat=2, choice="Follow the light"),
    m.Token(epoch="e", seq=3, beat=2, text="The lantern flickers — «ünïcode» 🏮"),
    m.BeatEnd(epoch="e", seq=4, beat=2, text="Whole text."),
    m.BeatAbort(epoch="e", seq=5, beat=3, reason="engine stalled"),
    BALLOT,
    TALLY,
    m.VoteResult(
        epoch="e", seq=9, window=3, winner=1, text="Run", counts=[2, 2], voters=4, tie_break=None
    ),
    m.VoteResult(
        epoch="e",
        seq=10,
        window=4,
        winner=0,
        text="Open",
        counts=[0, 0],
        voters=0,
        tie_break="no_votes_draw",
    ),
    m.Mood(epoch="e", seq=11, valence=0.0, arousal=0.0, intensity=0.0, reactions={}),
    m.Presence(epoch="e", seq=12, viewers=10_000),
    m.Phase(epoch="e", seq=13, phase="paused", beat=0, reason="empty"),
    m.Phase(epoch="e", seq=14, phase="voting", beat=1),
    m.Narrator(epoch="e", seq=15, state="stalled", message="no tokens for 10 s"),
    m.Narrator(epoch="e", seq=16, state="ok"),
    m.Cue(
        epoch="e",
        seq=17,
        beat=2,
        location="the docks",
        time_of_day="night",
        weather="rain",
        lighting="neon",
        music="tense",
        characters=["Sam"],
        image_prompt="A wet pier",
    ),
    m.Why(
        epoch="e",
        seq=18,
        beat=2,
        choice="I go",
        ballot=["I go", "I stay"],
        counts=[2, 1],
        winner=0,
        voters=3,
        mood={"valence": 0.1},
        tone="calm",
        state=m.StoryState(location="the docks"),
    ),
    m.Rewind(epoch="e", seq=19, beat=1, branch=1, story=[m.StoryBeat(beat=1, text="One.")]),
]

PERSONAL_SAMPLES: list[m.ServerMessage] = [
    m.Welcome(
        protocol=1,
        room="demo",
        participant="p1",
        epoch="ab12cd34",
        seq=0,
        recovered=True,
        limits=m.Limits(
            max_message_bytes=65536,
            messages_per_s=20.0,
            message_burst=40,
            reactions_per_s=4.0,
            reaction_burst=8,
            history_frames=4096,
        ),
        reactions=list(m.REACTIONS),
        tick_ms=50,
    ),
    m.Snapshot(
        epoch="ab12cd34",
        seq=8,
        title="The Lantern Market",
        phase="voting",
        beat=2,
        story=[
            m.StoryBeat(beat=1, text="One."),
            m.StoryBeat(beat=2, text="Two.", choice="Run"),
        ],
        truncated=False,
        partial="",
        ballot=BALLOT,
        tally=TALLY,
        mood=MOOD,
        viewers=3,
        narrator="ok",
        my_vote=1,
    ),
    m.Snapshot(
        epoch="x",
        seq=0,
        title="T",
        phase="paused",
        beat=0,
        story=[],
        truncated=True,
        partial="par",
        ballot=None,
        tally=None,
        mood=MOOD,
        viewers=0,
        narrator="down",
        reason="engine",
    ),
    m.Error(code="invalid_message", message="bad", ref="hello"),
    m.Error(code="rate_limited", message="slow down"),
    m.VoteAck(window=3, option=1, status="changed"),
    m.Pong(nonce=7, server_time_ms=1_700_000_000_000),
    m.ModAck(action="veto", ref="m-1", detail="vetoed"),
    m.ModState(
        room="demo",
        approval=True,
        paused="killed",
        holds=[m.HeldBeat(hold=1, beat=2, text="held", reason="approval", held_at_ms=5)],
        muted=["a"],
        banned=[],
        filter="off",
        audit=[
            m.AuditRecord(
                t_ms=1, room="demo", subject="s", role="viewer", action="pause", outcome="forbidden"
            )
        ],
    ),
]

SERVER_SAMPLES: list[m.ServerMessage] = [*ROOM_SAMPLES, *PERSONAL_SAMPLES]

BOTH = pytest.mark.parametrize("codec", [JSON, MSGPACK], ids=["json", "msgpack"])


def frame(codec: Codec, obj: object) -> bytes | str:
    """``obj`` (plain data) as one frame of ``codec``'s kind (text for JSON)."""
    if codec.is_text:
        return json.dumps(obj)
    return msgspec.msgpack.encode(obj)


def wire(codec: Codec, message: msgspec.Struct) -> bytes | str:
    """``message`` encoded by ``codec`` as the frame a client would send."""
    data = codec.encode(message)
    return data.decode() if codec.is_text else data


def decode_error(codec: Codec, data: bytes | str) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        codec.decode_client(data)
    return info.value


# --------------------------------------------------------------------------- round trips


def test_samples_cover_every_type() -> None:
    assert {type(s) for s in CLIENT_SAMPLES} == set(typing.get_args(m.ClientMessage))
    assert {type(s) for s in SERVER_SAMPLES} == set(typing.get_args(m.ServerMessage))


@BOTH
@pytest.mark.parametrize("message", CLIENT_SAMPLES, ids=lambda s: type(s).__name__)
def test_client_messages_round_trip(codec: Codec, message: m.ClientMessage) -> None:
    decoded = codec.decode_client(wire(codec, message))
    assert type(decoded) is type(message)
    assert decoded == message


@BOTH
@pytest.mark.parametrize("message", SERVER_SAMPLES, ids=lambda s: type(s).__name__)
def test_server_messages_round_trip(codec: Codec, message: m.ServerMessage) -> None:
    data = codec.encode(message)
    assert isinstance(data, bytes)
    decoded = codec.decode_server(data)
    assert type(decoded) is type(message)
    assert decoded == message


@pytest.mark.parametrize("message", SERVER_SAMPLES, ids=lambda s: type(s).__name__)
def test_codecs_agree(message: m.ServerMessage) -> None:
    """Both wire formats carry the same plain data (readable by any JSON/MessagePack lib)."""
    as_json = json.loads(JSON.encode(message))
    as_msgpack = msgspec.msgpack.decode(MSGPACK.encode(message))
    assert as_json == as_msgpack
    assert as_json["type"] == type(message).__struct_config__.tag


def test_room_frame_wire_shape() -> None:
    data = json.loads(JSON.encode(m.Token(epoch="e1", seq=5, beat=2, text="hi")))
    assert data == {"type": "token", "epoch": "e1", "seq": 5, "beat": 2, "text": "hi"}


def test_decode_server_accepts_text_and_bytes() -> None:
    msg = m.Pong(nonce=1, server_time_ms=2)
    assert JSON.decode_server(JSON.encode(msg).decode()) == msg
    assert JSON.decode_server(JSON.encode(msg)) == msg


# --------------------------------------------------------------------------- decode errors


@BOTH
def test_undecodable_frame_is_bad_message(codec: Codec) -> None:
    garbage: bytes | str = "{not json" if codec.is_text else b"\xc1\xc1\xc1"
    assert decode_error(codec, garbage).code is ErrorCode.BAD_MESSAGE


@BOTH
def test_truncated_frame_is_bad_message(codec: Codec) -> None:
    data = wire(codec, m.Vote(window=1, option=1))
    assert decode_error(codec, data[:-3]).code is ErrorCode.BAD_MESSAGE


def test_empty_text_frame_is_bad_message() -> None:
    assert decode_error(JSON, "").code is ErrorCode.BAD_MESSAGE


def test_json_codec_rejects_binary_frames() -> None:
    err = decode_error(JSON, JSON.encode(m.Ping()))
    assert err.code is ErrorCode.BAD_MESSAGE
    assert "text" in err.message


def test_msgpack_codec_rejects_text_frames() -> None:
    err = decode_error(MSGPACK, '{"type":"ping"}')
    assert err.code is ErrorCode.BAD_MESSAGE
    assert "binary" in err.message


@BOTH
@pytest.mark.parametrize(
    "obj",
    [
        {"type": "nope"},
        {"type": "welcome"},  # a server message is no client message
        {"type": "VOTE", "window": 1, "option": 1},
        {"type": ""},
        {"type": 5},
        {"type": None},
        {},
        {"window": 1, "option": 1},
    ],
)
def test_unknown_or_missing_type(codec: Codec, obj: object) -> None:
    assert decode_error(codec, frame(codec, obj)).code is ErrorCode.UNKNOWN_TYPE


@BOTH
@pytest.mark.parametrize(
    "obj",
    [
        {"type": "vote", "window": 0, "option": 1},
        {"type": "vote", "window": 1, "option": 2**53 + 1},
        {"type": "vote", "window": 1, "option": -1},
        {"type": "vote", "window": 1},
        {"type": "vote", "window": "1", "option": 1},
        {"type": "vote", "window": 1, "option": True},
        {"type": "react", "valence": 1.5},
        {"type": "react", "arousal": -2},
        {"type": "react", "reaction": "meh"},
        {"type": "hello", "participant": "has space"},
        {"type": "hello", "participant": "p" * 65},
        {"type": "hello", "participant": ""},
        {"type": "hello", "participant": 7},
        {"type": "hello", "since": -1},
        {"type": "hello", "name": "n" * 41},
        {"type": "ping", "nonce": "x"},
    ],
)
def test_invalid_fields_are_invalid_message(codec: Codec, obj: object) -> None:
    err = decode_error(codec, frame(codec, obj))
    assert err.code is ErrorCode.INVALID_MESSAGE, err.message


@BOTH
def test_unknown_fields_are_ignored(codec: Codec) -> None:
    obj = {"type": "vote", "window": 3, "option": 2, "future": {"x": [1, 2]}, "v": 2}
    assert codec.decode_client(frame(codec, obj)) == m.Vote(window=3, option=2)
    hello = {"type": "hello", "participant": "p1", "capabilities": ["x"]}
    assert codec.decode_client(frame(codec, hello)) == m.Hello(participant="p1")


@BOTH
def test_server_decoder_reports_unknown_type(codec: Codec) -> None:
    with pytest.raises(ProtocolError) as info:
        codec.decode_server(codec.encode(m.Vote(window=1, option=0)))
    assert info.value.code is ErrorCode.UNKNOWN_TYPE


# --------------------------------------------------------------------------- size limit


@BOTH
def test_too_large(codec: Codec, monkeypatch: pytest.MonkeyPatch) -> None:
    data = wire(codec, m.Hello(name="n" * 40))
    monkeypatch.setattr(codec, "max_message_bytes", len(data))
    assert codec.decode_client(data) == m.Hello(name="n" * 40)  # exactly the limit: accepted
    monkeypatch.setattr(codec, "max_message_bytes", len(data) - 1)
    err = decode_error(codec, data)
    assert err.code is ErrorCode.TOO_LARGE
    assert str(len(data) - 1) in err.message


@BOTH
def test_too_large_is_checked_before_decoding(
    codec: Codec, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(codec, "max_message_bytes", 16)
    garbage: bytes | str = "x" * 17 if codec.is_text else b"\xc1" * 17
    assert decode_error(codec, garbage).code is ErrorCode.TOO_LARGE


def test_default_limit() -> None:
    assert DEFAULT_MAX_MESSAGE_BYTES == 64 * 1024
    assert JSON.max_message_bytes == MSGPACK.max_message_bytes == DEFAULT_MAX_MESSAGE_BYTES
    big = json.dumps({"type": "ping", "pad": "x" * DEFAULT_MAX_MESSAGE_BYTES})
    assert decode_error(JSON, big).code is ErrorCode.TOO_LARGE


def test_too_large_counts_utf8_bytes_of_text_frames(monkeypatch: pytest.MonkeyPatch) -> None:
    text = json.dumps({"type": "hello", "name": "€" * 40}, ensure_ascii=False)
    assert len(text) < 100 < len(text.encode())
    monkeypatch.setattr(JSON, "max_message_bytes", 100)
    assert decode_error(JSON, text).code is ErrorCode.TOO_LARGE


# --------------------------------------------------------------------------- negotiation


def test_codec_identity() -> None:
    assert (JSON.name, JSON.subprotocol, JSON.is_text) == ("json", SUBPROTOCOL_JSON, True)
    assert (MSGPACK.name, MSGPACK.subprotocol, MSGPACK.is_text) == (
        "msgpack",
        SUBPROTOCOL_MSGPACK,
        False,
    )
    assert set(CODECS) == set(SUBPROTOCOLS)


def test_codec_for_subprotocol() -> None:
    assert codec_for_subprotocol(None) is JSON
    assert codec_for_subprotocol(SUBPROTOCOL_JSON) is JSON
    assert codec_for_subprotocol(SUBPROTOCOL_MSGPACK) is MSGPACK
    with pytest.raises(KeyError):
        codec_for_subprotocol("fablecast.v2.cbor")


def test_protocol_error_repr_and_fields() -> None:
    err = ProtocolError(ErrorCode.REJECTED, "nope")
    assert (err.code, err.message, str(err)) == (ErrorCode.REJECTED, "nope", "nope")
    assert repr(err) == "ProtocolError('rejected', 'nope')"


def _nested(depth: int) -> object:
    value: object = []
    for _ in range(depth - 1):
        value = [value]
    return value


@BOTH
@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 1000, 20_000])
def test_deep_nesting_is_invalid_message_not_recursion_error(codec: Codec, depth: int) -> None:
    """A frame nested past MAX_DEPTH (1,000 levels: ~2 KB) is refused before decoding."""
    if codec.is_text:
        data: bytes | str = '{"type":"hello","x":' + "[" * depth + "]" * depth + "}"
    else:
        # Build the MessagePack bytes by hand: msgspec's encoder would recurse too.
        data = b"\x82\xa4type\xa5hello\xa1x" + b"\x91" * (depth - 1) + b"\x90"
    err = decode_error(codec, data)
    assert err.code is ErrorCode.INVALID_MESSAGE
    assert f"deeper than {MAX_DEPTH}" in err.message


@BOTH
def test_nesting_up_to_max_depth_decodes(codec: Codec) -> None:
    # The message map is level 1, so the unknown field may nest MAX_DEPTH - 1 deep.
    obj = {"type": "vote", "window": 3, "option": 2, "future": _nested(MAX_DEPTH - 1)}
    assert codec.decode_client(frame(codec, obj)) == m.Vote(window=3, option=2)


def test_json_depth_skips_brackets_inside_strings() -> None:
    assert json_depth('{"type":"hello","name":"[[[[{{{{"}') == 1
    assert json_depth('{"a":"\\"[[[","b":[[1]]}') == 3
    assert json_depth("[[[") == 3  # malformed: some number; the decoder reports it


def test_msgpack_depth_walks_every_kind_of_object() -> None:
    value = {
        "s": "x" * 300,
        "b": b"\x00" * 70_000,
        "i": [1, -1, 300, -300, 2**40, -(2**40), 1.5],
        "m": {"k": [None, True, False, {"deep": [[["end"]]]}]},
        "e": msgspec.msgpack.Ext(1, b"abcd"),
    }
    assert msgpack_depth(msgspec.msgpack.encode(value)) == 7
    assert msgpack_depth(b"\xc1") == 0  # never-used byte: the decoder reports it
    assert msgpack_depth(b"\x91\x91") == 2  # truncated


def test_recursion_error_is_a_backstop(monkeypatch: pytest.MonkeyPatch) -> None:
    codec = Codec("json", SUBPROTOCOL_JSON, is_text=True)

    def boom(data: object) -> object:
        raise RecursionError

    monkeypatch.setattr(codec, "_dec_client", type("D", (), {"decode": staticmethod(boom)})())
    assert decode_error(codec, '{"type":"ping"}').code is ErrorCode.INVALID_MESSAGE
