"""The room runner: the only awaiting code of a room.

It feeds events to the pure ``Room`` and carries out the effects it returns:
frames to the room's stream, replies to the session that caused them, engine
requests to the narrator (one task at a time), timers to the event loop; and on
the node's tick, ``flush`` hands the stream's stamped frames to the fan-out.

With an event log (``journal``), the frames that make the story (``beat_end``
with its why record, ``cue``, ``ballot``, ``vote_result``) are durable before
anyone sees them: the runner appends the event and holds that frame and every
effect after it, in order, until the log acknowledges it (one SQLite commit, a
few ms; a 50 ms tick hides it). So a beat a viewer saw committed is never lost
in a crash, and a room whose log is down waits visibly instead of telling a
story it cannot keep.
Replies and ``narrator`` status frames pass the hold (they carry no story).
Moderation: ``mod_state`` to watching moderators, closes of a banned
participant's connections, and audit records to the ``fablecast.audit``
logger, the event log (``kind="moderation"``) and ``audit_hooks``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Protocol

import msgspec

from fablecast.inference.narrator import NarrationStats, Narrator, Openings
from fablecast.inference.prompts import NarrationContext, StorySpec, story_spec
from fablecast.inference.story.state import StoryCard
from fablecast.inference.story.tone import tone_for_mood
from fablecast.inference.story.update import fold, state_from_dict
from fablecast.inference.types import EngineBusy, EngineStalled
from fablecast.protocol import messages as m
from fablecast.protocol.codes import CloseCode
from fablecast.protocol.messages import ServerMessage
from fablecast.server.fanout import Fanout
from fablecast.server.metrics import Metrics
from fablecast.server.moderation.types import AuditEntry
from fablecast.server.room import effects as fx
from fablecast.server.room.moderation import state_message
from fablecast.server.room.mood import MoodSnapshot
from fablecast.server.room.state import Room, RoomSettings
from fablecast.server.store.writer import StoreBacklog, StoreWriter
from fablecast.server.stream import RoomStream

log = logging.getLogger(__name__)
audit_log = logging.getLogger("fablecast.audit")

#: Receives every moderator action, applied or refused (the event log registers one).
AuditHook = Callable[[AuditEntry], None]


class Origin(Protocol):
    """Where a ``Reply`` goes: the session whose message caused the event."""

    def send_message(self, message: ServerMessage) -> None:
        """Encode and write one personal message, without awaiting."""
        ...


class _Closable(Protocol):
    participant: str | None
    closed: bool

    def close(self, code: CloseCode, reason: str) -> None: ...


class RoomRunner:
    """Owns one ``Room``, its stream, its local fan-out and its engine request."""

    def __init__(
        self,
        room: Room,
        *,
        stream: RoomStream,
        fanout: Fanout,
        narrator: Narrator,
        spec: StorySpec,
        metrics: Metrics,
        clock: Callable[[], float] = time.time,
        journal: StoreWriter | None = None,
    ) -> None:
        self.room = room
        self.stream = stream
        self.fanout = fanout
        self.narrator = narrator
        if isinstance(spec.style, str) or not spec.characters:
            # A room configured with a title and premise only (no spec file).
            style = spec.style if isinstance(spec.style, str) else spec.style.tone
            spec = story_spec(spec.title, spec.premise, style, spec.adapter)
        self.spec = spec
        #: The story state card, updated as beats are committed (never sent raw).
        self.card = StoryCard(spec)
        #: The last beat folded into the card: (beat, text, whether its state was applied).
        self._folded: tuple[int, str, bool] | None = None
        self.metrics = metrics
        self.clock = clock
        self._task: asyncio.Task[None] | None = None
        self._task_request = 0
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._closed = False
        self.journal = journal
        #: Effects waiting for the log to acknowledge the first one (None: not holding).
        self._held: list[tuple[fx.Effect, Origin | None]] | None = None
        #: Moderator sessions that sent ``watch``: they get ``mod_state`` on every change.
        self.watchers: list[Origin] = []
        #: Called with every audit entry (beside the event log, which gets each one).
        self.audit_hooks: list[AuditHook] = []
        #: Candidate openings of the next beat, started at vote close (best-of-n), and
        #: the (beat, choice, tone) they were started for.
        self._prepared: asyncio.Task[Openings | None] | None = None
        self._prepared_for: tuple[int, str, str | None] | None = None

    @property
    def name(self) -> str:
        """The room's name."""
        return self.room.name

    @property
    def settings(self) -> RoomSettings:
        """The room's settings (vote window, limits, ...)."""
        return self.room.settings

    @property
    def viewer_count(self) -> int:
        """Viewers the room counts (one per participant, whatever its connections)."""
        return self.room.viewer_count

    def flush(self) -> None:
        """The tick: stamp what the room published since the last one and send it."""
        self.fanout.send(self.stream.flush(self.fanout.codecs()))

    def start(self, engine_ready: bool = True) -> None:
        """Open the room (narration begins when a viewer is present, per settings).

        With ``engine_ready`` False the room waits in ``paused`` (reason
        ``starting``) until it is dispatched ``EngineReady``.
        """
        self.dispatch(fx.Start(engine_ready))

    async def close(self) -> None:
        """Stop timers and the engine request."""
        self._closed = True
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        self._drop_prepared()
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    def dispatch(self, event: fx.Event, origin: Origin | None = None) -> None:
        """Apply ``event`` now and carry out its effects (synchronously, in order)."""
        if self._closed:
            return
        try:
            effects = self.room.handle(event, self.clock())
        except Exception:  # a bug in the core must not take the node down
            log.exception("room %s failed on %r", self.name, event)
            return
        for effect in effects:
            self._apply(effect, origin)

    def _apply(self, effect: fx.Effect, origin: Origin | None) -> None:
        if self._held is not None and not _passes_hold(effect):
            self._held.append((effect, origin))
            return
        if isinstance(effect, fx.Record):
            if self.journal is not None:  # ordered like a story frame: what follows waits
                self._held = [(effect, origin)]
                self._persist(effect.kind, dict(effect.data))
            return
        if self.journal is not None and isinstance(effect, fx.Publish):
            record = self._record(effect.frame)
            if record is not None:
                self._held = [(effect, origin)]
                self._persist(*record)
                return
        self._do(effect, origin)

    # ------------------------------------------------------------------ the event log

    def _record(self, frame: m.RoomMessage) -> tuple[str, dict[str, object]] | None:
        """The log event a frame stands for (None: not part of the story)."""
        if isinstance(frame, m.BeatEnd):
            last = self.room.story[-1]
            data: dict[str, object] = msgspec.to_builtins(last)  # opaque: new fields flow
            data.pop("state", None)  # the engine's state of the beat comes later, as its own event
            mood = self.room.mood.read(self.clock())
            # Only the aggregate mood; never a viewer's single reaction (docs/store.md).
            data["mood"] = {
                "valence": round(mood.valence, 3),
                "arousal": round(mood.arousal, 3),
                "intensity": round(mood.intensity, 3),
            }
            whys = self.room.whys
            if whys and whys[-1].beat == frame.beat:  # the beat's why record, as the room made it
                data["why"] = _payload(whys[-1])
            return "beat", data
        if isinstance(frame, m.Cue):
            return "cue", _payload(frame)
        if isinstance(frame, m.Ballot):
            return "ballot", {
                "window": frame.window,
                "beat": frame.beat,
                "options": [o.text for o in frame.options],
            }
        if isinstance(frame, m.VoteResult):
            return "result", _payload(frame)
        return None

    def _persist(self, kind: str, data: dict[str, object]) -> None:
        assert self.journal is not None
        if self._closed:
            return
        try:
            fut = self.journal.append(self.name, kind, data)
        except StoreBacklog as exc:
            log.warning("room %s waits for the event log: %s", self.name, exc)
            asyncio.get_running_loop().call_later(0.5, self._persist, kind, data)
            return
        fut.add_done_callback(self._durable)

    def _durable(self, fut: asyncio.Future[int]) -> None:
        if self._closed or fut.cancelled() or self._held is None:
            return
        held, self._held = self._held, None
        (first, origin), rest = held[0], held[1:]
        self._do(first, origin)
        for effect, o in rest:  # in order; a later story frame holds again
            self._apply(effect, o)

    def store_status(self, reason: str | None) -> None:
        """Show the audience that the log is down (the story waits) or back. Passes the hold."""
        if reason is None:
            frame = m.Narrator(state=self.room.narrator, message="event log back")
        else:
            frame = m.Narrator(
                state="down",
                message=f"event log unavailable: {reason}; the story waits, nothing is lost",
            )
        self.stream.publish(frame)

    def release_held(self) -> None:
        """At a clean stop, once the log is drained: put held frames in the stream, in order.

        Only what goes to the stream; engine requests and timers are dropped (the
        room is closed, the restarted node resumes from the log).
        """
        held, self._held = self._held or [], None
        for effect, _ in held:
            if isinstance(effect, fx.Publish | fx.AppendText | fx.MarkDirty):
                self._do(effect, None)

    @property
    def holding(self) -> bool:
        """Whether effects wait for the event log."""
        return self._held is not None

    def _do(self, effect: fx.Effect, origin: Origin | None) -> None:
        ch = self.stream
        match effect:
            case fx.Publish(frame):
                ch.publish(frame)
                if isinstance(frame, m.VoteResult):
                    self._prepare(frame.text)
            case fx.AppendText(beat, text):
                ch.append_text(beat, text)
            case fx.MarkDirty(kind):
                ch.mark_dirty(kind)
            case fx.Record():
                pass  # the event log has it (``_apply``); nothing goes to the stream
            case fx.Reply(message):
                if origin is not None:
                    origin.send_message(message)
            case fx.RequestNarration():
                self._spawn(effect.request, self._narrate(effect))
            case fx.RequestChoices():
                self._spawn(effect.request, self._choices(effect))
            case fx.CancelRequest(request):
                self._cancel(request)
            case fx.Watch():
                if origin is not None and origin not in self.watchers:
                    self.watchers.append(origin)
            case fx.ModeratorsDirty():
                self._send_mod_state()
            case fx.Audit(entry):
                self._audit(entry)
            case fx.Disconnect(participant, reason):
                self._disconnect(participant, reason)
            case fx.ArmTimer(timer, at, token):
                old = self._timers.pop(timer, None)
                if old is not None:
                    old.cancel()
                delay = max(0.0, at - self.clock())
                loop = asyncio.get_running_loop()
                self._timers[timer] = loop.call_later(
                    delay, self._fire, fx.TimerFired(timer, token)
                )

    # ------------------------------------------------------------------ moderation

    def _send_mod_state(self) -> None:
        self.watchers = [w for w in self.watchers if not getattr(w, "closed", False)]
        if not self.watchers:
            return
        message = state_message(self.room)
        for watcher in self.watchers:
            watcher.send_message(message)

    def _audit(self, e: AuditEntry) -> None:
        audit_log.info(
            "room=%s subject=%s role=%s action=%s outcome=%s %s",
            e.room,
            e.subject,
            e.role,
            e.action,
            e.outcome,
            e.detail,
        )
        if self.journal is not None:
            # The event log keeps every moderator action (``kind="moderation"``); a
            # full backlog is logged, never allowed to block or undo the action.
            data = {
                "subject": e.subject,
                "role": e.role,
                "action": e.action,
                "outcome": e.outcome,
                "detail": e.detail,
                "participant": e.participant,
                "on": e.on,
            }
            try:
                self.journal.append(e.room, "moderation", data, at=e.t)
            except StoreBacklog as exc:
                log.warning("room %s: moderation event not logged: %s", self.name, exc)
        for hook in self.audit_hooks:
            try:
                hook(e)
            except Exception:
                log.exception("audit hook failed for room %s", self.name)

    def _disconnect(self, participant: str, reason: str) -> None:
        """Close every connection of ``participant`` in this room with 4403 (a ban)."""
        for sub in self.fanout.subscribers():
            session: _Closable = sub  # type: ignore[assignment]
            if getattr(session, "participant", None) == participant:
                session.close(CloseCode.BANNED, reason)

    def _fire(self, event: fx.TimerFired) -> None:
        self._timers.pop(event.timer, None)
        self.dispatch(event)

    # ------------------------------------------------------------------ engine requests

    def _spawn(self, request: int, coro: object) -> None:
        self._cancel(self._task_request)
        self._task_request = request
        self._task = asyncio.get_running_loop().create_task(
            coro,  # type: ignore[arg-type]
            name=f"room:{self.name}:request:{request}",
        )

    def _cancel(self, request: int) -> None:
        task = self._task
        if (
            request == self._task_request
            and task is not None
            and not task.done()
            and task is not asyncio.current_task()
        ):
            task.cancel()

    def _prepare(self, choice: str) -> None:
        """Vote close: start the next beat's candidate openings during the reveal pause."""
        self._drop_prepared()
        if self._closed:
            return
        beat = self.room.beats_told + 1
        ctx = self._context(beat, choice, self.room.mood.read(self.clock()), self.room.losers())
        if not self.narrator.best_of(ctx):
            return
        earlier = [b.text for b in self.room.story[-8:]]
        self._prepared = self.narrator.prepare(ctx, earlier)
        self._prepared_for = (beat, choice, ctx.tone.name if ctx.tone else None)

    def _drop_prepared(self) -> None:
        task, self._prepared, self._prepared_for = self._prepared, None, None
        if task is not None and not task.done():
            task.cancel()

    def _take_prepared(self, ctx: NarrationContext) -> asyncio.Task[Openings | None] | None:
        """The openings started at vote close, if they were for this very beat and tone."""
        task, key = self._prepared, self._prepared_for
        self._prepared, self._prepared_for = None, None
        tone = ctx.tone.name if ctx.tone else None
        if task is not None and key == (ctx.beat, ctx.choice, tone):
            return task
        if task is not None:
            task.cancel()  # the mood changed the tone during the reveal: sample anew
        return None

    def _context(
        self, beat: int, choice: str | None, mood: MoodSnapshot, losers: tuple[str, ...] = ()
    ) -> NarrationContext:
        s = self.room.settings
        self._sync_card()
        return NarrationContext(
            room=self.name,
            beat=beat,
            spec=self.spec,
            card=self.card,
            choice=choice,
            losers=losers,
            tone=tone_for_mood(mood.valence, mood.arousal, mood.intensity, mood.reactions),
            max_tokens=s.narration_tokens,
            n_choices=s.n_choices,
            lore=self.card.lore(f"{self.card.last_beat} {choice or ''}"),
            # A beat that acts out a vote's winner is awaited by the whole room right
            # now: it starts before fair-share order (the scheduler's urgent rule).
            deadline_s=0.0 if choice else None,
        )

    def _sync_card(self) -> None:
        """Fold what the room committed since the last request into the story card.

        New beats are folded with the engine's state of each (``fold``); a state
        that arrived for the last folded beat is laid over it; a story that no
        longer holds the last folded beat (a rewind) is folded anew. So the live
        card is the card a restore, rewind or fork builds from the event log.
        """
        story = self.room.story
        mark = self._folded
        if mark is not None:
            at = next((b for b in reversed(story) if b.beat == mark[0]), None)
            if at is None or at.text != mark[1]:
                self.card, mark = StoryCard(self.spec), None
            elif at.state is not None and not mark[2]:
                update = state_from_dict(at.state)
                if update is not None:
                    self.card.apply(update)
        for b in story:
            if mark is None or b.beat > mark[0]:
                fold(self.card, b.text, b.choice, b.state)
        if story:
            last = story[-1]
            self._folded = (last.beat, last.text, last.state is not None)

    async def _narrate(self, eff: fx.RequestNarration) -> None:
        choice = eff.choice
        if eff.event:
            # A moderator's plot event rides on the beat's direction until the
            # prompt builder has a field of its own for it.
            choice = f"{choice}. Then this happens: {eff.event}" if choice else eff.event
        ctx = self._context(eff.beat, choice, eff.mood, eff.losers)
        stats = NarrationStats()
        earlier = [b.text for b in self.room.story[-8:]]
        prepared = self._take_prepared(ctx)
        try:
            async for delta in self.narrator.narrate(ctx, earlier, stats, prepared):
                if delta.tokens:
                    self.metrics.engine_tokens.inc(delta.tokens)
                if delta.text:
                    self.dispatch(fx.NarrationDelta(eff.request, delta.text))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._failed(eff.request, exc)
            return
        card = ctx.story.to_dict()
        notes = fx.BeatNotes(
            tone=ctx.tone.name if ctx.tone else None,
            directive=ctx.tone.directive if ctx.tone else None,
            state=m.StoryState(
                location=card["location"],
                present=card["present"],
                carrying=card["carrying"],
                goal=card["goal"],
                threads=card["threads"],
                summary=card["summary"],
            ),
            lore=tuple(ctx.lore),
            openings=tuple(
                m.Opening(text=o.text, choice=o.choice, tone=o.tone, score=o.score)
                for o in stats.openings
            ),
            opening=stats.opening,
            rests=tuple(stats.rests),
            rest=stats.rest,
        )
        self.dispatch(fx.NarrationDone(eff.request, notes))

    async def _choices(self, eff: fx.RequestChoices) -> None:
        mood = self.room.mood.read(self.clock())
        ctx = self._context(eff.beat, None, mood)
        try:
            ballot, cue, written = await asyncio.gather(
                self.narrator.ballot(ctx, eff.text),
                self.narrator.cue(ctx, eff.text, ctx.tone.name if ctx.tone else None),
                self.narrator.state(ctx, eff.text),
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._failed(eff.request, exc)
            return
        frame = m.Cue(
            beat=eff.beat,
            location=cue.location,
            time_of_day=cue.time_of_day,
            weather=cue.weather,
            lighting=cue.lighting,
            music=cue.music,
            characters=list(cue.characters),
            image_prompt=cue.image_prompt,
            source="fallback" if cue.source == "fallback" else "engine",
        )
        state = None if written is None else written.to_dict()
        self.dispatch(fx.ChoicesReady(eff.request, tuple(ballot.options), frame, state))

    def _failed(self, request: int, exc: Exception) -> None:
        stalled = isinstance(exc, EngineStalled)
        busy = isinstance(exc, EngineBusy)
        self.metrics.engine_failures.inc()
        log.warning("room %s: engine request %d failed: %s", self.name, request, exc)
        reason = str(exc) or type(exc).__name__
        self.dispatch(fx.EngineFailed(request, reason, stalled=stalled, busy=busy))


def _passes_hold(effect: fx.Effect) -> bool:
    """Effects that carry no story and may overtake held ones: replies, narrator status."""
    if isinstance(effect, fx.Reply):
        return True
    return isinstance(effect, fx.Publish) and isinstance(effect.frame, m.Narrator)


def _payload(frame: m.RoomMessage) -> dict[str, object]:
    """A room frame's fields as a log event stores them: without its tag and stream stamp."""
    data: dict[str, object] = msgspec.to_builtins(frame)
    for key in ("type", "epoch", "seq"):
        data.pop(key, None)
    return data
