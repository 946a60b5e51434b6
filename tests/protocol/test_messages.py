"""protocol/messages.py: the two tagged unions, their tags and field constraints."""

from __future__ import annotations

import typing

import msgspec
import pytest

from fablecast.protocol import messages as m
from fablecast.server.room.mood import REACTION_POINTS
from fablecast.server.room.phases import Phase

CLIENT_TYPES = typing.get_args(m.ClientMessage)
SERVER_TYPES = typing.get_args(m.ServerMessage)
ROOM_TYPES = typing.get_args(m.RoomMessage)


def _tag(cls: type[msgspec.Struct]) -> str:
    tag = cls.__struct_config__.tag
    assert isinstance(tag, str)
    return tag


def test_client_union_tags() -> None:
    assert [_tag(c) for c in CLIENT_TYPES] == ["hello", "vote", "react", "ping", "moderate"]
    assert all(c.__struct_config__.tag_field == "type" for c in CLIENT_TYPES)


def test_server_union_tags_are_unique_and_typed() -> None:
    tags = [_tag(c) for c in SERVER_TYPES]
    assert len(tags) == len(set(tags)) == 21
    assert all(c.__struct_config__.tag_field == "type" for c in SERVER_TYPES)
    assert not set(tags) & {_tag(c) for c in CLIENT_TYPES}


def test_room_frame_types_are_exactly_the_room_union() -> None:
    assert m.ROOM_FRAME_TYPES == ROOM_TYPES
    for cls in SERVER_TYPES:
        assert issubclass(cls, m.RoomFrame) == (cls in ROOM_TYPES), cls


def test_room_frames_default_to_unstamped() -> None:
    frame = m.Presence(viewers=1)
    assert (frame.epoch, frame.seq) == ("", 0)


def test_personal_messages_carry_no_seq() -> None:
    for cls in SERVER_TYPES:
        if cls in ROOM_TYPES or cls is m.Snapshot or cls is m.Welcome:
            continue
        assert "seq" not in cls.__struct_fields__, cls


def test_messages_are_keyword_only() -> None:
    with pytest.raises(TypeError):
        m.Vote(1, 2)  # type: ignore[misc]


def test_reaction_set_is_consistent() -> None:
    assert typing.get_args(m.Reaction) == m.REACTIONS
    assert set(m.REACTIONS) == set(REACTION_POINTS)
    assert len(m.REACTIONS) == 8


def test_phase_names_match_the_core() -> None:
    assert set(typing.get_args(m.PhaseName)) == {p.value for p in Phase}


@pytest.mark.parametrize(
    "participant",
    ["a", "A", "0", "user-1", "a_b.c:d-e", "x" * 64],
)
def test_participant_pattern_accepts(participant: str) -> None:
    hello = msgspec.convert({"type": "hello", "participant": participant}, m.Hello)
    assert hello.participant == participant


@pytest.mark.parametrize(
    "participant",
    ["", " ", "a b", "\na", "x" * 65, "é", "a/b", "<script>", "a@b"],
)
def test_participant_pattern_rejects(participant: str) -> None:
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"type": "hello", "participant": participant}, m.Hello)


@pytest.mark.parametrize("participant", ["a\n", "x" * 64 + "\n"])
def test_participant_pattern_rejects_trailing_newline(participant: str) -> None:
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"type": "hello", "participant": participant}, m.Hello)


@pytest.mark.parametrize(
    ("cls", "fields"),
    [
        (m.Vote, {"window": 0, "option": 0}),
        (m.Vote, {"window": 2**53 + 1, "option": 0}),
        (m.Vote, {"window": 1, "option": 2**53 + 1}),
        (m.Vote, {"window": 1, "option": -1}),
        (m.Vote, {"window": 1}),
        (m.Vote, {"option": 1}),
        (m.Vote, {"window": "1", "option": 1}),
        (m.Vote, {"window": 1.5, "option": 1}),
        (m.React, {"valence": 1.5}),
        (m.React, {"arousal": -1.01}),
        (m.React, {"reaction": "meh"}),
        (m.Hello, {"name": "n" * 41}),
        (m.Hello, {"epoch": "e" * 33}),
        (m.Hello, {"since": -1}),
        (m.Hello, {"token": "t" * 4097}),
        (m.Ping, {"nonce": -1}),
        (m.Ping, {"nonce": 2**53 + 1}),
    ],
)
def test_field_constraints_reject(cls: type[msgspec.Struct], fields: dict[str, object]) -> None:
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"type": _tag(cls), **fields}, cls)


@pytest.mark.parametrize(
    ("cls", "fields"),
    [
        (m.Vote, {"window": 1, "option": 0}),
        (m.Vote, {"window": 2**53, "option": 4}),
        (m.React, {"valence": 1.0, "arousal": -1.0}),
        (m.React, {"reaction": "fear"}),
        (m.Hello, {"name": "n" * 40, "epoch": "e" * 32, "since": 0}),
        (m.Ping, {}),
    ],
)
def test_field_constraints_accept_bounds(
    cls: type[msgspec.Struct], fields: dict[str, object]
) -> None:
    msg = msgspec.convert({"type": _tag(cls), **fields}, cls)
    for key, value in fields.items():
        assert getattr(msg, key) == value


def test_defaults() -> None:
    assert m.Ping().nonce == 0
    hello = m.Hello()
    assert (hello.participant, hello.name, hello.epoch, hello.since, hello.token) == (None,) * 5
    assert m.Ballot(window=1, beat=1, options=[], duration_ms=1, closes_at_ms=1).mode == "plurality"
