"""The room core: ``Room.handle(event, now) -> list[Effect]``.

Pure: no asyncio, no sockets, no clock. Time comes in as ``now`` (seconds, the
same clock the runner uses to fire timers). The phase rules live in
``phases.py``; voting rules in ``votes.py``; mood in ``mood.py``.

Beat loop: narrate beat N (stream) -> commit it -> ask for choices -> open the
vote window -> close it on its timer -> reveal the winner -> narrate beat N+1
driven by the winner and the mood.

Invariants:
- Only the current request's events are applied (``request`` ids); late events
  of an aborted or failed request are ignored.
- A beat is committed (``beat_end``) only when its narration finished; a failed
  narration is announced with ``beat_abort`` and retold from scratch.
- Each participant has one counted vote per window.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec

from fablecast.protocol import messages as m
from fablecast.protocol.codes import ErrorCode
from fablecast.server.moderation.filter import Classifier, Rating
from fablecast.server.room import effects as fx
from fablecast.server.room import moderation
from fablecast.server.room.mood import MoodAggregator, MoodSnapshot
from fablecast.server.room.phases import ACCEPTS, Phase, Step, next_phase
from fablecast.server.room.text import TextBuffer
from fablecast.server.room.votes import VoteWindow, WindowResult

DEFAULT_TITLE = "The Lantern Market"
DEFAULT_PREMISE = (
    "In a city where lanterns remember every secret spoken near them, a young courier "
    "finds one that has gone dark."
)


#: Committed beats a room holds in memory at least (the prompt window: 8 beats,
#: moving in steps of 4, needs up to 11), whatever ``snapshot_beats`` is.
MIN_STORY_MEMORY = 16
#: Beats past the bound before the held story is trimmed back to it.
STORY_TRIM_SLACK = 8


@dataclass(frozen=True, slots=True)
class RoomSettings:
    """Per-room rules. Defaults are the documented ones (docs/protocol.md, Limits)."""

    title: str = DEFAULT_TITLE
    premise: str = DEFAULT_PREMISE
    n_choices: int = 3
    vote_s: float = 15.0
    reveal_s: float = 2.0
    retry_s: float = 2.0
    retry_max_s: float = 30.0
    narration_tokens: int = 120
    pause_when_empty: bool = True
    mood_half_life_s: float = 20.0
    mood_refresh_s: float = 5.0
    reactions_per_s: float = 4.0
    reaction_burst: int = 8
    snapshot_beats: int = 50
    seed: str = "fablecast"
    # Moderation (server/room/moderation.py, docs/moderation.md).
    filter: bool = True
    rating: Rating = "family"
    blocked_terms: tuple[str, ...] = ()
    allowed_terms: tuple[str, ...] = ()
    classifier: Classifier | None = None
    holdback_chars: int = 0
    filter_retries: int = 2
    approval: bool = False
    max_edit_chars: int = 2000
    max_inject_chars: int = 280

    def __post_init__(self) -> None:
        if not 2 <= self.n_choices <= 5:
            raise ValueError("n_choices must be 2..5")
        if self.vote_s <= 0 or self.reveal_s < 0 or self.retry_s <= 0:
            raise ValueError("vote_s and retry_s must be > 0, reveal_s >= 0")


@dataclass(slots=True)
class CommittedBeat:
    """A beat of the story, the choice that led to it, and the engine's state after it.

    ``state`` is opaque to the core (``ChoicesReady.state``): kept, recorded,
    handed back on restore and rewind, never read here.
    """

    beat: int
    text: str
    choice: str | None
    state: Mapping[str, Any] | None = None


@dataclass(slots=True)
class _Bucket:
    tokens: float
    t: float


@dataclass(slots=True)
class Room:
    """One live story. Feed it events with ``handle``; apply the effects it returns."""

    name: str
    settings: RoomSettings = field(default_factory=RoomSettings)
    phase: Phase = Phase.PAUSED
    reason: str | None = "starting"
    #: The last committed beats (``story_memory`` of them, trimmed when a beat is committed).
    story: list[CommittedBeat] = field(default_factory=list)
    #: Committed beats no longer held in ``story`` (beat numbers stay absolute).
    beats_forgotten: int = 0
    partial: TextBuffer = field(default_factory=TextBuffer)
    choice: str | None = None  # the choice driving the beat being narrated
    window: VoteWindow | None = None
    last_result: WindowResult | None = None
    narrator: m.NarratorState = "ok"
    viewers: dict[str, int] = field(default_factory=dict)
    mood: MoodAggregator = field(default_factory=MoodAggregator)
    _request: int = 0
    _stage: str | None = None  # "narration" | "choices" while a request runs
    _windows: int = 0
    _timers: dict[str, int] = field(default_factory=dict)
    _timer_tokens: int = 0  # never reused, so a stale timer can never pass for a new one
    _failures: int = 0
    _retry_stage: str = "narration"
    _buckets: dict[str, _Bucket] = field(default_factory=dict)
    _started: bool = False
    #: False from a ``Start(engine_ready=False)`` until ``EngineReady``.
    _engine_ready: bool = True
    #: Why records of the last committed beats (as many as ``story``).
    whys: list[m.Why] = field(default_factory=list)
    _beat_mood: MoodSnapshot | None = None
    #: The scene cue of the last committed beat (for snapshots).
    cue: m.Cue | None = None
    _last_ballot: tuple[str, ...] = ()
    #: How narration (re)starts: "narrate" beat beats_told + 1, write the "choices"
    #: for the last beat, or reopen a "ballot" of ``_resume_options`` (``restore``).
    _resume_with: str = "narrate"
    _resume_options: tuple[str, ...] = ()
    mod: moderation.ModerationState = field(init=False)

    def __post_init__(self) -> None:
        self.mood.half_life_s = self.settings.mood_half_life_s
        s = self.settings
        self.mod = moderation.new_state(
            filter_on=s.filter,
            rating=s.rating,
            blocked=s.blocked_terms,
            allowed=s.allowed_terms,
            classifier=s.classifier,
            hold_chars=s.holdback_chars,
            approval=s.approval,
        )

    # ------------------------------------------------------------------ queries

    @property
    def beat(self) -> int:
        """The beat being narrated or just told (1-based; 0 before the first)."""
        if self._stage == "narration":
            return self.beats_told + 1
        if (
            self.phase is Phase.PAUSED
            and self.reason in ("engine", "busy")
            and self._retry_stage == "narration"
        ):
            return self.beats_told + 1  # the beat that will be retold
        return self.beats_told

    @property
    def beats_told(self) -> int:
        """Committed beats since the story began (held in ``story`` or not)."""
        return self.beats_forgotten + len(self.story)

    @property
    def story_memory(self) -> int:
        """Committed beats a room must hold: a snapshot's worth, and the prompt window."""
        return max(self.settings.snapshot_beats, MIN_STORY_MEMORY)

    @property
    def viewer_count(self) -> int:
        """Distinct participants present."""
        return len(self.viewers)

    @property
    def current_request(self) -> int | None:
        """The id of the running engine request, if any."""
        return self._request if self._stage else None

    def state_frame(self, kind: fx.StateKind, now: float) -> m.RoomMessage | None:
        """The latest value of ``kind`` (None: nothing to send)."""
        if kind == "tally":
            return self._tally()
        if kind == "mood":
            return self._mood_frame(self.mood.read(now))
        return m.Presence(viewers=self.viewer_count)

    def snapshot(self, now: float, *, epoch: str, seq: int, participant: str | None) -> m.Snapshot:
        """Everything a late joiner needs, as of room frame ``seq``."""
        keep = self.settings.snapshot_beats
        story = [m.StoryBeat(beat=b.beat, text=b.text, choice=b.choice) for b in self.story[-keep:]]
        ballot = self._ballot() if self.window else None
        tally = self._tally()
        mood = self._mood_frame(self.mood.read(now))
        cue = msgspec.structs.replace(self.cue) if self.cue is not None else None
        # Nested frames carry the snapshot's (epoch, seq): the state they show is as of seq.
        for frame in (ballot, tally, mood, cue):
            if frame is not None:
                frame.epoch, frame.seq = epoch, seq
        my_vote = self.window.votes.get(participant) if self.window and participant else None
        return m.Snapshot(
            epoch=epoch,
            seq=seq,
            title=self.settings.title,
            phase=self.phase.value,
            beat=self.beat,
            story=story,
            truncated=self.beats_told > keep,
            partial=self.partial.text(),
            ballot=ballot,
            tally=tally,
            mood=mood,
            viewers=self.viewer_count,
            narrator=self.narrator,
            reason=self.reason,
            my_vote=my_vote,
            cue=cue,
        )

    def accepts(self, message_type: str) -> bool:
        """Whether the current phase accepts a client message of this type."""
        return message_type in ACCEPTS[self.phase]

    def restore(
        self,
        story: list[CommittedBeat],
        beats_told: int,
        *,
        choice: str | None = None,
        resume: str = "narrate",
        options: tuple[str, ...] = (),
        windows: int = 0,
        result: WindowResult | None = None,
        result_options: tuple[str, ...] = (),
    ) -> None:
        """Put a room that has not started at its last committed beat (the event log's fold).

        ``story`` ends with beat ``beats_told`` (older beats may be left out).
        When it starts (or its first viewer comes), it does what ``resume`` says:
        retell beat ``beats_told + 1`` driven by ``choice`` (``narrate``), ask the
        engine for the last beat's ballot (``choices``), or reopen a ballot of
        ``options`` with no votes (``ballot``: single votes are not logged).
        ``windows`` is the last vote window id used: new windows are numbered
        after it, so a vote for a window of before the restart cannot pass.
        ``result`` and ``result_options``: the vote that chose ``choice`` (the
        retold beat's why record names it).
        """
        if resume not in ("narrate", "choices", "ballot"):
            raise ValueError(f"resume must be narrate, choices or ballot, not {resume!r}")
        if resume != "narrate" and not story:
            raise ValueError(f"resume={resume!r} needs a committed beat")
        keep = self.story_memory
        self.story = list(story[-keep:])
        self.beats_forgotten = beats_told - len(self.story)
        self.choice = choice
        self._resume_with = resume
        self._resume_options = tuple(options)
        self._windows = max(self._windows, windows)
        if result is not None:
            self.last_result = result
            self._last_ballot = tuple(result_options)

    # ------------------------------------------------------------------ dispatch

    def handle(self, event: fx.Event, now: float) -> list[fx.Effect]:
        """Apply one event at time ``now``; return the effects to carry out, in order."""
        out: list[fx.Effect] = []
        match event:
            case fx.Start(engine_ready):
                self._on_start(engine_ready, now, out)
            case fx.EngineReady():
                if not self._engine_ready:
                    self._engine_ready = True
                    if self._started and self.mod.paused is None:  # a moderator's pause holds
                        self._begin(now, out)
                moderation.engine_ready(self)
            case fx.ViewerJoined(participant):
                self._on_join(participant, now, out)
            case fx.ViewerLeft(participant):
                self._on_leave(participant, out)
            case fx.VoteCast():
                self._on_vote(event, out)
            case fx.ReactionSent():
                self._on_react(event, now, out)
            case fx.NarrationDelta(request, text):
                if request == self.current_request and self._stage == "narration" and text:
                    moderation.on_delta(self, text, now, out)  # the safety gate: all text passes it
            case fx.NarrationDone(request, notes):
                if (
                    request == self.current_request
                    and self._stage == "narration"
                    and moderation.on_done(self, now, out, notes)  # the gate's last word
                ):
                    self._on_narration_done(now, out, notes)
            case fx.Moderated():
                moderation.moderate(self, event, now, out)
            case fx.ChoicesReady(request, options, cue, written):
                if request == self.current_request and self._stage == "choices":
                    # Ballot options, the scene cue and the story state are engine text
                    # too: the filter.
                    options, cue = moderation.screen_choices(self, options, cue)
                    written = moderation.screen_state(self, written)
                    if written is not None and self.story:
                        last = self.story[-1]
                        last.state = written
                        out.append(fx.Record("state", {"beat": last.beat, **written}))
                    if cue is not None and self.story:
                        cue.beat = self.story[-1].beat
                        self.cue = cue
                        out.append(fx.Publish(cue))
                    self._on_choices(options, now, out)
            case fx.EngineFailed(request, reason, stalled, busy):
                if request == self.current_request:
                    self._on_failure(reason, stalled, now, out, busy=busy)
            case fx.TimerFired(timer, token):
                if self._timers.get(timer) == token:
                    del self._timers[timer]
                    self._on_timer(timer, now, out)
            case fx.Rewound():
                self._on_rewound(event, now, out)
            case fx.NarratorStatus(state, message):
                self._set_narrator(state, message, out)
        return out

    # ------------------------------------------------------------------ transitions

    def _go(self, step: Step, out: list[fx.Effect], reason: str | None = None) -> None:
        self.phase = next_phase(self.phase, step)
        self.reason = reason
        out.append(fx.Publish(m.Phase(phase=self.phase.value, beat=self.beat, reason=reason)))

    def _arm(self, timer: fx.TimerKind, at: float, out: list[fx.Effect]) -> None:
        self._timer_tokens += 1
        token = self._timer_tokens
        self._timers[timer] = token
        out.append(fx.ArmTimer(timer, at, token))

    def _next_request(self, stage: str) -> int:
        self._request += 1
        self._stage = stage
        return self._request

    def _narrate(self, now: float, out: list[fx.Effect], step: Step) -> None:
        """Start (or retell) beat beats_told + 1."""
        self._stage = "narration"  # so ``beat`` below is the new one
        self._go(step, out)
        self.partial.clear()
        moderation.begin_beat(self)
        request = self._next_request("narration")
        out.append(fx.Publish(m.BeatStart(beat=self.beat, choice=self.choice)))
        self._beat_mood = self.mood.read(now)
        out.append(
            fx.RequestNarration(
                request,
                self.beat,
                self.choice,
                self._beat_mood,
                moderation.take_inject(self),
                losers=self.losers(),
            )
        )

    def losers(self) -> tuple[str, ...]:
        """The options of the last vote other than its winner (empty before any vote)."""
        if self.choice is None:
            return ()
        return tuple(o for o in self._last_ballot if o != self.choice)

    def _request_choices(self, out: list[fx.Effect]) -> None:
        request = self._next_request("choices")
        last = self.story[-1]
        out.append(fx.RequestChoices(request, last.beat, last.text))

    def _on_start(self, engine_ready: bool, now: float, out: list[fx.Effect]) -> None:
        if self._started:
            return
        self._started = True
        self._engine_ready = engine_ready
        if not engine_ready:
            self._wait_for_engine(out)
            return
        self._begin(now, out)

    def _wait_for_engine(self, out: list[fx.Effect]) -> None:
        # Nothing is asked of an engine that is still loading: no retry loop of
        # failed beats for the first viewers, one "starting" state until it is ready.
        self.reason = "starting"
        out.append(fx.Publish(m.Phase(phase=self.phase.value, beat=self.beat, reason="starting")))

    def _begin(self, now: float, out: list[fx.Effect]) -> None:
        """The first beat, or a pause until someone watches."""
        if self.settings.pause_when_empty and not self.viewers:
            self.reason = "empty"
            out.append(fx.Publish(m.Phase(phase=self.phase.value, beat=self.beat, reason="empty")))
            return
        self._resume(now, out)

    def _resume(self, now: float, out: list[fx.Effect]) -> None:
        """Leave ``paused`` the way ``restore`` (or a rewind) said; then narrate as usual."""
        how, self._resume_with = self._resume_with, "narrate"
        if how == "ballot" and len(self._resume_options) >= 2:
            self._go(Step.RESUME, out)
            self._on_choices(self._resume_options, now, out)
        elif how in ("choices", "ballot") and self.story:
            self._stage = "choices"
            self._go(Step.RESUME, out)
            self._request_choices(out)
        else:
            self._narrate(now, out, Step.RESUME)

    def _on_rewound(self, event: fx.Rewound, now: float, out: list[fx.Effect]) -> None:
        """Drop everything after the rewound-to beat; everyone sees it in one frame."""
        if self._stage is not None:
            out.append(fx.CancelRequest(self._request))
        self._stage = None
        self._timers.clear()  # armed timers become stale: their tokens no longer match
        self.window = None
        self.partial.clear()
        self._failures = 0
        # What belonged to the beats set aside goes with them.
        self.whys = [w for w in self.whys if w.beat <= event.beats_told]
        if self.cue is not None and self.cue.beat > event.beats_told:
            self.cue = None
        self.last_result, self._last_ballot = None, ()
        story = [b for b in event.story if isinstance(b, CommittedBeat)]
        self.restore(story, event.beats_told, resume="choices" if story else "narrate")
        self._go(Step.REWIND, out, reason="rewind")
        keep = self.settings.snapshot_beats
        out.append(
            fx.Publish(
                m.Rewind(
                    beat=event.beats_told,
                    branch=event.branch,
                    story=[
                        m.StoryBeat(beat=b.beat, text=b.text, choice=b.choice)
                        for b in self.story[-keep:]
                    ],
                    truncated=self.beats_told > keep,
                )
            )
        )
        out.append(fx.MarkDirty("tally"))
        if not self._started:
            return
        if not self._engine_ready:
            self._wait_for_engine(out)
            return
        if self.settings.pause_when_empty and not self.viewers:
            self.reason = "empty"
            out.append(fx.Publish(m.Phase(phase=self.phase.value, beat=self.beat, reason="empty")))
            return
        self._resume(now, out)

    def _on_join(self, participant: str, now: float, out: list[fx.Effect]) -> None:
        if participant in self.mod.banned:
            out.append(fx.Disconnect(participant, "banned by a moderator"))
            return
        count = self.viewers.get(participant, 0)
        self.viewers[participant] = count + 1
        if count == 0:
            out.append(fx.MarkDirty("presence"))
        if self._started and self.phase is Phase.PAUSED and self.reason == "empty":
            self._resume(now, out)

    def _on_leave(self, participant: str, out: list[fx.Effect]) -> None:
        count = self.viewers.get(participant, 0)
        if count <= 1:
            if self.viewers.pop(participant, None) is not None:
                out.append(fx.MarkDirty("presence"))
        else:
            self.viewers[participant] = count - 1

    def _on_vote(self, vote: fx.VoteCast, out: list[fx.Effect]) -> None:
        window = self.window
        if vote.participant in self.mod.muted:
            out.append(_error(ErrorCode.MUTED, "a moderator muted you in this room"))
            return
        if not self.accepts("vote") or window is None:
            out.append(_error(ErrorCode.NOT_IN_PHASE, f"no vote window is open ({self.phase})"))
            return
        if vote.window != window.window:
            out.append(
                _error(
                    ErrorCode.WINDOW_CLOSED,
                    f"window {vote.window} is not open; the open window is {window.window}",
                )
            )
            return
        if not 0 <= vote.option < len(window.options) or vote.option in window.vetoed:
            out.append(
                _error(
                    ErrorCode.UNKNOWN_OPTION,
                    f"option {vote.option} is not on the ballot (0..{len(window.options) - 1})",
                )
            )
            return
        status = window.cast(vote.participant, vote.option)
        out.append(fx.Reply(m.VoteAck(window=window.window, option=vote.option, status=status)))
        if status != "unchanged":
            out.append(fx.MarkDirty("tally"))

    def _on_react(self, r: fx.ReactionSent, now: float, out: list[fx.Effect]) -> None:
        if r.reaction is None and r.valence is None and r.arousal is None:
            out.append(_error(ErrorCode.INVALID_MESSAGE, "react needs reaction or valence/arousal"))
            return
        if r.participant in self.mod.muted:
            out.append(_error(ErrorCode.MUTED, "a moderator muted you in this room"))
            return
        s = self.settings
        bucket = self._buckets.get(r.participant)
        if bucket is None:
            bucket = self._buckets[r.participant] = _Bucket(float(s.reaction_burst), now)
        bucket.tokens = min(
            float(s.reaction_burst), bucket.tokens + (now - bucket.t) * s.reactions_per_s
        )
        bucket.t = now
        if bucket.tokens < 1.0:
            out.append(
                _error(
                    ErrorCode.RATE_LIMITED, f"at most {s.reactions_per_s:g} reactions per second"
                )
            )
            return
        bucket.tokens -= 1.0
        if len(self._buckets) > 4 * max(1, len(self.viewers)) + 64:
            # Forget buckets of participants who left (bounded memory).
            self._buckets = {p: b for p, b in self._buckets.items() if p in self.viewers}
        self.mood.add(now, reaction=r.reaction, valence=r.valence, arousal=r.arousal)
        out.append(fx.MarkDirty("mood"))
        if "mood" not in self._timers:
            self._arm("mood", now + s.mood_refresh_s, out)

    def _on_narration_done(
        self, now: float, out: list[fx.Effect], notes: fx.BeatNotes | None = None
    ) -> None:
        text = self.partial.text().strip()
        if not text:
            self._on_failure("the engine returned no text", False, now, out)
            return
        why = self._why(notes)
        beat = self.beat
        self.story.append(CommittedBeat(beat, text, self.choice))
        # Hold a bounded story: a room may run for days. Trimming a few beats past
        # the bound keeps appends cheap. The whole story is the event log's.
        keep = self.story_memory
        if len(self.story) >= keep + STORY_TRIM_SLACK:
            self.beats_forgotten += len(self.story) - keep
            del self.story[:-keep]
        self.partial.clear()
        self._failures = 0
        out.append(fx.Publish(m.BeatEnd(beat=beat, text=text)))
        self.whys.append(why)
        del self.whys[: -self.story_memory]
        out.append(fx.Publish(why))
        self._request_choices(out)

    def _why(self, notes: fx.BeatNotes | None) -> m.Why:
        """The why record of the beat being committed (before the frame is stamped)."""
        notes = notes or fx.BeatNotes()
        mood = self._beat_mood
        why = m.Why(
            beat=self.beat,
            choice=self.choice,
            mood=(
                {"valence": mood.valence, "arousal": mood.arousal, "intensity": mood.intensity}
                | {f"reaction.{k}": v for k, v in mood.reactions.items()}
                if mood is not None
                else {}
            ),
            tone=notes.tone,
            directive=notes.directive,
            state=notes.state,
            lore=list(notes.lore),
            openings=list(notes.openings),
            opening=notes.opening,
            rests=list(notes.rests),
            rest=notes.rest,
        )
        result = self.last_result
        if self.choice is not None and result is not None and self._last_ballot:
            why.ballot = list(self._last_ballot)
            why.counts = list(result.counts)
            why.winner = result.winner
            why.voters = result.voters
            why.tie_break = result.tie_break
        return why

    def _on_choices(self, options: tuple[str, ...], now: float, out: list[fx.Effect]) -> None:
        options = tuple(options[: self.settings.n_choices])
        if len(options) < 2:
            self._on_failure("fewer than 2 choices", False, now, out)
            return
        self._stage = None
        self._failures = 0
        self._windows += 1
        self.window = VoteWindow(self._windows, options, now, now + self.settings.vote_s)
        self._go(Step.BALLOT_OPENED, out)
        out.append(fx.Publish(self._ballot()))
        out.append(fx.MarkDirty("tally"))
        self._arm("vote_close", self.window.closes_at, out)

    def _set_narrator(self, state: m.NarratorState, message: str, out: list[fx.Effect]) -> None:
        """The narrator's state has one owner, the room: one ``narrator`` frame per change.

        The scheduler reports queue states (busy, stalled, ok) as they happen and
        the runner reports engine failures; either may repeat a state, which
        changes nothing here.
        """
        if state != self.narrator:
            self.narrator = state
            out.append(fx.Publish(m.Narrator(state=state, message=message)))

    def _on_failure(
        self, reason: str, stalled: bool, now: float, out: list[fx.Effect], *, busy: bool = False
    ) -> None:
        stage = self._stage or "narration"
        out.append(fx.CancelRequest(self._request))
        if stage == "narration":
            beat = self.beat
            self.partial.clear()
            out.append(fx.Publish(m.BeatAbort(beat=beat, reason=reason)))
        self._stage = None
        self._retry_stage = stage
        self._failures += 1
        self._set_narrator("busy" if busy else "stalled" if stalled else "down", reason, out)
        self._go(Step.ENGINE_FAILED, out, reason="busy" if busy else "engine")
        delay = min(self.settings.retry_max_s, self.settings.retry_s * 2 ** (self._failures - 1))
        self._arm("retry", now + delay, out)

    def _on_timer(self, timer: fx.TimerKind, now: float, out: list[fx.Effect]) -> None:
        if timer == "vote_close" and self.window is not None:
            window = self.window
            result = window.result(f"{self.settings.seed}:{self.name}")
            self.last_result = result
            self._last_ballot = window.options
            self.window = None
            self.choice = window.options[result.winner]
            self._go(Step.WINDOW_CLOSED, out)
            out.append(
                fx.Publish(
                    m.VoteResult(
                        window=window.window,
                        winner=result.winner,
                        text=self.choice,
                        counts=list(result.counts),
                        voters=result.voters,
                        tie_break=result.tie_break,
                    )
                )
            )
            self._arm("reveal", now + self.settings.reveal_s, out)
        elif timer == "reveal":
            if self.settings.pause_when_empty and not self.viewers:
                self._go(Step.EMPTY, out, reason="empty")
            else:
                self._narrate(now, out, Step.REVEAL_DONE)
        elif timer == "retry" and self.phase is Phase.PAUSED and self.reason in ("engine", "busy"):
            self._set_narrator("ok", "retrying", out)
            if self._retry_stage == "choices":
                self._stage = "choices"
                self._go(Step.RESUME, out)
                self._request_choices(out)
            else:
                self._narrate(now, out, Step.RESUME)
        elif timer == "mood":
            snap = self.mood.read(now)
            out.append(fx.MarkDirty("mood"))
            if snap.intensity >= 0.1:
                self._arm("mood", now + self.settings.mood_refresh_s, out)

    # ------------------------------------------------------------------ frames

    def _ballot(self) -> m.Ballot:
        w = self.window
        assert w is not None
        return m.Ballot(
            window=w.window,
            beat=self.beats_told,
            options=[m.Option(index=i, text=t) for i, t in enumerate(w.options)],
            duration_ms=round((w.closes_at - w.opened_at) * 1000),
            closes_at_ms=round(w.closes_at * 1000),
            vetoed=sorted(w.vetoed),
        )

    def _tally(self) -> m.Tally | None:
        w = self.window
        if w is None:
            return None
        return m.Tally(window=w.window, counts=list(w.counts), voters=len(w.votes))

    @staticmethod
    def _mood_frame(s: MoodSnapshot) -> m.Mood:
        return m.Mood(
            valence=s.valence, arousal=s.arousal, intensity=s.intensity, reactions=s.reactions
        )


def _error(code: ErrorCode, message: str) -> fx.Reply:
    return fx.Reply(m.Error(code=code, message=message))
