"""``StoryView``: the state of one room as seen by a client, built from server messages.

Pure state, no I/O: feed it every message with ``apply`` (a ``snapshot`` resets
it) and read the story so far, the beat being told, the open ballot with its live
tally, the last vote result, the mood, the viewer count and the phase.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from fablecast.protocol.messages import (
    Ballot,
    BeatAbort,
    BeatEnd,
    BeatStart,
    Error,
    Mood,
    Narrator,
    Option,
    Phase,
    Presence,
    Rewind,
    ServerMessage,
    Snapshot,
    StoryBeat,
    Tally,
    Token,
    VoteAck,
    VoteResult,
    Welcome,
)

__all__ = ["BallotView", "StoryView"]


@dataclass(slots=True)
class BallotView:
    """The open vote window: its options, live counts and deadline (local monotonic time)."""

    window: int
    beat: int
    options: list[Option]
    duration_ms: int
    closes_at_ms: int
    deadline: float
    counts: list[int]
    voters: int = 0
    my_vote: int | None = None

    def remaining_s(self, now: float) -> float:
        """Seconds until the window closes, as of monotonic time ``now`` (never negative)."""
        return max(0.0, self.deadline - now)


@dataclass(slots=True)
class StoryView:
    """The client-side state of one room, kept current by ``apply``.

    ``monotonic`` and ``wall`` are the clocks (injectable for tests): a live ``ballot``
    closes ``duration_ms`` after it arrives; a ballot from a snapshot closes at its
    ``closes_at_ms`` (server wall time), bounded by its duration.
    """

    monotonic: Callable[[], float] = time.monotonic
    wall: Callable[[], float] = time.time
    participant: str | None = None
    title: str = ""
    epoch: str | None = None
    seq: int | None = None
    phase: str | None = None
    reason: str | None = None
    beat: int = 0
    story: list[StoryBeat] = field(default_factory=list)
    truncated: bool = False
    #: The number of the beat being told, or None between beats.
    current_beat: int | None = None
    #: The winning option text that drives the current beat.
    current_choice: str | None = None
    #: The text of the current beat so far.
    partial: str = ""
    ballot: BallotView | None = None
    last_result: VoteResult | None = None
    last_abort: BeatAbort | None = None
    last_error: Error | None = None
    mood: Mood | None = None
    viewers: int = 0
    narrator: str = "ok"
    narrator_message: str = ""
    #: How many messages were applied in all.
    applied: int = 0

    # ----------------------------------------------------------------- reading

    @property
    def text(self) -> str:
        """The whole story so far (committed beats and the partial one), as paragraphs."""
        parts = [b.text for b in self.story]
        if self.partial:
            parts.append(self.partial)
        return "\n\n".join(parts)

    def remaining_s(self) -> float | None:
        """Seconds left in the open vote window, or None when none is open."""
        if self.ballot is None:
            return None
        return self.ballot.remaining_s(self.monotonic())

    # ----------------------------------------------------------------- applying

    def apply(self, msg: ServerMessage) -> None:
        """Apply one server message (any type; unknown or personal ones are recorded)."""
        self.applied += 1
        if isinstance(msg, Snapshot):
            self._snapshot(msg)
            return
        seq = getattr(msg, "seq", None)
        if isinstance(seq, int) and not isinstance(msg, Welcome):
            self.seq = seq
            self.epoch = getattr(msg, "epoch", self.epoch)
        if isinstance(msg, Token):
            if self.current_beat is not None and msg.beat != self.current_beat:
                # Joined mid-beat without a beat_start (or a new beat without one).
                self.partial = ""
                self.current_choice = None
            self.current_beat = msg.beat
            self.beat = msg.beat
            self.partial += msg.text
        elif isinstance(msg, BeatStart):
            self.current_beat = msg.beat
            self.beat = msg.beat
            self.current_choice = msg.choice
            self.partial = ""
        elif isinstance(msg, BeatEnd):
            self._commit(msg)
        elif isinstance(msg, BeatAbort):
            self.last_abort = msg
            if self.current_beat is None or self.current_beat == msg.beat:
                self.partial = ""
        elif isinstance(msg, Ballot):
            self._open_ballot(msg, self.monotonic() + msg.duration_ms / 1000.0)
        elif isinstance(msg, Tally):
            ballot = self.ballot
            if ballot is not None and ballot.window == msg.window:
                ballot.counts = list(msg.counts)
                ballot.voters = msg.voters
        elif isinstance(msg, VoteResult):
            self.last_result = msg
            if self.ballot is not None and self.ballot.window == msg.window:
                self.ballot = None
        elif isinstance(msg, Mood):
            self.mood = msg
        elif isinstance(msg, Presence):
            self.viewers = msg.viewers
        elif isinstance(msg, Phase):
            self.phase = msg.phase
            self.beat = msg.beat
            self.reason = msg.reason
        elif isinstance(msg, Rewind):
            # The story was rewound: it is now ``msg.story``; nothing open survives.
            self.story = list(msg.story)
            self.truncated = msg.truncated
            self.beat = msg.beat
            self.current_beat = None
            self.current_choice = None
            self.partial = ""
            self.ballot = None
        elif isinstance(msg, Narrator):
            self.narrator = msg.state
            self.narrator_message = msg.message
        elif isinstance(msg, Welcome):
            self.participant = msg.participant
            if msg.recovered:
                self.epoch = msg.epoch
        elif isinstance(msg, VoteAck):
            if self.ballot is not None and self.ballot.window == msg.window:
                self.ballot.my_vote = msg.option
        elif isinstance(msg, Error):
            self.last_error = msg
        # Pong and anything newer: nothing to keep.

    def _commit(self, msg: BeatEnd) -> None:
        choice = self.current_choice if self.current_beat == msg.beat else None
        committed = StoryBeat(beat=msg.beat, text=msg.text, choice=choice)
        if self.story and self.story[-1].beat == msg.beat:
            self.story[-1] = committed  # a re-sent end replaces, never duplicates
        else:
            self.story.append(committed)
        self.beat = msg.beat
        if self.current_beat is None or self.current_beat == msg.beat:
            self.current_beat = None
            self.current_choice = None
            self.partial = ""

    def _open_ballot(self, msg: Ballot, deadline: float, my_vote: int | None = None) -> None:
        counts = [0] * len(msg.options)
        self.ballot = BallotView(
            window=msg.window,
            beat=msg.beat,
            options=list(msg.options),
            duration_ms=msg.duration_ms,
            closes_at_ms=msg.closes_at_ms,
            deadline=deadline,
            counts=counts,
            my_vote=my_vote,
        )

    def _snapshot(self, snap: Snapshot) -> None:
        self.epoch = snap.epoch
        self.seq = snap.seq
        self.title = snap.title
        self.phase = snap.phase
        self.reason = snap.reason
        self.beat = snap.beat
        self.story = list(snap.story)
        self.truncated = snap.truncated
        self.partial = snap.partial
        self.current_beat = snap.beat if snap.partial or snap.phase == "narrating" else None
        self.current_choice = None
        self.mood = snap.mood
        self.viewers = snap.viewers
        self.narrator = snap.narrator
        self.narrator_message = ""
        self.last_abort = None
        self.ballot = None
        if snap.ballot is not None:
            b = snap.ballot
            left = b.closes_at_ms / 1000.0 - self.wall()
            left = min(max(left, 0.0), b.duration_ms / 1000.0)
            self._open_ballot(b, self.monotonic() + left, my_vote=snap.my_vote)
            if snap.tally is not None and snap.tally.window == b.window:
                assert self.ballot is not None
                self.ballot.counts = list(snap.tally.counts)
                self.ballot.voters = snap.tally.voters
