"""The core restored from the event log, and rewound: plain calls, fake clock."""

from __future__ import annotations

from typing import Any

import pytest

from fablecast.protocol import messages as m
from fablecast.server.room import effects as fx
from fablecast.server.room.state import CommittedBeat
from fablecast.server.room.votes import WindowResult


def frames(effects: list[fx.Effect]) -> list[Any]:
    return [e.frame for e in effects if isinstance(e, fx.Publish)]


def refused(effects: list[fx.Effect]) -> str | None:
    """The error code a vote got (None: accepted)."""
    reply = effects[0]
    assert isinstance(reply, fx.Reply)
    return reply.message.code if isinstance(reply.message, m.Error) else None


STORY = [CommittedBeat(1, "One.", None), CommittedBeat(2, "Two.", "Go left")]


def test_restored_room_retells_the_interrupted_beat_with_its_choice(h: Any) -> None:
    h.room.restore(STORY, 2, choice="Open the door")
    out = h.open("p1")
    assert h.narration.beat == 3 and h.narration.choice == "Open the door"
    assert m.BeatStart(beat=3, choice="Open the door") in frames(out)
    assert [b.beat for b in h.room.story] == [1, 2] and h.room.beats_told == 2


def test_a_retold_beat_after_a_restart_names_the_vote_in_its_why(h: Any) -> None:
    result = WindowResult(winner=1, counts=(1, 3), voters=4, tie_break=None)
    h.room.restore(STORY, 2, choice="Go down", result=result, result_options=("Go up", "Go down"))
    h.open("p1")
    out = h.narrate("Down they went.")
    why = next(f for f in frames(out) if isinstance(f, m.Why))
    assert why.beat == 3 and why.choice == "Go down"
    assert why.ballot == ["Go up", "Go down"] and why.counts == [1, 3] and why.winner == 1


def test_restored_room_writes_the_missing_ballot(h: Any) -> None:
    h.room.restore(STORY, 2, resume="choices")
    h.open("p1")
    assert h.narrations == [] and h.choices.beat == 2 and h.choices.text == "Two."
    out = h.offer("Run away now", "Stay here quietly")
    assert h.room.phase == "voting"
    assert any(isinstance(f, m.Ballot) and f.beat == 2 for f in frames(out))


def test_restored_open_ballot_is_re_asked_with_its_options(h: Any) -> None:
    h.room.restore(STORY, 2, resume="ballot", options=("Go up", "Go down"), windows=7)
    out = h.open("p1")
    ballot = next(f for f in frames(out) if isinstance(f, m.Ballot))
    assert ballot.window == 8  # numbered after the windows of before the restart
    assert refused(h.vote("p1", 0, window=7)) == "window_closed"  # a stale window
    assert h.room.window is not None and h.room.window.votes == {}
    assert [o.text for o in ballot.options] == ["Go up", "Go down"] and ballot.beat == 2
    assert h.choice_requests == [] and h.room.window is not None
    h.vote("p1", 1)
    h.fire("vote_close")
    h.fire("reveal")
    assert h.narration.beat == 3 and h.narration.choice == "Go down"


def test_restored_room_waits_for_a_viewer_first(h: Any) -> None:
    h.room.restore(
        [CommittedBeat(11, "Eleven.", None), CommittedBeat(12, "Twelve.", "x")],
        12,
        resume="choices",
    )
    out = h.send(fx.Start())
    assert frames(out) == [m.Phase(phase="paused", beat=12, reason="empty")]
    assert h.room.beats_forgotten == 10
    h.send(fx.ViewerJoined("p"))
    assert h.choices.beat == 12


def test_restore_refuses_nonsense(h: Any) -> None:
    with pytest.raises(ValueError, match="resume must be"):
        h.room.restore(STORY, 2, resume="later")
    with pytest.raises(ValueError, match="needs a committed beat"):
        h.room.restore([], 0, resume="ballot")


def test_rewind_mid_vote_cancels_and_tells_everyone_at_once(h: Any) -> None:
    h.open("p1")
    h.play_beat("First.", {"p1": 0})
    h.to_voting("Second.")
    window = h.room.window
    assert window is not None
    request_before = h.room._request
    out = h.send(fx.Rewound((CommittedBeat(1, "First.", None),), 1, branch=1))
    fs = frames(out)
    assert fs[0] == m.Phase(phase="paused", beat=1, reason="rewind")
    assert fs[1] == m.Rewind(beat=1, branch=1, story=[m.StoryBeat(beat=1, text="First.")])
    assert h.room.window is None and h.room.beats_told == 1
    assert [w.beat for w in h.room.whys] == [1] and h.room.last_result is None
    assert h.choices.beat == 1 and h.room._request == request_before + 1
    # The old window's timer is stale now, and votes for it are refused.
    stale = h.timers.get("vote_close")
    if stale is not None:
        assert h.send(fx.TimerFired("vote_close", stale.token)) == []
    assert refused(h.vote("p1", 0, window=window.window)) == "not_in_phase"


def test_rewind_while_narrating_cancels_the_request(h: Any) -> None:
    h.open("p1")
    h.play_beat("First.")
    running = h.narration.request
    h.narrate("half a beat", done=False)
    h.send(fx.Rewound((), 0, branch=2))
    assert running in h.cancelled
    assert h.narration.beat == 1 and h.narration.request != running
    assert h.narrate("late", done=True) != []  # the new request is live
