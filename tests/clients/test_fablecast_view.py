"""StoryView: applying server messages, no network."""

from __future__ import annotations

import pytest

from fablecast.client.view import StoryView
from fablecast.protocol.messages import (
    Ballot,
    BeatAbort,
    BeatEnd,
    BeatStart,
    Error,
    Narrator,
    Option,
    Phase,
    Pong,
    Presence,
    Rewind,
    StoryBeat,
    Tally,
    VoteAck,
    VoteResult,
)
from tests.clients.sdk_support import mood, snapshot, token, welcome


class Clock:
    """A settable clock."""

    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def mono() -> Clock:
    return Clock(100.0)


@pytest.fixture
def wall() -> Clock:
    return Clock(1_700_000_000.0)


@pytest.fixture
def view(mono: Clock, wall: Clock) -> StoryView:
    return StoryView(monotonic=mono, wall=wall)


def ballot(seq: int = 10, window: int = 1, n: int = 3, duration_ms: int = 15_000) -> Ballot:
    return Ballot(
        epoch="e1",
        seq=seq,
        window=window,
        beat=1,
        options=[Option(index=i, text=f"option {i}") for i in range(n)],
        duration_ms=duration_ms,
        closes_at_ms=0,
    )


def tally(counts: list[int], window: int = 1, seq: int = 11) -> Tally:
    return Tally(epoch="e1", seq=seq, window=window, counts=counts, voters=sum(counts))


def result(window: int = 1, winner: int = 1, seq: int = 12) -> VoteResult:
    return VoteResult(
        epoch="e1",
        seq=seq,
        window=window,
        winner=winner,
        text="option 1",
        counts=[1, 2, 0],
        voters=3,
    )


# --------------------------------------------------------------------------- narration


def test_tokens_append_to_the_current_beat(view: StoryView) -> None:
    view.apply(BeatStart(epoch="e1", seq=1, beat=1, choice=None))
    view.apply(token(2, "Once "))
    view.apply(token(3, "upon a time"))
    assert view.partial == "Once upon a time"
    assert view.current_beat == 1
    assert view.story == []
    assert view.text == "Once upon a time"
    assert view.seq == 3 and view.epoch == "e1"


def test_beat_end_commits_with_the_choice_that_led_to_it(view: StoryView) -> None:
    view.apply(BeatStart(epoch="e1", seq=1, beat=2, choice="Open the door"))
    view.apply(token(2, "It creaks.", beat=2))
    view.apply(BeatEnd(epoch="e1", seq=3, beat=2, text="It creaks open."))
    assert view.story == [StoryBeat(beat=2, text="It creaks open.", choice="Open the door")]
    assert view.partial == ""
    assert view.current_beat is None and view.current_choice is None
    assert view.beat == 2


def test_beat_end_text_wins_over_streamed_text(view: StoryView) -> None:
    # Joined mid-beat: only part of the text streamed, the end carries the whole beat.
    view.apply(token(5, "end of it.", beat=1))
    view.apply(BeatEnd(epoch="e1", seq=6, beat=1, text="The start and end of it."))
    assert view.text == "The start and end of it."


def test_a_repeated_beat_end_replaces_rather_than_duplicates(view: StoryView) -> None:
    view.apply(BeatEnd(epoch="e1", seq=1, beat=1, text="one"))
    view.apply(BeatEnd(epoch="e1", seq=2, beat=1, text="one, corrected"))
    assert [b.text for b in view.story] == ["one, corrected"]


def test_a_rewind_replaces_the_story_and_closes_what_was_open(view: StoryView) -> None:
    view.apply(BeatEnd(epoch="e1", seq=1, beat=1, text="one"))
    view.apply(BeatEnd(epoch="e1", seq=2, beat=2, text="two"))
    view.apply(ballot(seq=3))
    view.apply(token(4, "three...", beat=3))
    view.apply(Rewind(epoch="e1", seq=5, beat=1, branch=1, story=[StoryBeat(beat=1, text="one")]))
    assert view.story == [StoryBeat(beat=1, text="one")] and view.beat == 1
    assert view.ballot is None and view.partial == "" and view.current_beat is None
    assert view.seq == 5 and view.text == "one"


def test_beat_start_clears_partial_text(view: StoryView) -> None:
    view.apply(token(1, "stale"))
    view.apply(BeatStart(epoch="e1", seq=2, beat=2, choice="x"))
    assert view.partial == "" and view.current_beat == 2 and view.current_choice == "x"


def test_token_of_another_beat_starts_fresh(view: StoryView) -> None:
    view.apply(token(1, "beat one ", beat=1))
    view.apply(token(2, "beat two", beat=2))
    assert view.partial == "beat two" and view.current_beat == 2


def test_beat_abort_discards_the_partial_and_the_beat_is_retold(view: StoryView) -> None:
    view.apply(BeatEnd(epoch="e1", seq=1, beat=1, text="first"))
    view.apply(BeatStart(epoch="e1", seq=2, beat=2, choice="c"))
    view.apply(token(3, "half a sen", beat=2))
    view.apply(BeatAbort(epoch="e1", seq=4, beat=2, reason="engine_error"))
    assert view.partial == ""
    assert view.last_abort is not None and view.last_abort.reason == "engine_error"
    assert view.text == "first"
    view.apply(BeatStart(epoch="e1", seq=5, beat=2, choice="c"))
    view.apply(token(6, "A whole sentence.", beat=2))
    view.apply(BeatEnd(epoch="e1", seq=7, beat=2, text="A whole sentence."))
    assert view.text == "first\n\nA whole sentence."
    assert [b.beat for b in view.story] == [1, 2]


def test_abort_of_another_beat_keeps_the_current_text(view: StoryView) -> None:
    view.apply(token(1, "keep me", beat=3))
    view.apply(BeatAbort(epoch="e1", seq=2, beat=2, reason="late"))
    assert view.partial == "keep me"


# --------------------------------------------------------------------------- voting


def test_ballot_opens_with_zero_counts_and_counts_down(view: StoryView, mono: Clock) -> None:
    view.apply(ballot(duration_ms=15_000))
    assert view.ballot is not None
    assert view.ballot.counts == [0, 0, 0]
    assert [o.text for o in view.ballot.options] == ["option 0", "option 1", "option 2"]
    assert view.remaining_s() == pytest.approx(15.0)
    mono.t += 10
    assert view.remaining_s() == pytest.approx(5.0)
    mono.t += 10
    assert view.remaining_s() == 0.0


def test_no_ballot_means_no_remaining_time(view: StoryView) -> None:
    assert view.remaining_s() is None


def test_tally_updates_only_its_window(view: StoryView) -> None:
    view.apply(ballot(window=4))
    view.apply(tally([1, 2, 3], window=4))
    assert view.ballot is not None
    assert view.ballot.counts == [1, 2, 3] and view.ballot.voters == 6
    view.apply(tally([9, 9, 9], window=3, seq=12))
    assert view.ballot.counts == [1, 2, 3]


def test_tally_without_ballot_is_ignored(view: StoryView) -> None:
    view.apply(tally([1, 0, 0]))
    assert view.ballot is None


def test_vote_result_closes_the_ballot(view: StoryView) -> None:
    view.apply(ballot())
    view.apply(result())
    assert view.ballot is None
    assert view.last_result is not None and view.last_result.winner == 1


def test_vote_result_of_another_window_keeps_the_open_ballot(view: StoryView) -> None:
    view.apply(ballot(window=2))
    view.apply(result(window=1))
    assert view.ballot is not None and view.ballot.window == 2


def test_vote_ack_records_my_vote(view: StoryView) -> None:
    view.apply(ballot(window=2))
    view.apply(VoteAck(window=2, option=1, status="counted"))
    assert view.ballot is not None and view.ballot.my_vote == 1
    view.apply(VoteAck(window=1, option=2, status="counted"))  # stale window: ignored
    assert view.ballot.my_vote == 1


# --------------------------------------------------------------------------- room state


def test_mood_presence_phase_narrator(view: StoryView) -> None:
    view.apply(mood(valence=0.5, arousal=0.2, intensity=0.3, reactions={"joy": 1.0}))
    view.apply(Presence(epoch="e1", seq=2, viewers=42))
    view.apply(Phase(epoch="e1", seq=3, phase="paused", beat=4, reason="engine_down"))
    view.apply(Narrator(epoch="e1", seq=4, state="stalled", message="slow"))
    assert view.mood is not None and view.mood.valence == 0.5
    assert view.viewers == 42
    assert (view.phase, view.beat, view.reason) == ("paused", 4, "engine_down")
    assert (view.narrator, view.narrator_message) == ("stalled", "slow")
    assert view.seq == 4


def test_welcome_error_and_pong(view: StoryView) -> None:
    view.apply(welcome(participant="me", seq=99))
    assert view.participant == "me"
    assert view.seq is None  # personal messages carry no room seq
    view.apply(Error(code="window_closed", message="late"))
    assert view.last_error is not None and view.last_error.code == "window_closed"
    view.apply(Pong(nonce=1, server_time_ms=5))
    assert view.applied == 3


# --------------------------------------------------------------------------- snapshot


def test_snapshot_resets_everything(view: StoryView, mono: Clock, wall: Clock) -> None:
    view.apply(BeatEnd(epoch="old", seq=1, beat=1, text="old story"))
    view.apply(token(2, "old partial", epoch="old", beat=2))
    view.apply(BeatAbort(epoch="old", seq=3, beat=2, reason="x"))
    view.apply(ballot(window=9))
    closes = int((wall.t + 6.0) * 1000)
    snap = snapshot(
        epoch="e2",
        seq=40,
        title="The Drowned Library",
        phase="voting",
        beat=3,
        story=[StoryBeat(beat=1, text="One."), StoryBeat(beat=2, text="Two.", choice="go")],
        truncated=True,
        partial="",
        ballot=Ballot(
            epoch="e2",
            seq=39,
            window=3,
            beat=3,
            options=[Option(index=0, text="a"), Option(index=1, text="b")],
            duration_ms=10_000,
            closes_at_ms=closes,
        ),
        tally=Tally(epoch="e2", seq=40, window=3, counts=[2, 5], voters=7),
        viewers=12,
        narrator="busy",
        my_vote=1,
    )
    view.apply(snap)
    assert (view.epoch, view.seq, view.title) == ("e2", 40, "The Drowned Library")
    assert view.text == "One.\n\nTwo."
    assert view.truncated
    assert view.partial == "" and view.current_beat is None
    assert view.last_abort is None
    assert view.viewers == 12 and view.narrator == "busy" and view.phase == "voting"
    assert view.ballot is not None
    assert view.ballot.window == 3
    assert view.ballot.counts == [2, 5] and view.ballot.voters == 7
    assert view.ballot.my_vote == 1
    assert view.remaining_s() == pytest.approx(6.0)


def test_snapshot_ballot_time_is_bounded_by_its_duration(view: StoryView, wall: Clock) -> None:
    far = int((wall.t + 3600) * 1000)  # server clock far ahead of ours
    b = Ballot(
        epoch="e1",
        seq=1,
        window=1,
        beat=1,
        options=[Option(index=0, text="a")],
        duration_ms=5_000,
        closes_at_ms=far,
    )
    view.apply(snapshot(seq=1, ballot=b, tally=None))
    assert view.remaining_s() == pytest.approx(5.0)
    past = Ballot(
        epoch="e1",
        seq=1,
        window=1,
        beat=1,
        options=[Option(index=0, text="a")],
        duration_ms=5_000,
        closes_at_ms=0,
    )
    view.apply(snapshot(seq=1, ballot=past, tally=None))
    assert view.remaining_s() == 0.0
    assert view.ballot is not None and view.ballot.counts == [0]


def test_snapshot_mid_beat_then_tokens_continue(view: StoryView) -> None:
    view.apply(snapshot(seq=7, beat=2, partial="The door ", story=[StoryBeat(beat=1, text="A.")]))
    assert view.current_beat == 2
    view.apply(token(8, "opens.", beat=2))
    assert view.text == "A.\n\nThe door opens."
    view.apply(BeatEnd(epoch="e1", seq=9, beat=2, text="The door opens."))
    assert [b.text for b in view.story] == ["A.", "The door opens."]
