"""Moderation rules of the room core: the safety gate on narration, holds, and moderator actions.

Pure, like ``state.py``, which calls it through a few hooks (``begin_beat``,
``on_delta``, ``on_done``, ``moderate``, and checks of muted and banned
participants). It reaches into the room's internals on purpose: one room, one
set of invariants, kept in two files so moderation can be read on its own.

Rules:

1. **Every narration delta passes the gate.** With the filter on, text reaches
   ``partial`` and the stream (``AppendText``) only through the holdback
   (server/moderation/holdback.py). With approval on, nothing of a beat is
   streamed: the whole beat is held for a moderator when it ends. Turning
   approval on or off applies from the next beat (a beat is streamed or held
   whole, never half of each).
2. **Blocked text is withheld.** The request is cancelled, ``beat_abort`` tells
   clients to drop what they were shown (all of it clean), and the beat is told
   again, up to ``filter_retries`` times; then it is held for a moderator.
3. **Fails closed.** If the filter cannot run, the beat is held at once (a retry
   would not help), never sent.
4. **A held beat waits** (the room stays in ``narrating``) until a moderator
   approves it (committed as is), edits it (committed with the moderator's
   text, at most ``max_edit_chars``) or rejects it (the beat is told again).
   Hold ids are never reused; a pause or kill drops the held beat, so a later
   approval of it is refused with ``not_held``.
5. **Authorization first.** A ``moderate`` message is applied only for a
   moderator or host whose token covers this room; otherwise ``forbidden``.
   Every check of an action happens before any state changes: a refused
   action changes nothing. Every action, applied or refused, is audited.
6. **Pause and kill** stop the room from any phase: the engine request is
   cancelled, a beat being told is aborted (retold on resume), an open vote
   window keeps its votes and the time it had left. A kill also drops the vote
   window (a new ballot is written on resume) and the hold queue. Only a
   moderator's ``resume`` ends either.
7. **Mute** drops a participant's votes and reactions (``muted``); **ban**
   closes its connections (4403), drops its vote, and refuses it on join.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, TypeVar

from fablecast.protocol import messages as m
from fablecast.protocol.codes import ErrorCode
from fablecast.server.moderation.filter import SafetyFilter, Verdict
from fablecast.server.moderation.holdback import Holdback, Release
from fablecast.server.moderation.types import MODERATOR_ROLES, Actor, AuditEntry
from fablecast.server.room import effects as fx
from fablecast.server.room.phases import Phase, Step
from fablecast.server.room.text import TextBuffer

if TYPE_CHECKING:
    from fablecast.server.room.state import Room

T = TypeVar("T")

#: Audit entries a room keeps in memory (the event log keeps them all).
AUDIT_KEEP: Final = 100


class Refused(Exception):
    """A moderator action that must not be applied: the code and message the moderator gets."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(slots=True)
class Held:
    """A beat waiting for a moderator (rule 4)."""

    hold: int
    beat: int
    text: str
    choice: str | None
    reason: str
    held_at: float
    aborted: bool  # clients were told beat_abort: approving it starts the beat again
    notes: fx.BeatNotes | None = None  # what the beat's prompt used (its why record)


@dataclass(slots=True)
class ModerationState:
    """A room's moderation state (all of it lives in the core, none in the node)."""

    filter: SafetyFilter | None = None
    hold_chars: int = 0
    approval: bool = False
    paused: str | None = None  # "moderator" | "killed"
    resume_to: str = "narration"  # "narration" | "choices" | "voting"
    vote_left: float = 0.0
    holds: dict[int, Held] = field(default_factory=dict)
    muted: set[str] = field(default_factory=set)
    banned: set[str] = field(default_factory=set)
    inject: str | None = None
    retells: int = 0
    audit: deque[AuditEntry] = field(default_factory=lambda: deque(maxlen=AUDIT_KEEP))
    gate: Holdback | None = None
    beat_approval: bool = False  # approval as it was when the beat began (toggles apply next beat)
    raw: TextBuffer = field(default_factory=TextBuffer)
    _holds: int = 0  # never reused, so a stale hold id can never pass for a new one


def new_state(
    *,
    filter_on: bool,
    rating: str,
    blocked: tuple[str, ...],
    allowed: tuple[str, ...],
    classifier: Callable[[str], bool] | None,
    hold_chars: int,
    approval: bool,
) -> ModerationState:
    """A room's moderation state from its settings (the filter is built once, here)."""
    safety = (
        SafetyFilter.for_room(rating, blocked, allowed, classifier)  # type: ignore[arg-type]
        if filter_on
        else None
    )
    hold = max(hold_chars, safety.max_match_chars + 1) if safety is not None else 0
    return ModerationState(filter=safety, hold_chars=hold, approval=approval)


# =========================================================================== the gate (rules 1-3)


def begin_beat(room: Room) -> None:
    """A narration request starts: a fresh gate and raw buffer for the beat."""
    mod = room.mod
    mod.raw.clear()
    mod.beat_approval = mod.approval
    mod.gate = Holdback(mod.filter, mod.hold_chars) if mod.filter is not None else None


def take_inject(room: Room) -> str | None:
    """The injected plot event for the beat being requested (used once)."""
    event, room.mod.inject = room.mod.inject, None
    return event


def on_delta(room: Room, text: str, now: float, out: list[fx.Effect]) -> None:
    """A narration delta of the current request: stream what the gate releases."""
    mod = room.mod
    gate = mod.gate
    if gate is None and not mod.beat_approval:
        _show(room, text, out)  # no filter, no approval: ``partial`` is the whole beat
        return
    mod.raw.append(text)
    if mod.beat_approval:
        return  # rule 1: nothing streams before a moderator approves
    assert gate is not None
    release = gate.feed(text)
    _apply(room, release, now, out)


def on_done(
    room: Room, now: float, out: list[fx.Effect], notes: fx.BeatNotes | None = None
) -> bool:
    """The narration ended. True: commit the beat now (``partial`` holds all of it)."""
    mod = room.mod
    gate = mod.gate
    raw = mod.raw.text() if gate is not None or mod.beat_approval else room.partial.text()
    if not raw.strip():
        return True  # the core's "no text" failure path
    if mod.beat_approval:
        # Nothing was streamed or fed to the gate: the filter judges the whole beat,
        # and its verdict goes with the hold (a failure of the filter too).
        reason = "approval" + _verdict_note(mod.filter, raw)
        _hold(room, raw, reason, now, out, aborted=False, notes=notes)
        return False
    if gate is not None and not _apply(room, gate.finish(), now, out):
        return False
    mod.retells = 0
    return True


def _verdict_note(safety: SafetyFilter | None, text: str) -> str:
    if safety is None:
        return ""
    try:
        verdict = safety.check(text, final=True)
    except Exception as exc:  # fails closed: the beat is held anyway; say why
        return f"; filter unavailable: {exc}"
    return "" if verdict.allowed else f"; filter: {verdict.reason}"


def screen_choices(
    room: Room, options: tuple[str, ...], cue: m.Cue | None
) -> tuple[tuple[str, ...], m.Cue | None]:
    """Ballot options and the scene cue through the filter (rule 1: every engine text).

    A blocked option is dropped (the core's "fewer than 2 choices" failure asks
    again when too few remain); a cue with a blocked field is not sent. If the
    filter cannot run, nothing passes: no options (the ballot is asked again,
    with backoff) and no cue (fails closed).
    """
    safety = room.mod.filter
    if safety is None:
        return options, cue

    def ok(text: str) -> bool:
        try:
            return safety.check(text, final=True).allowed
        except Exception:
            return False

    kept = tuple(o for o in options if ok(o))
    if cue is not None:
        fields = [cue.location, cue.time_of_day, cue.weather, cue.lighting, cue.music]
        if not ok(" | ".join([*fields, *cue.characters, cue.image_prompt])):
            cue = None
    return kept, cue


def screen_state(room: Room, state: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    """The engine's story state through the filter: any blocked text drops it (the card
    keeps its deterministic fold), and so does a filter that cannot run (fails closed)."""
    safety = room.mod.filter
    if safety is None or state is None:
        return state
    texts: list[str] = []
    for value in state.values():
        if isinstance(value, str):
            texts.append(value)
        elif isinstance(value, list | tuple):
            texts += [str(v) for v in value]
    try:
        return state if safety.check(" | ".join(texts), final=True).allowed else None
    except Exception:
        return None


def _show(room: Room, text: str, out: list[fx.Effect]) -> None:
    if text:
        room.partial.append(text)
        out.append(fx.AppendText(room.beat, text))


def _apply(room: Room, release: Release, now: float, out: list[fx.Effect]) -> bool:
    """Stream the released text; on a block or failure withhold the beat. False: stopped."""
    _show(room, release.text, out)
    if release.failed is not None:
        _withhold(room, None, release.failed, now, out)
        return False
    if release.blocked is not None:
        _withhold(room, release.blocked, None, now, out)
        return False
    return True


def _withhold(
    room: Room, verdict: Verdict | None, failed: str | None, now: float, out: list[fx.Effect]
) -> None:
    """Rules 2 and 3: cancel, abort what was shown, retell or hold."""
    mod = room.mod
    raw = mod.raw.text()
    out.append(fx.CancelRequest(room._request))
    out.append(fx.Publish(m.BeatAbort(beat=room.beat, reason="withheld by the safety filter")))
    room.partial.clear()
    if failed is not None:
        _hold(room, raw, f"filter unavailable: {failed}", now, out, aborted=True)
    elif mod.retells < room.settings.filter_retries:
        mod.retells += 1
        room._narrate(now, out, Step.RETELL)
    else:
        reason = verdict.reason if verdict else "blocked"
        told = mod.retells + 1
        times = "once" if told == 1 else f"{told} times"
        _hold(room, raw, f"{reason} (told {times})", now, out, aborted=True)


def _hold(
    room: Room,
    text: str,
    reason: str,
    now: float,
    out: list[fx.Effect],
    *,
    aborted: bool,
    notes: fx.BeatNotes | None = None,
) -> None:
    mod = room.mod
    beat = room.beat
    if room.partial:  # something was shown: clients drop it; approving starts the beat again
        out.append(fx.Publish(m.BeatAbort(beat=beat, reason="held for a moderator")))
        room.partial.clear()
        aborted = True
    room._stage = None  # the request is over; the room waits on a moderator
    mod._holds += 1
    mod.holds[mod._holds] = Held(mod._holds, beat, text, room.choice, reason, now, aborted, notes)
    out.append(fx.ModeratorsDirty())


# =========================================================================== moderator actions


def moderate(room: Room, event: fx.Moderated, now: float, out: list[fx.Effect]) -> None:
    """Authorize, check, apply one ``moderate`` message; ack or refuse; audit (rule 5)."""
    p, cmd = event.principal, event.command
    acted: list[fx.Effect] = []
    try:
        _authorize(room, p)
        detail = _ACTIONS[cmd.action](room, cmd, now, acted)
    except Refused as exc:
        out.append(fx.Reply(m.Error(code=exc.code, message=exc.message, ref=cmd.ref)))
        _audit(room, p, cmd, exc.code.value, exc.message, now=now, out=out)
        return
    out.extend(acted)
    out.append(fx.Reply(m.ModAck(action=cmd.action, ref=cmd.ref, detail=detail)))
    _audit(room, p, cmd, "ok", detail, now=now, out=out)


def _authorize(room: Room, p: Actor) -> None:
    if p.role not in MODERATOR_ROLES:
        raise Refused(ErrorCode.FORBIDDEN, f"role {p.role!r} may not moderate")
    if not p.covers(room.name):
        raise Refused(ErrorCode.FORBIDDEN, f"this token does not cover room {room.name!r}")


def _audit(
    room: Room,
    p: Actor,
    cmd: m.Moderate,
    outcome: str,
    detail: str,
    *,
    now: float,
    out: list[fx.Effect],
) -> None:
    target = cmd.participant or (f"hold {cmd.hold}" if cmd.hold else None)
    if cmd.action == "veto" and cmd.option is not None:
        target = f"option {cmd.option}"
    text = f"{target}: {detail}" if target else detail
    entry = AuditEntry(
        now, room.name, p.subject, p.role, cmd.action, outcome, text, cmd.participant, cmd.on
    )
    room.mod.audit.append(entry)
    out.append(fx.Audit(entry))
    out.append(fx.ModeratorsDirty())


def _need(value: T | None, name: str, action: str) -> T:
    if value is None:
        raise Refused(ErrorCode.INVALID_MESSAGE, f"{action} needs {name}")
    return value


def _watch(room: Room, cmd: m.Moderate, now: float, out: list[fx.Effect]) -> str:
    out.append(fx.Watch())
    out.append(fx.ModeratorsDirty())
    return "watching"


def _pause_action(reason: str) -> Callable[[Room, m.Moderate, float, list[fx.Effect]], str]:
    def act(room: Room, cmd: m.Moderate, now: float, out: list[fx.Effect]) -> str:
        if room.mod.paused in {reason, "killed"}:
            raise Refused(ErrorCode.NOT_IN_PHASE, f"the room is already {room.mod.paused}")
        pause(room, reason, now, out)
        return reason

    return act


def pause(room: Room, reason: str, now: float, out: list[fx.Effect]) -> None:
    """Rule 6: stop the room from any phase, remembering where to resume."""
    mod = room.mod
    stage = room._stage
    if mod.paused is None:
        if stage is not None:
            mod.resume_to = stage
            out.append(fx.CancelRequest(room._request))
            if stage == "narration":
                out.append(
                    fx.Publish(m.BeatAbort(beat=room.beat, reason=f"{reason} by a moderator"))
                )
                room.partial.clear()
            room._stage = None
        elif room.window is not None:
            mod.resume_to = "voting"
            mod.vote_left = max(0.0, room.window.closes_at - now)
            room._timers.pop("vote_close", None)  # the armed timer is now stale
        elif room.phase is Phase.PAUSED and room.reason in ("engine", "busy"):
            mod.resume_to = room._retry_stage
            room._timers.pop("retry", None)
        elif room.phase is Phase.PAUSED and room.reason == "starting":
            mod.resume_to = "starting"  # the engine is still warming up (see engine_ready)
        else:
            # Resolving (the reveal), a held beat, empty or starting: the next beat.
            room._timers.pop("reveal", None)
            mod.resume_to = "narration"
        if mod.holds:
            _drop_holds(room, reason, out)
    if reason == "killed":
        if room.window is not None:
            room.window = None
            room._timers.pop("vote_close", None)
            mod.resume_to = "choices" if room.story else "narration"
        if mod.holds:
            _drop_holds(room, reason, out)
    mod.paused = reason
    room._go(Step.MOD_PAUSE, out, reason=reason)
    out.append(fx.ModeratorsDirty())


def restore(room: Room, events: list[dict[str, Any]]) -> None:
    """Replay the logged moderator actions that outlive a restart: mutes, bans, approval.

    ``events`` are the room's ``moderation`` events in log order (the event log's
    fold); refused ones and anything malformed are skipped. Pauses, holds and
    plot events do not outlive a restart (the restored room resumes its story).
    """
    mod = room.mod
    for e in events:
        if e.get("outcome") != "ok":
            continue
        action, who = e.get("action"), e.get("participant")
        if isinstance(who, str):
            if action == "mute":
                mod.muted.add(who)
            elif action == "unmute":
                mod.muted.discard(who)
            elif action == "ban":
                mod.banned.add(who)
            elif action == "unban":
                mod.banned.discard(who)
        if action == "approval" and isinstance(e.get("on"), bool):
            mod.approval = e["on"]


def engine_ready(room: Room) -> None:
    """The engine became ready while a moderator held the room: resume starts the story."""
    if room.mod.paused is not None and room.mod.resume_to == "starting":
        room.mod.resume_to = "narration"


def _drop_holds(room: Room, reason: str, out: list[fx.Effect]) -> None:
    mod = room.mod
    for held in mod.holds.values():
        if not held.aborted:
            out.append(fx.Publish(m.BeatAbort(beat=held.beat, reason=f"{reason} by a moderator")))
    mod.holds.clear()


def _resume(room: Room, cmd: m.Moderate, now: float, out: list[fx.Effect]) -> str:
    mod = room.mod
    if mod.paused is None:
        raise Refused(ErrorCode.NOT_IN_PHASE, "the room is not paused by a moderator")
    mod.paused = None
    target = mod.resume_to
    window = room.window
    if target == "voting" and window is not None:
        window.opened_at = now
        window.closes_at = now + max(mod.vote_left, 1.0)
        room._go(Step.RESUME_VOTE, out)
        out.append(fx.Publish(room._ballot()))
        out.append(fx.MarkDirty("tally"))
        room._arm("vote_close", window.closes_at, out)
    elif target == "starting":
        # Back to waiting for the engine: nothing is asked of it before it is ready.
        room.reason = "starting"
        out.append(fx.Publish(m.Phase(phase=room.phase.value, beat=room.beat, reason="starting")))
    elif room.settings.pause_when_empty and not room.viewers:
        room._go(Step.EMPTY, out, reason="empty")
    elif target == "choices" and room.story:
        room._stage = "choices"
        room._go(Step.RESUME, out)
        room._request_choices(out)
    else:
        room._narrate(now, out, Step.RESUME)
    out.append(fx.ModeratorsDirty())
    return f"resumed ({target})"


def _close_vote(room: Room, cmd: m.Moderate, now: float, out: list[fx.Effect]) -> str:
    window = room.window
    if room.phase is not Phase.VOTING or window is None:
        raise Refused(ErrorCode.NOT_IN_PHASE, f"no vote window is open ({room.phase})")
    if cmd.window is not None and cmd.window != window.window:
        raise Refused(ErrorCode.WINDOW_CLOSED, f"window {cmd.window} is not the open one")
    room._timers.pop("vote_close", None)
    room._on_timer("vote_close", now, out)
    return f"window {window.window} closed"


def _veto(room: Room, cmd: m.Moderate, now: float, out: list[fx.Effect]) -> str:
    option = _need(cmd.option, "option", "veto")
    window = room.window
    if window is None:
        raise Refused(ErrorCode.NOT_IN_PHASE, f"no vote window is open ({room.phase})")
    if cmd.window is not None and cmd.window != window.window:
        raise Refused(ErrorCode.WINDOW_CLOSED, f"window {cmd.window} is not the open one")
    if not 0 <= option < len(window.options) or option in window.vetoed:
        raise Refused(ErrorCode.UNKNOWN_OPTION, f"option {option} is not on the ballot")
    if len(window.options) - len(window.vetoed) <= 1:
        raise Refused(ErrorCode.OVER_LIMIT, "the last option left cannot be vetoed")
    window.veto(option)
    out.append(fx.Publish(room._ballot()))
    out.append(fx.MarkDirty("tally"))
    return f"vetoed {window.options[option]!r}"


def _approval(room: Room, cmd: m.Moderate, now: float, out: list[fx.Effect]) -> str:
    on = _need(cmd.on, "on", "approval")
    room.mod.approval = on
    out.append(fx.ModeratorsDirty())
    return ("approval on" if on else "approval off") + " (from the next beat)"


def _held(room: Room, cmd: m.Moderate) -> Held:
    hold = _need(cmd.hold, "hold", cmd.action)
    held = room.mod.holds.get(hold)
    if held is None:
        raise Refused(ErrorCode.NOT_HELD, f"beat hold {hold} is not held (any more)")
    return held


def _commit_held(room: Room, held: Held, text: str, now: float, out: list[fx.Effect]) -> None:
    room.mod.holds.pop(held.hold)
    room.mod.retells = 0
    if held.aborted:
        out.append(fx.Publish(m.BeatStart(beat=held.beat, choice=held.choice)))
    room._stage = "narration"  # the beat being told is beats_told + 1 again
    room.partial.clear()
    room.partial.append(text)
    out.append(fx.AppendText(held.beat, text))
    room._on_narration_done(now, out, held.notes)


def _approve(room: Room, cmd: m.Moderate, now: float, out: list[fx.Effect]) -> str:
    held = _held(room, cmd)
    _commit_held(room, held, held.text, now, out)
    return f"beat {held.beat} approved"


def _edit(room: Room, cmd: m.Moderate, now: float, out: list[fx.Effect]) -> str:
    held = _held(room, cmd)
    text = _need(cmd.text, "text", "edit").strip()
    limit = room.settings.max_edit_chars
    if not text or len(text) > limit:
        raise Refused(ErrorCode.OVER_LIMIT, f"an edited beat has 1..{limit} characters")
    _commit_held(room, held, text, now, out)
    return f"beat {held.beat} edited ({len(text)} characters)"


def _reject(room: Room, cmd: m.Moderate, now: float, out: list[fx.Effect]) -> str:
    held = _held(room, cmd)
    room.mod.holds.pop(held.hold)
    if not held.aborted:
        out.append(fx.Publish(m.BeatAbort(beat=held.beat, reason="rejected by a moderator")))
    room._narrate(now, out, Step.RETELL)
    return f"beat {held.beat} rejected; told again"


def _inject(room: Room, cmd: m.Moderate, now: float, out: list[fx.Effect]) -> str:
    text = _need(cmd.text, "text", "inject").strip()
    limit = room.settings.max_inject_chars
    if not text or len(text) > limit:
        raise Refused(ErrorCode.OVER_LIMIT, f"a plot event has 1..{limit} characters")
    room.mod.inject = text
    out.append(fx.ModeratorsDirty())
    return "plot event set for the next beat"


def _mute(room: Room, cmd: m.Moderate, now: float, out: list[fx.Effect]) -> str:
    who = _need(cmd.participant, "participant", cmd.action)
    if cmd.action == "mute":
        room.mod.muted.add(who)
    else:
        room.mod.muted.discard(who)
    out.append(fx.ModeratorsDirty())
    return f"{who} {cmd.action}d"


def _ban(room: Room, cmd: m.Moderate, now: float, out: list[fx.Effect]) -> str:
    who = _need(cmd.participant, "participant", cmd.action)
    mod = room.mod
    if cmd.action == "unban":
        mod.banned.discard(who)
        out.append(fx.ModeratorsDirty())
        return f"{who} unbanned"
    mod.banned.add(who)
    reason = cmd.reason or "banned by a moderator"
    out.append(fx.Disconnect(who, reason))
    if room.window is not None and who in room.window.votes:
        room.window.withdraw(who)
        out.append(fx.MarkDirty("tally"))
    if room.viewers.pop(who, None) is not None:
        out.append(fx.MarkDirty("presence"))
    out.append(fx.ModeratorsDirty())
    return f"{who} banned"


_ACTIONS: Final[dict[str, Callable[[Room, m.Moderate, float, list[fx.Effect]], str]]] = {
    "watch": _watch,
    "pause": _pause_action("moderator"),
    "kill": _pause_action("killed"),
    "resume": _resume,
    "close_vote": _close_vote,
    "veto": _veto,
    "approval": _approval,
    "approve": _approve,
    "edit": _edit,
    "reject": _reject,
    "inject": _inject,
    "mute": _mute,
    "unmute": _mute,
    "ban": _ban,
    "unban": _ban,
}


# =========================================================================== views


def state_message(room: Room) -> m.ModState:
    """The room's moderation state for watching moderators (``mod_state``)."""
    mod = room.mod
    return m.ModState(
        room=room.name,
        approval=mod.approval,
        paused=mod.paused,
        holds=[
            m.HeldBeat(
                hold=h.hold,
                beat=h.beat,
                text=h.text,
                choice=h.choice,
                reason=h.reason,
                held_at_ms=round(h.held_at * 1000),
            )
            for h in mod.holds.values()
        ],
        muted=sorted(mod.muted),
        banned=sorted(mod.banned),
        inject=mod.inject,
        filter=_filter_summary(room),
        audit=[
            m.AuditRecord(
                t_ms=round(a.t * 1000),
                room=a.room,
                subject=a.subject,
                role=a.role,
                action=a.action,
                outcome=a.outcome,
                detail=a.detail,
            )
            for a in list(mod.audit)[-20:]
        ],
    )


def _filter_summary(room: Room) -> str:
    f = room.mod.filter
    if f is None:
        return "off"
    s = room.settings
    return f"{s.rating}: {len(f.terms)} terms, hold {room.mod.hold_chars} chars" + (
        ", classifier" if s.classifier is not None else ""
    )
