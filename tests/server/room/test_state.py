"""server/room/state.py: the pure room core, driven by a fake clock (see conftest.Harness)."""

from __future__ import annotations

import random
from collections.abc import Iterable
from typing import Any
from unittest.mock import ANY

import pytest

from fablecast.protocol import messages as m
from fablecast.server.room import effects as fx
from fablecast.server.room.mood import MoodAggregator
from fablecast.server.room.phases import Phase
from fablecast.server.room.state import MIN_STORY_MEMORY, STORY_TRIM_SLACK, Room, RoomSettings

# --------------------------------------------------------------------------- effect filters


def frames(effects: Iterable[fx.Effect], cls: type[Any] | None = None) -> list[Any]:
    out = [e.frame for e in effects if isinstance(e, fx.Publish)]
    return [f for f in out if cls is None or isinstance(f, cls)]


def tags(effects: Iterable[fx.Effect]) -> list[str]:
    return [f.__struct_config__.tag for f in frames(effects)]


def replies(effects: Iterable[fx.Effect]) -> list[Any]:
    return [e.message for e in effects if isinstance(e, fx.Reply)]


def errors(effects: Iterable[fx.Effect]) -> list[str]:
    return [r.code for r in replies(effects) if isinstance(r, m.Error)]


def of(effects: Iterable[fx.Effect], cls: type[Any]) -> list[Any]:
    return [e for e in effects if isinstance(e, cls)]


def dirty(effects: Iterable[fx.Effect]) -> list[str]:
    return [e.kind for e in effects if isinstance(e, fx.MarkDirty)]


# --------------------------------------------------------------------------- settings


@pytest.mark.parametrize(
    "bad",
    [
        {"n_choices": 1},
        {"n_choices": 6},
        {"vote_s": 0},
        {"reveal_s": -1},
        {"retry_s": 0},
    ],
)
def test_settings_validation(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        RoomSettings(**bad)


def test_mood_half_life_comes_from_settings() -> None:
    assert Room("r", RoomSettings(mood_half_life_s=3.0)).mood.half_life_s == 3.0


# --------------------------------------------------------------------------- start / empty


def test_start_paused_when_empty_and_resume_on_join(h: Any) -> None:
    out = h.send(fx.Start())
    assert frames(out) == [m.Phase(phase="paused", beat=0, reason="empty")]
    assert h.room.phase is Phase.PAUSED
    assert h.room.reason == "empty"
    assert not h.narrations

    out = h.send(fx.ViewerJoined("alice"))
    assert out == [
        fx.MarkDirty("presence"),
        fx.Publish(m.Phase(phase="narrating", beat=1)),
        fx.Publish(m.BeatStart(beat=1, choice=None)),
        fx.RequestNarration(1, 1, None, h.room.mood.read(h.now)),
    ]
    assert h.room.phase is Phase.NARRATING
    assert h.room.reason is None
    assert h.room.current_request == 1


def test_second_join_does_not_restart_narration(h: Any) -> None:
    h.open("alice")
    out = h.send(fx.ViewerJoined("bob"))
    assert out == [fx.MarkDirty("presence")]
    assert len(h.narrations) == 1


def test_join_before_start_then_start_narrates(h: Any) -> None:
    assert h.send(fx.ViewerJoined("alice")) == [fx.MarkDirty("presence")]
    assert h.room.phase is Phase.PAUSED and h.room.reason == "starting"
    out = h.send(fx.Start())
    assert tags(out) == ["phase", "beat_start"]
    assert len(of(out, fx.RequestNarration)) == 1
    assert h.send(fx.Start()) == []  # a second start is a no-op


def test_a_room_opened_before_the_engine_is_warm_waits_for_it(h: Any) -> None:
    out = h.send(fx.Start(engine_ready=False))
    assert tags(out) == ["phase"] and not of(out, fx.RequestNarration)
    assert h.room.phase is Phase.PAUSED and h.room.reason == "starting"
    # A viewer joining does not start it either: the engine cannot narrate yet.
    assert not of(h.send(fx.ViewerJoined("alice")), fx.RequestNarration)
    out = h.send(fx.EngineReady())
    assert tags(out) == ["phase", "beat_start"]
    assert len(of(out, fx.RequestNarration)) == 1
    assert h.send(fx.EngineReady()) == []  # only a room waiting to start begins


def test_engine_ready_with_nobody_watching_pauses_empty(h: Any) -> None:
    h.send(fx.Start(engine_ready=False))
    h.send(fx.EngineReady())
    assert h.room.phase is Phase.PAUSED and h.room.reason == "empty"
    assert len(of(h.send(fx.ViewerJoined("bob")), fx.RequestNarration)) == 1


def test_start_without_pause_when_empty_narrates_immediately(make: Any) -> None:
    h = make(pause_when_empty=False)
    out = h.send(fx.Start())
    assert tags(out) == ["phase", "beat_start"]
    assert h.room.phase is Phase.NARRATING


# --------------------------------------------------------------------------- the beat loop


def test_full_beat_loop(h: Any) -> None:
    h.open("alice", "bob")
    # narrate beat 1, streamed
    out = h.narrate("Once upon ", "a lantern.", done=False)
    assert out == [fx.AppendText(1, "Once upon "), fx.AppendText(1, "a lantern.")]
    assert h.room.partial.text() == "Once upon a lantern."
    assert h.room.beat == 1

    out = h.send(fx.NarrationDone(h.narration.request))
    why = m.Why(beat=1, mood={"valence": 0.0, "arousal": 0.0, "intensity": 0.0})
    assert out == [
        fx.Publish(m.BeatEnd(beat=1, text="Once upon a lantern.")),
        fx.Publish(why),
        fx.RequestChoices(2, 1, "Once upon a lantern."),
    ]
    assert h.room.whys == [why]
    assert [(b.beat, b.text, b.choice) for b in h.room.story] == [(1, "Once upon a lantern.", None)]
    assert h.room.partial.text() == ""
    assert h.room.phase is Phase.NARRATING  # the ballot is still being written

    t_open = h.now
    out = h.offer("Open it", "Run", "Hide", "Ignore")  # more than n_choices: trimmed
    ballot = m.Ballot(
        window=1,
        beat=1,
        options=[
            m.Option(index=0, text="Open it"),
            m.Option(index=1, text="Run"),
            m.Option(index=2, text="Hide"),
        ],
        duration_ms=15000,
        closes_at_ms=round((t_open + 15.0) * 1000),
    )
    assert out == [
        fx.Publish(m.Phase(phase="voting", beat=1)),
        fx.Publish(ballot),
        fx.MarkDirty("tally"),
        fx.ArmTimer("vote_close", t_open + 15.0, ANY),
    ]
    assert h.room.phase is Phase.VOTING
    assert h.room.current_request is None

    out = h.vote("alice", 1)
    assert out == [
        fx.Reply(m.VoteAck(window=1, option=1, status="counted")),
        fx.MarkDirty("tally"),
    ]
    h.vote("bob", 1)
    assert h.room.state_frame("tally", h.now) == m.Tally(window=1, counts=[0, 2, 0], voters=2)

    out = h.advance(15.0)  # the vote_close timer (reveal is 2 s later: not yet)
    assert out == [
        fx.Publish(m.Phase(phase="resolving", beat=1)),
        fx.Publish(
            m.VoteResult(window=1, winner=1, text="Run", counts=[0, 2, 0], voters=2, tie_break=None)
        ),
        fx.ArmTimer("reveal", t_open + 17.0, ANY),
    ]
    assert h.room.phase is Phase.RESOLVING
    assert h.room.window is None
    assert h.room.state_frame("tally", h.now) is None

    out = h.advance(2.0)
    assert tags(out) == ["phase", "beat_start"]
    assert frames(out) == [m.Phase(phase="narrating", beat=2), m.BeatStart(beat=2, choice="Run")]
    (req,) = of(out, fx.RequestNarration)
    assert (req.request, req.beat, req.choice) == (3, 2, "Run")
    assert h.room.beat == 2

    h.narrate("The second beat.")
    assert [(b.beat, b.choice) for b in h.room.story] == [(1, None), (2, "Run")]
    assert h.choices.beat == 2
    assert h.choices.text == "The second beat."


def test_many_beats_number_windows_and_beats_in_order(h: Any) -> None:
    h.open("alice")
    for n in range(1, 6):
        assert h.narration.beat == n
        out = h.play_beat(f"Beat {n}.", votes={"alice": n % 3})
        result = frames(out, m.VoteResult)[0]
        assert result.window == n
        assert result.winner == n % 3
        assert h.narration.choice == "ABC"[n % 3]
    assert [b.beat for b in h.room.story] == [1, 2, 3, 4, 5]
    assert [b.choice for b in h.room.story] == [None, "B", "C", "A", "B"]
    # request ids are unique and increasing
    ids = [r.request for r in h.narrations] + [r.request for r in h.choice_requests]
    assert sorted(ids) == list(range(1, len(ids) + 1))


def test_next_narration_carries_the_winner_and_the_mood(h: Any) -> None:
    h.open("alice")
    h.to_voting()
    for _ in range(3):
        h.send(fx.ReactionSent("alice", "fear"))
    h.vote("alice", 2)
    h.fire("vote_close")
    h.fire("reveal")
    req = h.narration
    assert req.choice == "C"
    assert req.mood.valence == pytest.approx(-0.6)
    assert req.mood.arousal == pytest.approx(0.8)
    assert req.mood.reactions["fear"] > 0
    assert req.mood == h.room.mood.read(h.now)


def test_narration_text_is_stripped_when_committed(h: Any) -> None:
    h.open("alice")
    out = h.narrate("  Padded text. \n")
    assert frames(out, m.BeatEnd)[0].text == "Padded text."


def test_empty_deltas_are_ignored(h: Any) -> None:
    h.open("alice")
    assert h.send(fx.NarrationDelta(h.narration.request, "")) == []
    assert h.room.partial.text() == ""


# --------------------------------------------------------------------------- votes


def test_vote_statuses_and_tally_dirty(h: Any) -> None:
    h.open("alice")
    h.to_voting()
    assert replies(h.vote("alice", 0))[0].status == "counted"
    out = h.vote("alice", 0)
    assert out == [fx.Reply(m.VoteAck(window=1, option=0, status="unchanged"))]
    out = h.vote("alice", 2)
    assert replies(out)[0].status == "changed"
    assert dirty(out) == ["tally"]
    assert h.room.window.counts == [0, 0, 1]
    assert h.room.state_frame("tally", h.now) == m.Tally(window=1, counts=[0, 0, 1], voters=1)


def test_one_counted_vote_per_participant(h: Any) -> None:
    h.open("alice", "bob")
    h.to_voting()
    for option in (0, 1, 2, 1, 1, 0):
        h.vote("alice", option)
    h.vote("bob", 2)
    tally = h.room.state_frame("tally", h.now)
    assert (tally.counts, tally.voters) == ([1, 0, 1], 2)
    result = frames(h.fire("vote_close"), m.VoteResult)[0]
    assert (result.counts, result.voters) == ([1, 0, 1], 2)


@pytest.mark.parametrize("stage", ["narrating", "resolving", "paused", "waiting_for_choices"])
def test_vote_outside_a_window_is_not_in_phase(h: Any, stage: str) -> None:
    h.open("alice")
    if stage == "resolving":
        h.to_voting()
        h.fire("vote_close")
    elif stage == "paused":
        h.fail()
    elif stage == "waiting_for_choices":
        h.narrate("Beat.")
    out = h.send(fx.VoteCast("alice", 1, 0))
    assert errors(out) == ["not_in_phase"]
    assert not dirty(out)
    assert h.room.window is None


def test_vote_for_a_stale_window_is_window_closed(h: Any) -> None:
    h.open("alice")
    h.play_beat()
    h.to_voting()
    assert h.room.window.window == 2
    for stale in (1, 3, 999):
        out = h.send(fx.VoteCast("alice", stale, 0))
        assert errors(out) == ["window_closed"]
        assert not dirty(out)
    assert h.room.window.counts == [0, 0, 0]
    assert h.room.window.votes == {}


@pytest.mark.parametrize("option", [3, 4, -1])
def test_vote_for_an_unknown_option(h: Any, option: int) -> None:
    h.open("alice")
    h.to_voting()  # 3 options
    out = h.vote("alice", option)
    assert errors(out) == ["unknown_option"]
    assert "0..2" in replies(out)[0].message
    assert h.room.window.counts == [0, 0, 0]
    assert h.room.window.votes == {}


def test_tie_break_first_to_reach_in_result(h: Any) -> None:
    h.open("a", "b", "c", "d")
    h.to_voting()
    h.vote("a", 2)
    h.vote("b", 0)
    h.vote("c", 0)
    h.vote("d", 2)  # 0 reached 2 first
    result = frames(h.fire("vote_close"), m.VoteResult)[0]
    assert (result.winner, result.text, result.tie_break) == (0, "A", "first_to_reach")


def test_no_votes_draw_is_deterministic_per_seed(make: Any) -> None:
    def winners(seed: str, name: str) -> list[int]:
        h = make(name=name, seed=seed, n_choices=5)
        h.open("alice")
        out: list[int] = []
        for _ in range(6):
            h.to_voting(options=("A", "B", "C", "D", "E"))
            result = frames(h.fire("vote_close"), m.VoteResult)[0]
            assert result.tie_break == "no_votes_draw"
            assert result.voters == 0
            out.append(result.winner)
            h.fire("reveal")
        return out

    first = winners("s1", "room")
    assert winners("s1", "room") == first
    expected = [random.Random(f"s1:room:{w}").randrange(5) for w in range(1, 7)]
    assert first == expected
    assert winners("s2", "room") != first or winners("s1", "other") != first


# --------------------------------------------------------------------------- stale requests


def test_stale_request_events_are_ignored(h: Any) -> None:
    h.open("alice")
    first = h.narration.request
    h.narrate("Partial", done=False)
    h.fail("boom")
    assert h.send(fx.NarrationDelta(first, "late text")) == []
    assert h.send(fx.NarrationDone(first)) == []
    assert h.send(fx.ChoicesReady(first, ("x", "y"))) == []
    assert h.send(fx.EngineFailed(first, "again")) == []
    assert h.room.partial.text() == ""
    assert h.room.story == []
    assert h.room.phase is Phase.PAUSED


def test_events_of_the_wrong_stage_are_ignored(h: Any) -> None:
    h.open("alice")
    req = h.narration.request
    assert h.send(fx.ChoicesReady(req, ("x", "y"))) == []  # narration request, not choices
    h.narrate("Beat.")
    creq = h.choices.request
    assert h.send(fx.NarrationDelta(creq, "x")) == []
    assert h.send(fx.NarrationDone(creq)) == []
    assert len(h.room.story) == 1


def test_future_request_ids_are_ignored(h: Any) -> None:
    h.open("alice")
    assert h.send(fx.NarrationDelta(99, "x")) == []
    assert h.send(fx.EngineFailed(99, "x")) == []


# --------------------------------------------------------------------------- engine failure


def test_failure_mid_narration_aborts_pauses_and_retells(h: Any) -> None:
    h.open("alice")
    h.narrate("Half a ", "sentence", done=False)
    t_fail = h.now
    out = h.fail("engine died")
    assert out == [
        fx.CancelRequest(1),
        fx.Publish(m.BeatAbort(beat=1, reason="engine died")),
        fx.Publish(m.Narrator(state="down", message="engine died")),
        fx.Publish(m.Phase(phase="paused", beat=1, reason="engine")),
        fx.ArmTimer("retry", t_fail + 2.0, ANY),
    ]
    assert h.room.phase is Phase.PAUSED and h.room.reason == "engine"
    assert h.room.partial.text() == ""
    assert h.room.narrator == "down"
    assert h.room.current_request is None
    snap = h.room.snapshot(h.now, epoch="e", seq=5, participant=None)
    assert (snap.phase, snap.reason, snap.partial, snap.beat, snap.narrator) == (
        "paused",
        "engine",
        "",
        1,
        "down",
    )

    out = h.advance(2.0)
    assert frames(out) == [
        m.Narrator(state="ok", message="retrying"),
        m.Phase(phase="narrating", beat=1),
        m.BeatStart(beat=1, choice=None),
    ]
    (req,) = of(out, fx.RequestNarration)
    assert (req.request, req.beat) == (2, 1)
    h.narrate("A whole new telling.")
    assert [(b.beat, b.text) for b in h.room.story] == [(1, "A whole new telling.")]


def test_retold_beat_keeps_number_and_choice(h: Any) -> None:
    h.open("alice")
    h.play_beat(votes={"alice": 1})
    assert h.narration.beat == 2
    h.narrate("oops", done=False)
    out = h.fail()
    assert frames(out, m.BeatAbort) == [m.BeatAbort(beat=2, reason="boom")]
    out = h.fire("retry")
    assert frames(out, m.BeatStart) == [m.BeatStart(beat=2, choice="B")]
    assert (h.narration.beat, h.narration.choice) == (2, "B")
    out = h.narrate("Retold.")
    assert frames(out, m.BeatEnd) == [m.BeatEnd(beat=2, text="Retold.")]
    assert [b.text for b in h.room.story] == ["Beat text.", "Retold."]


def test_stalled_failure_reports_stalled(h: Any) -> None:
    h.open("alice")
    out = h.fail("no tokens", stalled=True)
    assert frames(out, m.Narrator) == [m.Narrator(state="stalled", message="no tokens")]
    assert h.room.narrator == "stalled"


def test_retry_backoff_is_exponential_and_capped(make: Any) -> None:
    h = make(retry_s=1.5, retry_max_s=10.0)
    h.open("alice")
    delays = []
    for _ in range(6):
        t = h.now
        (arm,) = of(h.fail(), fx.ArmTimer)
        delays.append(arm.at - t)
        h.fire("retry")
    assert delays == [1.5, 3.0, 6.0, 10.0, 10.0, 10.0]
    # a success resets the backoff
    h.narrate("Finally.")
    h.offer("A", "B")
    h.fire("vote_close")
    h.fire("reveal")
    t = h.now
    (arm,) = of(h.fail(), fx.ArmTimer)
    assert arm.at - t == 1.5


def test_failure_during_choices_retries_choices_only(h: Any) -> None:
    h.open("alice")
    h.narrate("The beat.")
    creq = h.choices.request
    out = h.fail("choices failed")
    assert out[0] == fx.CancelRequest(creq)
    assert tags(out) == ["narrator", "phase"]  # no beat_abort: the beat is committed
    assert frames(out, m.Phase) == [m.Phase(phase="paused", beat=1, reason="engine")]
    assert len(h.room.story) == 1

    out = h.fire("retry")
    assert tags(out) == ["narrator", "phase"]
    assert frames(out, m.Phase) == [m.Phase(phase="narrating", beat=1)]
    assert not of(out, fx.RequestNarration)
    (req,) = of(out, fx.RequestChoices)
    assert (req.beat, req.text) == (1, "The beat.")
    assert req.request > creq
    out = h.offer("X", "Y")
    assert frames(out, m.Ballot)[0].beat == 1
    assert h.room.phase is Phase.VOTING
    assert len(h.narrations) == 1


def test_fewer_than_two_choices_is_a_failure(h: Any) -> None:
    h.open("alice")
    h.narrate("The beat.")
    out = h.offer("Only one")
    assert frames(out, m.Narrator)[0].message == "fewer than 2 choices"
    assert h.room.phase is Phase.PAUSED and h.room.reason == "engine"
    assert h.room.window is None
    out = h.fire("retry")
    assert len(of(out, fx.RequestChoices)) == 1


@pytest.mark.parametrize("parts", [(), ("",), ("  ", "\n")])
def test_empty_narration_is_a_failure(h: Any, parts: tuple[str, ...]) -> None:
    h.open("alice")
    out = h.narrate(*parts)
    assert tags(out) == ["beat_abort", "narrator", "phase"]
    assert frames(out, m.BeatAbort)[0].beat == 1
    assert h.room.story == []
    assert h.room.phase is Phase.PAUSED and h.room.reason == "engine"
    assert not h.choice_requests
    out = h.fire("retry")
    assert frames(out, m.BeatStart) == [m.BeatStart(beat=1)]


def test_join_does_not_resume_an_engine_pause(h: Any) -> None:
    h.open("alice")
    h.fail()
    assert h.send(fx.ViewerJoined("bob")) == [fx.MarkDirty("presence")]
    assert h.room.phase is Phase.PAUSED


# --------------------------------------------------------------------------- timers


def test_stale_timer_tokens_are_ignored(h: Any) -> None:
    h.open("alice")
    h.to_voting()
    token = h.timers["vote_close"].token
    assert h.send(fx.TimerFired("vote_close", token + 1)) == []
    assert h.send(fx.TimerFired("vote_close", token - 1)) == []
    assert h.send(fx.TimerFired("reveal", 1)) == []  # never armed
    assert h.send(fx.TimerFired("retry", 1)) == []
    assert h.room.phase is Phase.VOTING
    out = h.send(fx.TimerFired("vote_close", token))
    assert tags(out) == ["phase", "vote_result"]
    assert h.send(fx.TimerFired("vote_close", token)) == []  # fires once


def test_token_of_an_already_fired_timer_is_stale(h: Any) -> None:
    h.open("alice")
    h.fail()
    first = h.timers["retry"]
    h.fire("retry")
    h.fail()  # second failure: retry armed 4 s later
    assert h.send(fx.TimerFired("retry", first.token)) == []
    assert h.room.phase is Phase.PAUSED


def test_timers_fire_only_when_the_clock_passes_them(h: Any) -> None:
    h.open("alice")
    h.to_voting()
    assert h.advance(14.999) == []
    assert h.room.phase is Phase.VOTING
    assert tags(h.advance(0.001)) == ["phase", "vote_result"]


# --------------------------------------------------------------------------- reactions / mood


def test_reaction_marks_mood_and_arms_the_refresh_timer(h: Any) -> None:
    h.open("alice")
    t = h.now
    out = h.send(fx.ReactionSent("alice", "joy"))
    assert out == [fx.MarkDirty("mood"), fx.ArmTimer("mood", t + 5.0, ANY)]
    out = h.send(fx.ReactionSent("alice", "joy"))
    assert out == [fx.MarkDirty("mood")]  # already armed
    mood = h.room.state_frame("mood", h.now)
    assert isinstance(mood, m.Mood)
    assert (mood.valence, mood.intensity, mood.reactions) == (0.8, 2.0, {"joy": 2.0})


def test_mood_refresh_timer_rearms_until_the_mood_fades(make: Any) -> None:
    h = make(mood_half_life_s=1.0, mood_refresh_s=1.0)
    h.open("alice")
    h.send(fx.ReactionSent("alice", "love"))
    refreshes = 0
    out = h.advance(60.0)
    refreshes = dirty(out).count("mood")
    # intensity 1 halves every second: >= 0.1 at t+1, t+2, t+3; 0.0625 at t+4 -> stop
    assert refreshes == 4
    assert "mood" not in h.timers
    mood = h.room.state_frame("mood", h.now)
    assert mood.intensity == 0.0
    out = h.send(fx.ReactionSent("alice", "love"))
    assert len(of(out, fx.ArmTimer)) == 1  # a new reaction re-arms


def test_reaction_rate_limit_is_a_token_bucket_per_participant(make: Any) -> None:
    h = make(reactions_per_s=4.0, reaction_burst=3)
    h.open("alice", "bob")
    for _ in range(3):
        assert errors(h.send(fx.ReactionSent("alice", "joy"))) == []
    out = h.send(fx.ReactionSent("alice", "joy"))
    assert errors(out) == ["rate_limited"]
    assert not dirty(out)
    assert errors(h.send(fx.ReactionSent("bob", "sad"))) == []  # bob has his own bucket
    h.advance(0.2)  # 0.8 token: still limited
    assert errors(h.send(fx.ReactionSent("alice", "joy"))) == ["rate_limited"]
    h.advance(0.05)  # 0.2 s + 0.05 s at 4/s = 1 token (the failed try refilled and spent nothing)
    assert errors(h.send(fx.ReactionSent("alice", "joy"))) == []
    assert errors(h.send(fx.ReactionSent("alice", "joy"))) == ["rate_limited"]
    h.advance(100.0)  # refills to the burst, not beyond
    before = h.room.mood.read(h.now).reactions.get("joy", 0.0)
    results = [errors(h.send(fx.ReactionSent("alice", "joy"))) for _ in range(4)]
    assert results == [[], [], [], ["rate_limited"]]
    assert h.room.mood.read(h.now).reactions["joy"] == pytest.approx(before + 3.0, abs=0.01)


def test_rate_limited_reactions_do_not_move_the_mood(make: Any) -> None:
    h = make(reaction_burst=1)
    h.open("alice")
    h.send(fx.ReactionSent("alice", "joy"))
    for _ in range(5):
        h.send(fx.ReactionSent("alice", "anger"))
    snap = h.room.mood.read(h.now)
    assert (snap.intensity, snap.reactions) == (1.0, {"joy": 1.0})


def test_empty_reaction_is_invalid(h: Any) -> None:
    h.open("alice")
    out = h.send(fx.ReactionSent("alice"))
    assert errors(out) == ["invalid_message"]
    assert not dirty(out)


def test_continuous_sample_is_a_reaction(h: Any) -> None:
    h.open("alice")
    h.send(fx.ReactionSent("alice", valence=-0.5, arousal=0.25))
    snap = h.room.mood.read(h.now)
    assert (snap.valence, snap.arousal, snap.reactions) == (-0.5, 0.25, {})


def test_reactions_accepted_in_every_phase(h: Any) -> None:
    h.open("alice")
    seen = set()
    for step in ("narrating", "voting", "resolving"):
        assert h.room.phase.value == step
        seen.add(h.room.phase)
        assert dirty(h.send(fx.ReactionSent("alice", "joy"))) == ["mood"]
        if step == "narrating":
            h.to_voting()
        elif step == "voting":
            h.fire("vote_close")
    h.fire("reveal")
    h.fail()
    assert dirty(h.send(fx.ReactionSent("alice", "joy"))) == ["mood"]


def test_mood_decays_with_the_half_life(make: Any) -> None:
    h = make(mood_half_life_s=10.0)
    h.open("alice")
    h.send(fx.ReactionSent("alice", "sad"))
    h.advance(10.0)
    mood = h.room.state_frame("mood", h.now)
    assert mood.intensity == pytest.approx(0.5, abs=1e-3)
    assert (mood.valence, mood.arousal) == (-0.7, -0.4)


# --------------------------------------------------------------------------- presence


def test_presence_counts_distinct_participants(h: Any) -> None:
    assert h.send(fx.ViewerJoined("alice")) == [fx.MarkDirty("presence")]
    assert h.send(fx.ViewerJoined("alice")) == []  # a second connection
    assert h.room.viewer_count == 1
    assert h.send(fx.ViewerJoined("bob")) == [fx.MarkDirty("presence")]
    assert h.room.state_frame("presence", h.now) == m.Presence(viewers=2)
    assert h.send(fx.ViewerLeft("alice")) == []  # one connection of alice is left
    assert h.room.viewer_count == 2
    assert h.send(fx.ViewerLeft("alice")) == [fx.MarkDirty("presence")]
    assert h.room.state_frame("presence", h.now) == m.Presence(viewers=1)
    assert h.send(fx.ViewerLeft("alice")) == []  # already gone
    assert h.send(fx.ViewerLeft("nobody")) == []
    assert h.room.viewer_count == 1


# --------------------------------------------------------------------------- empty room at reveal


def test_pause_at_reveal_when_the_room_is_empty_and_resume(h: Any) -> None:
    h.open("alice")
    h.to_voting()
    h.vote("alice", 2)
    h.send(fx.ViewerLeft("alice"))
    assert h.room.phase is Phase.VOTING  # leaving does not stop the window
    h.fire("vote_close")
    out = h.fire("reveal")
    assert frames(out) == [m.Phase(phase="paused", beat=h.room.beat, reason="empty")]
    assert not of(out, fx.RequestNarration)
    assert len(h.narrations) == 1
    assert h.room.reason == "empty"

    out = h.send(fx.ViewerJoined("bob"))
    assert frames(out, m.BeatStart) == [m.BeatStart(beat=2, choice="C")]
    assert (h.narration.beat, h.narration.choice) == (2, "C")


def test_no_pause_at_reveal_when_disabled(make: Any) -> None:
    h = make(pause_when_empty=False)
    h.open()
    h.to_voting()
    h.fire("vote_close")
    out = h.fire("reveal")
    assert frames(out, m.BeatStart) == [m.BeatStart(beat=2, choice=h.room.choice)]


def test_leaving_mid_narration_does_not_pause(h: Any) -> None:
    h.open("alice")
    h.send(fx.ViewerLeft("alice"))
    assert h.room.phase is Phase.NARRATING
    out = h.narrate("Still told.")
    assert tags(out) == ["beat_end", "why"]


# --------------------------------------------------------------------------- narrator status


def test_narrator_status_published_on_change_only(h: Any) -> None:
    h.open("alice")
    assert h.send(fx.NarratorStatus("ok")) == []
    out = h.send(fx.NarratorStatus("busy", "queued behind 3 rooms"))
    assert frames(out) == [m.Narrator(state="busy", message="queued behind 3 rooms")]
    assert h.send(fx.NarratorStatus("busy", "other message")) == []
    assert h.room.snapshot(h.now, epoch="e", seq=1, participant=None).narrator == "busy"


# --------------------------------------------------------------------------- snapshot


def test_snapshot_while_narrating(h: Any) -> None:
    h.open("alice")
    h.play_beat("First.")
    h.narrate("Second ", "in progress", done=False)
    h.send(fx.ReactionSent("alice", "joy"))
    snap = h.room.snapshot(h.now, epoch="ep", seq=41, participant="alice")
    assert (snap.epoch, snap.seq, snap.title, snap.phase, snap.beat) == (
        "ep",
        41,
        "The Lantern Market",
        "narrating",
        2,
    )
    assert snap.story == [m.StoryBeat(beat=1, text="First.", choice=None)]
    assert snap.truncated is False
    assert snap.partial == "Second in progress"
    assert (snap.ballot, snap.tally, snap.my_vote, snap.reason) == (None, None, None, None)
    assert snap.viewers == 1
    assert snap.mood.reactions == {"joy": 1.0}
    assert (snap.mood.epoch, snap.mood.seq) == ("ep", 41)


def test_snapshot_while_voting(h: Any) -> None:
    h.open("alice", "bob")
    h.to_voting("Told.")
    h.vote("alice", 1)
    snap = h.room.snapshot(h.now, epoch="ep", seq=9, participant="alice")
    assert snap.phase == "voting"
    assert snap.beat == 1
    assert snap.story == [m.StoryBeat(beat=1, text="Told.")]
    assert snap.partial == ""
    assert snap.ballot is not None and snap.tally is not None
    assert [o.text for o in snap.ballot.options] == ["A", "B", "C"]
    assert (snap.tally.counts, snap.tally.voters) == ([0, 1, 0], 1)
    for nested in (snap.ballot, snap.tally, snap.mood):
        assert (nested.epoch, nested.seq) == (snap.epoch, snap.seq)
    assert snap.my_vote == 1
    assert h.room.snapshot(h.now, epoch="ep", seq=9, participant="bob").my_vote is None
    assert h.room.snapshot(h.now, epoch="ep", seq=9, participant=None).my_vote is None
    # the snapshot's frames are copies: the live state is unstamped
    assert h.room.state_frame("tally", h.now).seq == 0


def test_snapshot_truncates_the_story(make: Any) -> None:
    h = make(snapshot_beats=2)
    h.open("alice")
    for n in range(1, 4):
        h.play_beat(f"Beat {n}.")
    snap = h.room.snapshot(h.now, epoch="e", seq=1, participant=None)
    assert [b.beat for b in snap.story] == [2, 3]
    assert [b.text for b in snap.story] == ["Beat 2.", "Beat 3."]
    assert snap.truncated is True
    h2 = make(snapshot_beats=2)
    h2.open("alice")
    for n in range(1, 3):
        h2.play_beat(f"Beat {n}.")
    assert h2.room.snapshot(h2.now, epoch="e", seq=1, participant=None).truncated is False


def test_snapshot_encodes(h: Any) -> None:
    from fablecast.protocol.codec import JSON, MSGPACK

    h.open("alice")
    h.to_voting()
    snap = h.room.snapshot(h.now, epoch="e", seq=3, participant="alice")
    for codec in (JSON, MSGPACK):
        assert codec.decode_server(codec.encode(snap)) == snap


def test_snapshot_before_start(h: Any) -> None:
    snap = h.room.snapshot(h.now, epoch="e", seq=0, participant=None)
    assert (snap.phase, snap.reason, snap.beat, snap.story) == ("paused", "starting", 0, [])


def test_snapshot_beat_after_start_in_an_empty_room_is_zero(h: Any) -> None:
    out = h.send(fx.Start())
    assert frames(out, m.Phase)[0].beat == 0
    assert h.room.snapshot(h.now, epoch="e", seq=1, participant=None).beat == 0


def test_empty_pause_beat_does_not_depend_on_old_failures(make: Any) -> None:
    def paused_beat(choices_failure: bool) -> int:
        h = make()
        h.open("alice")
        h.narrate("Beat one.")
        if choices_failure:
            h.fail()
            h.fire("retry")
        h.offer("A", "B")
        h.send(fx.ViewerLeft("alice"))
        h.fire("vote_close")
        (phase,) = frames(h.fire("reveal"), m.Phase)
        assert (phase.phase, phase.reason) == ("paused", "empty")
        assert h.room.snapshot(h.now, epoch="e", seq=1, participant=None).beat == phase.beat
        return phase.beat

    assert paused_beat(False) == paused_beat(True)


# --------------------------------------------------------------------------- accepts / misc


def test_accepts_follows_the_phase(h: Any) -> None:
    h.open("alice")
    assert not h.room.accepts("vote")
    h.to_voting()
    assert h.room.accepts("vote")
    assert h.room.accepts("react")
    h.fire("vote_close")
    assert not h.room.accepts("vote")


def test_handle_is_deterministic(make: Any) -> None:
    def run() -> list[fx.Effect]:
        h = make(seed="x")
        h.open("a", "b")
        h.send(fx.ReactionSent("a", "joy"))
        h.play_beat("One.", votes={"a": 0, "b": 2})
        h.play_beat("Two.")
        return h.log

    assert run() == run()


def test_state_frame_kinds(h: Any) -> None:
    assert h.room.state_frame("tally", h.now) is None
    assert h.room.state_frame("presence", h.now) == m.Presence(viewers=0)
    assert h.room.state_frame("mood", h.now) == m.Mood(
        valence=0.0, arousal=0.0, intensity=0.0, reactions={}
    )
    assert isinstance(h.room.mood, MoodAggregator)


def test_a_long_story_is_held_bounded_with_absolute_beat_numbers(make: Any) -> None:
    h = make(snapshot_beats=3)  # below the floor: the room still holds MIN_STORY_MEMORY
    h.open("alice")
    keep = MIN_STORY_MEMORY
    for n in range(1, 3 * keep + 2):
        assert h.narration.beat == n
        h.play_beat(f"Beat {n}.", votes={"alice": 0})
        assert keep <= len(h.room.story) < keep + STORY_TRIM_SLACK or n < keep
        assert h.room.beats_told == n
        assert h.room.story[-1].beat == n and h.room.story[-1].text == f"Beat {n}."
    assert h.room.beats_forgotten + len(h.room.story) == 3 * keep + 1
    assert [b.beat for b in h.room.story] == list(range(h.room.beats_forgotten + 1, 3 * keep + 2))
    snap = h.room.snapshot(h.now, epoch="e", seq=1, participant="alice")
    assert [b.beat for b in snap.story] == [3 * keep - 1, 3 * keep, 3 * keep + 1]
    assert snap.truncated
    assert snap.beat == 3 * keep + 2  # the next beat is being narrated


# --------------------------------------------------------------------------- cue and why


def test_cue_goes_out_before_the_ballot_and_why_records_the_vote(h: Any) -> None:
    h.open("alice", "bob")
    h.narrate("Mira finds the lantern.")
    cue = m.Cue(
        beat=0,
        location="the market",
        time_of_day="night",
        weather="fog",
        lighting="dim",
        music="mysterious",
        characters=["Mira"],
        image_prompt="A courier holding a dark lantern in fog",
    )
    out = h.send(fx.ChoicesReady(h.choices.request, ("Mira runs", "Mira hides", "Mira waits"), cue))
    assert tags(out).index("cue") < tags(out).index("ballot")
    assert cue.beat == 1  # stamped with the beat it describes
    h.vote("alice", 2)
    h.vote("bob", 2)
    h.send(fx.ReactionSent("alice", reaction="fear"))
    h.fire("vote_close")
    h.fire("reveal")
    notes = fx.BeatNotes(
        tone="tense",
        directive="Make this scene tense.",
        state=m.StoryState(location="the market", present=["Mira"]),
        lore=("A fact.",),
    )
    out = h.send(fx.NarrationDelta(h.narration.request, "Mira waits. She listens."))
    out = h.send(fx.NarrationDone(h.narration.request, notes))
    (why,) = frames(out, m.Why)
    assert why.beat == 2 and why.choice == "Mira waits"
    assert why.ballot == ["Mira runs", "Mira hides", "Mira waits"]
    assert why.counts == [0, 0, 2] and why.winner == 2 and why.voters == 2
    assert why.tone == "tense" and why.lore == ["A fact."]
    assert why.state is not None and why.state.location == "the market"
    assert why.mood["reaction.fear"] > 0
    assert h.room.whys[-1] is why


def test_why_records_are_bounded(h: Any) -> None:
    h.open("alice")
    for _ in range(h.room.story_memory + 5):
        h.play_beat()
    assert len(h.room.whys) <= h.room.story_memory


def test_snapshot_carries_the_last_cue(h: Any) -> None:
    h.open("alice")
    h.narrate("Mira waits.")
    assert h.room.snapshot(h.now, epoch="e", seq=3, participant=None).cue is None
    cue = m.Cue(
        beat=0,
        location="the market",
        time_of_day="night",
        weather="fog",
        lighting="dim",
        music="calm",
        characters=["Mira"],
        image_prompt="A courier in the fog",
    )
    h.send(fx.ChoicesReady(h.choices.request, ("Mira runs", "Mira hides"), cue))
    snap = h.room.snapshot(h.now, epoch="e", seq=9, participant=None)
    assert snap.cue is not None and snap.cue.location == "the market"
    assert (snap.cue.epoch, snap.cue.seq, snap.cue.beat) == ("e", 9, 1)
