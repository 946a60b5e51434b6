"""server/room/moderation.py: the safety gate, holds and moderator actions, by plain calls."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from fablecast.protocol import messages as m
from fablecast.server.moderation.types import Principal
from fablecast.server.room import effects as fx
from fablecast.server.room.moderation import state_message
from fablecast.server.room.phases import Phase
from tests.server.room.conftest import Harness

MOD = Principal("mia", "moderator", "test")
HOST = Principal("hal", "host")
VIEWER = Principal("vic", "viewer")


def act(h: Harness, action: str, who: Principal = MOD, **fields: Any) -> list[fx.Effect]:
    return h.send(fx.Moderated(who, m.Moderate(action=action, ref="r1", **fields)))  # type: ignore[arg-type]


def replies(out: list[fx.Effect]) -> list[m.ServerMessage]:
    return [e.message for e in out if isinstance(e, fx.Reply)]


def acked(out: list[fx.Effect]) -> bool:
    return any(isinstance(r, m.ModAck) and r.ref == "r1" for r in replies(out))


def refused(out: list[fx.Effect]) -> str | None:
    errors = [r for r in replies(out) if isinstance(r, m.Error)]
    return errors[0].code if errors else None


def texts(out: list[fx.Effect]) -> str:
    return "".join(e.text for e in out if isinstance(e, fx.AppendText))


def published(out: list[fx.Effect], kind: type) -> list[Any]:
    return [e.frame for e in out if isinstance(e, fx.Publish) and isinstance(e.frame, kind)]


@pytest.fixture
def gated(make: Callable[..., Harness]) -> Harness:
    h = make(filter=True, blocked_terms=("grue",), filter_retries=1)
    h.open("alice", "bob")
    return h


# ------------------------------------------------------------------ the gate


def test_filter_streams_clean_text_through_the_holdback(gated: Harness) -> None:
    out = gated.narrate(*"The lantern glows over the market square.", done=False)
    shown = texts(out)
    assert shown and "The lantern glows over the market square.".startswith(shown)
    assert gated.room.partial.text() == shown  # a late joiner sees only released text
    out = gated.send(fx.NarrationDone(gated.narration.request))
    assert shown + texts(out) == "The lantern glows over the market square."
    assert published(out, m.BeatEnd)[0].text == "The lantern glows over the market square."


def test_blocked_term_split_across_deltas_is_withheld_and_the_beat_retold(gated: Harness) -> None:
    first = gated.narration.request
    out = gated.narrate("A g", "r", "ue comes out of the dark alley now.", done=False)
    assert "g" not in texts(out).replace("A ", "", 1) and "grue" not in texts(out)
    assert first in gated.cancelled
    assert published(out, m.BeatAbort)[0].reason == "withheld by the safety filter"
    assert gated.narration.request != first and gated.room.phase is Phase.NARRATING
    assert gated.room.partial.text() == ""


def test_after_the_retries_a_blocked_beat_is_held(gated: Harness) -> None:
    gated.narrate("the grue.", done=True)  # told again (filter_retries=1)
    out = gated.narrate("the grue again.", done=True)
    holds = gated.room.mod.holds
    assert len(holds) == 1 and not any(isinstance(e, fx.RequestNarration) for e in out)
    held = next(iter(holds.values()))
    assert "grue" in held.reason and held.text == "the grue again." and held.aborted
    assert any(isinstance(e, fx.ModeratorsDirty) for e in out)


def test_filter_failure_holds_the_beat(make: Callable[..., Harness]) -> None:
    def broken(text: str) -> bool:
        raise RuntimeError("classifier down")

    h = make(filter=True, classifier=broken)
    h.open("alice")
    out = h.narrate("Some clean enough text that passes the word list.")
    assert texts(out) == "" and not published(out, m.BeatEnd)
    (held,) = h.room.mod.holds.values()
    assert held.reason.startswith("filter unavailable")


def test_approval_holds_each_beat_and_streams_nothing(make: Callable[..., Harness]) -> None:
    h = make(filter=True, approval=True)
    h.open("alice")
    out = h.narrate("Beat one, ", "for a moderator.")
    assert texts(out) == "" and h.room.partial.text() == ""
    (held,) = h.room.mod.holds.values()
    assert held.text == "Beat one, for a moderator." and held.reason == "approval"
    out = act(h, "approve", hold=held.hold)
    assert acked(out) and texts(out) == "Beat one, for a moderator."
    assert published(out, m.BeatEnd)[0].beat == 1 and h.room.beats_told == 1
    assert not h.room.mod.holds
    # The same hold again: no longer held, nothing changes.
    again = act(h, "approve", hold=held.hold)
    assert refused(again) == "not_held" and h.room.beats_told == 1


def test_approval_holds_carry_the_filters_verdict(make: Callable[..., Harness]) -> None:
    h = make(filter=True, approval=True, blocked_terms=("grue",))
    h.open("alice")
    h.narrate("A g", "rue ", "waits.")
    (held,) = h.room.mod.holds.values()
    assert held.reason == "approval; filter: blocked term 'grue'"
    assert texts(h.log) == ""


def test_approval_toggles_apply_from_the_next_beat(h: Harness) -> None:
    h.open("alice")
    h.narrate("Streamed ", done=False)
    act(h, "approval", on=True)
    out = h.narrate("to the end.")
    assert texts(out) == "to the end." and published(out, m.BeatEnd)
    h.offer("A", "B")
    h.fire("vote_close")
    h.fire("reveal")
    h.narrate("Held whole, ", done=False)
    act(h, "approval", on=False)
    out = h.narrate("still held.")
    assert texts(out) == "" and len(h.room.mod.holds) == 1


def test_edit_commits_the_moderators_text_within_limits(make: Callable[..., Harness]) -> None:
    h = make(approval=True, max_edit_chars=20)
    h.open("alice")
    h.narrate("Original text.")
    (held,) = h.room.mod.holds.values()
    assert refused(act(h, "edit", hold=held.hold, text="x" * 21)) == "over_limit"
    assert h.room.mod.holds and h.room.beats_told == 0
    out = act(h, "edit", hold=held.hold, text="Edited.")
    assert acked(out) and published(out, m.BeatEnd)[0].text == "Edited."


def test_reject_retells_and_the_text_never_streams(make: Callable[..., Harness]) -> None:
    h = make(approval=True)
    h.open("alice")
    h.narrate("A bad beat.")
    (held,) = h.room.mod.holds.values()
    first = h.narration.request
    out = act(h, "reject", hold=held.hold)
    assert acked(out) and texts(h.log) == ""
    assert published(out, m.BeatAbort) and h.narration.request != first


# ------------------------------------------------------------------ authorization


@pytest.mark.parametrize(
    "who",
    [VIEWER, Principal("o", "overlay"), Principal("m2", "moderator", "other")],
)
def test_unauthorized_moderation_changes_nothing_and_is_audited(h: Harness, who: Principal) -> None:
    h.open("alice")
    h.to_voting()
    before = (h.room.phase, h.room.window, h.room.mod.paused)
    for action, fields in [("pause", {}), ("close_vote", {}), ("veto", {"option": 0})]:
        out = act(h, action, who, **fields)
        assert refused(out) == "forbidden"
        assert not any(isinstance(e, (fx.Publish, fx.ArmTimer)) for e in out)
    assert (h.room.phase, h.room.window, h.room.mod.paused) == before
    assert h.room.window is not None and not h.room.window.vetoed
    audit = list(h.room.mod.audit)
    assert [a.outcome for a in audit] == ["forbidden"] * 3 and audit[0].subject == who.subject


def test_a_host_with_an_unscoped_token_may_moderate(h: Harness) -> None:
    h.open("alice")
    assert acked(act(h, "inject", HOST, text="A storm breaks."))


# ------------------------------------------------------------------ pause, resume, kill


def test_pause_during_voting_keeps_votes_and_time_left(h: Harness) -> None:
    h.open("alice", "bob")
    h.to_voting()
    h.vote("alice", 1)
    h.advance(5)
    out = act(h, "pause")
    assert acked(out) and h.room.phase is Phase.PAUSED and h.room.reason == "moderator"
    assert refused(h.vote("bob", 0)) == "not_in_phase"
    h.advance(60)  # the old close timer is stale
    assert h.room.window is not None
    out = act(h, "resume")
    assert h.room.phase is Phase.VOTING
    ballot = published(out, m.Ballot)[0]
    assert ballot.duration_ms == 10_000 and h.room.window.votes == {"alice": 1}
    h.advance(10)
    assert h.room.phase is Phase.RESOLVING and h.room.last_result is not None
    assert h.room.last_result.winner == 1


def test_pause_while_narrating_aborts_and_resume_retells(h: Harness) -> None:
    h.open("alice")
    request = h.narration.request
    h.narrate("half a", done=False)
    out = act(h, "pause")
    assert request in h.cancelled and published(out, m.BeatAbort)
    assert h.send(fx.NarrationDelta(request, "late")) == []  # stale request
    assert refused(act(h, "pause")) == "not_in_phase"
    out = act(h, "resume")
    assert h.room.phase is Phase.NARRATING and h.narration.request != request
    assert published(out, m.BeatStart)[0].beat == 1


def test_a_join_does_not_end_a_moderators_pause(make: Callable[..., Harness]) -> None:
    h = make()
    h.send(fx.Start())
    act(h, "pause")
    h.send(fx.ViewerJoined("alice"))
    assert h.room.phase is Phase.PAUSED and h.room.reason == "moderator"


def test_kill_drops_window_and_holds_and_resume_writes_a_new_ballot(h: Harness) -> None:
    h.open("alice")
    h.to_voting()
    out = act(h, "kill")
    assert h.room.reason == "killed" and h.room.window is None and acked(out)
    assert refused(act(h, "pause")) == "not_in_phase"
    n = len(h.choice_requests)
    act(h, "resume")
    assert len(h.choice_requests) == n + 1 and h.room.phase is Phase.NARRATING


def test_pause_drops_a_held_beat(make: Callable[..., Harness]) -> None:
    h = make(approval=True)
    h.open("alice")
    h.narrate("Held beat.")
    (held,) = h.room.mod.holds.values()
    act(h, "pause")
    assert refused(act(h, "approve", hold=held.hold)) == "not_held"


# ------------------------------------------------------------------ votes


def test_close_vote_early(h: Harness) -> None:
    h.open("alice")
    assert refused(act(h, "close_vote")) == "not_in_phase"
    h.to_voting()
    h.vote("alice", 2)
    out = act(h, "close_vote")
    assert published(out, m.VoteResult)[0].winner == 2 and h.room.phase is Phase.RESOLVING


def test_veto_drops_votes_blocks_the_option_and_keeps_one(h: Harness) -> None:
    h.open("alice", "bob")
    h.to_voting()
    h.vote("alice", 0)
    h.vote("bob", 0)
    w = h.room.window
    assert w is not None
    out = act(h, "veto", window=w.window, option=0)
    assert published(out, m.Ballot)[0].vetoed == [0] and w.counts == [0, 0, 0]
    assert refused(h.vote("alice", 0)) == "unknown_option"
    assert refused(act(h, "veto", option=0)) == "unknown_option"
    assert refused(act(h, "veto", window=w.window + 1, option=1)) == "window_closed"
    assert acked(act(h, "veto", option=1))
    assert refused(act(h, "veto", option=2)) == "over_limit"
    out = h.fire("vote_close")
    assert published(out, m.VoteResult)[0].winner == 2


def test_veto_option_never_wins_a_draw(make: Callable[..., Harness]) -> None:
    for seed in range(10):
        h = make(seed=f"s{seed}")
        h.open("alice")
        h.to_voting()
        act(h, "veto", option=0)
        act(h, "veto", option=1)
        assert published(h.fire("vote_close"), m.VoteResult)[0].winner == 2


# ------------------------------------------------------------------ inject, mute, ban


def test_inject_goes_into_the_next_narration_once(h: Harness) -> None:
    h.open("alice")
    assert refused(act(h, "inject", text="x" * 281)) == "over_limit"
    act(h, "inject", text="A dragon lands.")
    h.play_beat()
    assert h.narration.event == "A dragon lands."
    h.play_beat()
    assert h.narration.event is None


def test_mute_drops_votes_and_reactions(h: Harness) -> None:
    h.open("alice")
    h.to_voting()
    act(h, "mute", participant="alice")
    assert refused(h.vote("alice", 0)) == "muted"
    assert refused(h.send(fx.ReactionSent("alice", "joy"))) == "muted"
    act(h, "unmute", participant="alice")
    assert replies(h.vote("alice", 0))[0] == m.VoteAck(window=1, option=0, status="counted")


def test_ban_disconnects_drops_the_vote_and_refuses_rejoin(h: Harness) -> None:
    h.open("alice", "bob")
    h.to_voting()
    h.vote("alice", 1)
    out = act(h, "ban", participant="alice", reason="spam")
    assert fx.Disconnect("alice", "spam") in out
    assert "alice" not in h.room.viewers and h.room.window is not None
    assert h.room.window.counts == [0, 0, 0]
    assert h.send(fx.ViewerJoined("alice")) == [fx.Disconnect("alice", "banned by a moderator")]
    assert "alice" not in h.room.viewers
    act(h, "unban", participant="alice")
    h.send(fx.ViewerJoined("alice"))
    assert "alice" in h.room.viewers


def test_missing_fields_are_refused(h: Harness) -> None:
    h.open("alice")
    assert refused(act(h, "ban")) == "invalid_message"
    assert refused(act(h, "approve")) == "invalid_message"
    assert refused(act(h, "approval")) == "invalid_message"


def test_watch_and_the_state_view(make: Callable[..., Harness]) -> None:
    h = make(approval=True, filter=True)
    h.open("alice")
    out = act(h, "watch")
    assert fx.Watch() in out
    h.narrate("Held.")
    act(h, "mute", participant="bob")
    view = state_message(h.room)
    assert view.approval and view.muted == ["bob"] and view.holds[0].text == "Held."
    assert [a.action for a in view.audit] == ["watch", "mute"]
    assert view.filter.startswith("family")


def test_ballot_options_pass_the_filter(make: Callable[..., Harness]) -> None:
    h = make(filter=True, blocked_terms=("grue",))
    h.open("alice")
    h.narrate("A clean beat about lanterns and markets in the evening light.")
    out = h.offer("Follow the grue", "Ring the bell", "Open the door")
    (ballot,) = published(out, m.Ballot)
    assert [o.text for o in ballot.options] == ["Ring the bell", "Open the door"]


def test_too_few_clean_options_ask_again(make: Callable[..., Harness]) -> None:
    h = make(filter=True, blocked_terms=("grue",))
    h.open("alice")
    h.narrate("A clean beat about lanterns and markets in the evening light.")
    out = h.offer("Feed the grue", "Ring the bell")
    assert not published(out, m.Ballot) and h.room.phase is Phase.PAUSED


def test_a_cue_with_a_blocked_field_is_not_sent(make: Callable[..., Harness]) -> None:
    h = make(filter=True, blocked_terms=("grue",))
    h.open("alice")
    h.narrate("A clean beat about lanterns and markets in the evening light.")
    fields = {
        "beat": 0,
        "time_of_day": "night",
        "weather": "fog",
        "lighting": "lanterns",
        "music": "strings",
        "characters": ["Mira"],
        "image_prompt": "a foggy market",
    }
    bad = m.Cue(location="the grue den", **fields)  # type: ignore[arg-type]
    out = h.send(fx.ChoicesReady(h.choices.request, ("A", "B"), bad))
    assert not published(out, m.Cue) and published(out, m.Ballot)
    h.fire("vote_close")
    h.fire("reveal")
    h.narrate("Another clean beat about the quiet market square at dusk.")
    good = m.Cue(location="the market", **fields)  # type: ignore[arg-type]
    out = h.send(fx.ChoicesReady(h.choices.request, ("A", "B"), good))
    assert published(out, m.Cue)


def test_a_story_state_with_blocked_text_is_neither_kept_nor_logged(
    make: Callable[..., Harness],
) -> None:
    h = make(filter=True, blocked_terms=("grue",))
    h.open("alice")
    h.narrate("A clean beat about lanterns and markets in the evening light.")
    state = {"summary": "Mira meets Lena", "location": "the market", "threads": ["The grue"]}
    out = h.send(fx.ChoicesReady(h.choices.request, ("A", "B"), None, state))
    assert not [e for e in out if isinstance(e, fx.Record)] and published(out, m.Ballot)
    assert h.room.story[-1].state is None
    h.fire("vote_close")
    h.fire("reveal")
    h.narrate("Another clean beat about the quiet market square at dusk.")
    state["threads"] = ["Who rang the bell"]
    out = h.send(fx.ChoicesReady(h.choices.request, ("A", "B"), None, state))
    (record,) = [e for e in out if isinstance(e, fx.Record)]
    assert record.kind == "state" and record.data["beat"] == h.room.story[-1].beat
    assert h.room.story[-1].state == state


def test_a_pause_while_the_engine_warms_up_waits_for_it(make: Callable[..., Harness]) -> None:
    h = make()
    h.send(fx.Start(engine_ready=False))
    h.send(fx.ViewerJoined("alice"))
    act(h, "pause")
    act(h, "resume")
    assert h.room.reason == "starting" and not h.narrations
    act(h, "pause")
    h.send(fx.EngineReady())
    assert h.room.reason == "moderator" and not h.narrations
    act(h, "resume")
    assert h.room.phase is Phase.NARRATING and len(h.narrations) == 1


def test_restore_replays_mutes_bans_and_approval(h: Harness) -> None:
    from fablecast.server.room.moderation import restore

    restore(
        h.room,
        [
            {"action": "ban", "outcome": "ok", "participant": "bob"},
            {"action": "ban", "outcome": "forbidden", "participant": "amy"},
            {"action": "mute", "outcome": "ok", "participant": "eve"},
            {"action": "unban", "outcome": "ok", "participant": "bob"},
            {"action": "ban", "outcome": "ok", "participant": "zed"},
            {"action": "approval", "outcome": "ok", "on": True},
            {"action": "pause", "outcome": "ok"},
            {"action": "mute", "outcome": "ok"},
        ],
    )
    mod = h.room.mod
    assert (mod.banned, mod.muted, mod.approval, mod.paused) == ({"zed"}, {"eve"}, True, None)
