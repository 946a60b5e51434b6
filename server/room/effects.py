"""Events into the room core and effects out of it. Plain values, no I/O.

The runner (``runner.py``) is the only code that turns effects into I/O:
``Publish`` and ``AppendText`` go to the room's stream, ``MarkDirty`` makes
the stream ask the room for a latest-value frame on its next tick, ``Reply`` goes to
the session whose event caused it, requests go to the narrator, timers to the loop.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from fablecast.protocol.messages import (
    Cue,
    Moderate,
    NarratorState,
    Opening,
    RoomMessage,
    ServerMessage,
    StoryState,
)
from fablecast.server.moderation.types import Actor, AuditEntry
from fablecast.server.room.mood import MoodSnapshot

TimerKind = Literal["vote_close", "reveal", "retry", "mood"]
StateKind = Literal["tally", "mood", "presence"]

# --------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class Start:
    """The room opened; ``engine_ready`` False while the node's engine still warms up."""

    engine_ready: bool = True


@dataclass(frozen=True, slots=True)
class EngineReady:
    """The node's engine finished warming up: a room waiting to start may narrate."""


@dataclass(frozen=True, slots=True)
class ViewerJoined:
    """A connection of ``participant`` joined (a participant may hold several)."""

    participant: str


@dataclass(frozen=True, slots=True)
class ViewerLeft:
    """A connection of ``participant`` left."""

    participant: str


@dataclass(frozen=True, slots=True)
class VoteCast:
    """``participant`` votes ``option`` in ``window``."""

    participant: str
    window: int
    option: int


@dataclass(frozen=True, slots=True)
class ReactionSent:
    """An emotion signal from ``participant``."""

    participant: str
    reaction: str | None = None
    valence: float | None = None
    arousal: float | None = None


@dataclass(frozen=True, slots=True)
class NarrationDelta:
    """New narration text of request ``request``."""

    request: int
    text: str


@dataclass(frozen=True, slots=True)
class BeatNotes:
    """What a beat's prompt was built from (for the why record)."""

    tone: str | None = None
    directive: str | None = None
    state: StoryState | None = None
    lore: tuple[str, ...] = ()
    #: Scored candidate openings (best-of-n) and the index of the one continued.
    openings: tuple[Opening, ...] = ()
    opening: int | None = None
    #: Tone margins of the candidate rests of the beat (the tone pass), and the one told.
    rests: tuple[float, ...] = ()
    rest: int | None = None


@dataclass(frozen=True, slots=True)
class NarrationDone:
    """Request ``request`` finished its narration; ``notes`` say what its prompt used."""

    request: int
    notes: BeatNotes | None = None


@dataclass(frozen=True, slots=True)
class ChoicesReady:
    """Request ``request`` produced ballot options (and the last beat's scene cue).

    ``state``: the engine's story state after the last beat, as plain data
    (``inference.story.update.StateUpdate.to_dict``; None: the engine wrote none).
    The core keeps it on that beat and has it recorded (``Record("state")``).
    """

    request: int
    options: tuple[str, ...]
    cue: Cue | None = None
    state: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class EngineFailed:
    """Request ``request`` failed (error, stall, engine death)."""

    request: int
    reason: str
    stalled: bool = False
    busy: bool = False  # refused for lack of engine capacity (queue full)


@dataclass(frozen=True, slots=True)
class TimerFired:
    """A timer armed by ``ArmTimer`` fired; stale tokens are ignored."""

    timer: TimerKind
    token: int


@dataclass(frozen=True, slots=True)
class NarratorStatus:
    """The scheduler's view of this room's narrator (busy when queued)."""

    state: NarratorState
    message: str = ""


@dataclass(frozen=True, slots=True)
class Rewound:
    """The story was rewound: ``story`` ends at beat ``beats_told`` (the log holds the rest).

    ``story`` is a tuple of ``state.CommittedBeat`` (the last ones, at least the
    room's story memory); ``branch`` names the set-aside beats.
    """

    story: tuple[object, ...]
    beats_told: int
    branch: int


@dataclass(frozen=True, slots=True)
class Moderated:
    """``principal`` sent a moderator ``command`` (authorized by the core, not before)."""

    principal: Actor
    command: Moderate


Event = (
    Start
    | EngineReady
    | ViewerJoined
    | ViewerLeft
    | VoteCast
    | ReactionSent
    | NarrationDelta
    | NarrationDone
    | ChoicesReady
    | EngineFailed
    | TimerFired
    | NarratorStatus
    | Rewound
    | Moderated
)

# --------------------------------------------------------------------------- effects


@dataclass(frozen=True, slots=True)
class Publish:
    """Broadcast a room frame (the stream stamps epoch and seq, in order)."""

    frame: RoomMessage


@dataclass(frozen=True, slots=True)
class AppendText:
    """Narration text to coalesce into the tick's ``token`` frame of ``beat``."""

    beat: int
    text: str


@dataclass(frozen=True, slots=True)
class MarkDirty:
    """Latest-value state changed; sent at most once per tick."""

    kind: StateKind


@dataclass(frozen=True, slots=True)
class Record:
    """An event for the room's event log that is not a frame (``kind="state"``).

    Ordered like a story frame: what follows waits until the log has it.
    """

    kind: str
    data: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Reply:
    """A message for the session whose event caused it (no seq)."""

    message: ServerMessage


@dataclass(frozen=True, slots=True)
class RequestNarration:
    """Narrate ``beat`` (driven by ``choice``, steered by ``mood``) as request ``request``."""

    request: int
    beat: int
    choice: str | None
    mood: MoodSnapshot
    #: A plot event a moderator injected for this beat (``inject``), if any.
    event: str | None = None
    #: The options of the vote that lost to ``choice``.
    losers: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RequestChoices:
    """Propose ballot options after the committed beat ``beat`` (text ``text``)."""

    request: int
    beat: int
    text: str


@dataclass(frozen=True, slots=True)
class CancelRequest:
    """Abort request ``request``."""

    request: int


@dataclass(frozen=True, slots=True)
class ArmTimer:
    """Fire ``TimerFired(timer, token)`` at time ``at`` (same clock as ``now``)."""

    timer: TimerKind
    at: float
    token: int


@dataclass(frozen=True, slots=True)
class Disconnect:
    """Close every connection of ``participant`` in this room (a ban) with close 4403."""

    participant: str
    reason: str


@dataclass(frozen=True, slots=True)
class Audit:
    """Record a moderator action (applied or refused): log it, keep it, hand it to the event log."""

    entry: AuditEntry


@dataclass(frozen=True, slots=True)
class Watch:
    """The session that sent this event (a moderator's ``watch``) gets ``mod_state`` from now on."""


@dataclass(frozen=True, slots=True)
class ModeratorsDirty:
    """The room's moderation state changed: send ``mod_state`` to watching moderators."""


Effect = (
    Publish
    | AppendText
    | MarkDirty
    | Record
    | Reply
    | RequestNarration
    | RequestChoices
    | CancelRequest
    | ArmTimer
    | Disconnect
    | Audit
    | Watch
    | ModeratorsDirty
)
