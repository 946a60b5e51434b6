"""Every message of protocol v1, as two tagged unions (one per direction).

Each message is a ``msgspec.Struct`` whose ``type`` field is its tag, so one
decoder call validates shape, types and ranges. Room frames (sent to everyone in
a room) carry ``epoch`` and ``seq``; messages for one viewer (``welcome``,
``snapshot``, ``error``, ``vote_ack``, ``pong``) do not consume the room's seq.

Forward compatibility: clients must ignore message types and fields they do not
know (see docs/protocol.md). The server ignores unknown *fields* on client
messages and answers unknown *types* with ``unknown_type``.
"""

from __future__ import annotations

from typing import Annotated, Final, Literal

import msgspec
from msgspec import Meta

from fablecast.protocol.codes import ErrorCode

# --------------------------------------------------------------------------- limits

#: Upper bound on a participant id chosen by the client.
ParticipantId = Annotated[str, Meta(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")]
Unit = Annotated[float, Meta(ge=-1.0, le=1.0)]
Seq = Annotated[int, Meta(ge=0)]
WindowId = Annotated[int, Meta(ge=1, le=2**53)]
#: Any non-negative index decodes; one that is not on the ballot is answered ``unknown_option``.
OptionIndex = Annotated[int, Meta(ge=0, le=2**53)]

#: The fixed reaction set. Each maps to a (valence, arousal) point, see server/room/mood.py.
Reaction = Literal["joy", "laugh", "love", "surprise", "fear", "anger", "sad", "bored"]
REACTIONS: Final[tuple[str, ...]] = (
    "joy",
    "laugh",
    "love",
    "surprise",
    "fear",
    "anger",
    "sad",
    "bored",
)

PhaseName = Literal["narrating", "voting", "resolving", "paused"]
VoteStatus = Literal["counted", "changed", "unchanged"]
#: What a connection may do (server/auth.py; docs/security.md has the table).
Role = Literal["viewer", "moderator", "overlay", "host"]
NarratorState = Literal["ok", "busy", "stalled", "down"]


class _Msg(msgspec.Struct, tag_field="type", kw_only=True, gc=False):
    """Base of every message: tagged by ``type``, keyword-only."""


# =========================================================================== client -> server


class Hello(_Msg, tag="hello", kw_only=True):
    """First message of every connection: who I am, and where I left off.

    ``token`` is the signed identity: a token issued by the room's operator
    (``fablecast token``: role and room scope) or the anonymous identity the
    server issued in an earlier ``welcome.identity``. Without one, a room that
    allows anonymous viewers issues a fresh identity. ``participant`` is a
    client-chosen id kept for older clients: it is never trusted and is
    ignored (votes count under the token's subject). ``name`` is a display
    name (at most 40 characters), not an identity. ``epoch`` + ``since`` ask
    to resume after room frame ``since`` of ``epoch``.
    """

    participant: ParticipantId | None = None
    name: Annotated[str, Meta(max_length=40)] | None = None
    epoch: Annotated[str, Meta(max_length=32)] | None = None
    since: Seq | None = None
    #: A signed token (JWT): operator-issued, or ``welcome.identity`` from an earlier join.
    token: Annotated[str, Meta(max_length=4096)] | None = None

    def __post_init__(self) -> None:
        # Python's ``$`` also matches before a final newline; the schema's pattern is
        # exact in JavaScript, this check makes it exact here too.
        if self.participant is not None and self.participant.endswith("\n"):
            raise ValueError("participant must match ^[A-Za-z0-9_.:-]{1,64}$")


class Vote(_Msg, tag="vote", kw_only=True):
    """Vote for ``option`` (0-based index) in vote window ``window``.

    A second vote in the same window replaces the first; it is never counted twice.
    """

    window: WindowId
    option: OptionIndex


class React(_Msg, tag="react", kw_only=True):
    """An emotion signal: a reaction from the fixed set, and/or a continuous sample."""

    reaction: Reaction | None = None
    valence: Unit | None = None
    arousal: Unit | None = None


class Ping(_Msg, tag="ping", kw_only=True):
    """Liveness/latency probe, answered by ``pong`` with the same nonce."""

    nonce: Annotated[int, Meta(ge=0, le=2**53)] = 0


ModAction = Literal[
    "watch",
    "pause",
    "resume",
    "kill",
    "close_vote",
    "veto",
    "approval",
    "approve",
    "edit",
    "reject",
    "inject",
    "mute",
    "unmute",
    "ban",
    "unban",
]


class Moderate(_Msg, tag="moderate", kw_only=True):
    """A moderator's action on the room (docs/moderation.md). Needs a moderator or host token.

    Answered by ``mod_ack`` (applied) or ``error`` (refused, nothing applied); both
    echo ``ref``. Which fields an action needs: ``veto``: ``window``, ``option``;
    ``approve``/``reject``: ``hold``; ``edit``: ``hold``, ``text``; ``inject``:
    ``text``; ``approval``: ``on``; ``mute``/``unmute``/``ban``/``unban``:
    ``participant``. ``text`` limits (edit, inject) are the room's, checked by the
    room (``over_limit``).
    """

    action: ModAction
    ref: Annotated[str, Meta(max_length=64)] | None = None
    hold: Annotated[int, Meta(ge=1, le=2**53)] | None = None
    window: WindowId | None = None
    option: OptionIndex | None = None
    text: Annotated[str, Meta(max_length=16384)] | None = None
    participant: ParticipantId | None = None
    on: bool | None = None
    reason: Annotated[str, Meta(max_length=200)] | None = None


ClientMessage = Hello | Vote | React | Ping | Moderate

# =========================================================================== server -> client
# ---- shapes used inside messages


class Option(msgspec.Struct, kw_only=True, gc=False):
    """One choice on a ballot."""

    index: int
    text: str


class StoryBeat(msgspec.Struct, kw_only=True, gc=False):
    """A committed beat of the story so far, and the choice that led to it."""

    beat: int
    text: str
    choice: str | None = None


class Limits(msgspec.Struct, kw_only=True, gc=False):
    """The limits this server enforces on this connection."""

    max_message_bytes: int
    messages_per_s: float
    message_burst: int
    reactions_per_s: float
    reaction_burst: int
    history_frames: int


# ---- room frames: carry (epoch, seq), contiguous per room


class RoomFrame(_Msg, kw_only=True):
    """Base of room frames. ``seq`` is contiguous per room within one ``epoch``.

    The defaults exist only because the room core builds frames before the
    stream stamps them; every frame on the wire carries both, and the schema
    marks them required (protocol/schema.py).
    """

    epoch: str = ""
    seq: int = 0


class BeatStart(RoomFrame, tag="beat_start", kw_only=True):
    """Narration of beat ``beat`` begins; ``choice`` is the winning option that drives it."""

    beat: int
    choice: str | None = None


class Token(RoomFrame, tag="token", kw_only=True):
    """Narration text of the current beat, coalesced per tick. Append ``text``."""

    beat: int
    text: str


class BeatEnd(RoomFrame, tag="beat_end", kw_only=True):
    """Beat ``beat`` is committed; ``text`` is its whole text (for reconciliation)."""

    beat: int
    text: str


class BeatAbort(RoomFrame, tag="beat_abort", kw_only=True):
    """The partial text of beat ``beat`` is discarded (engine failure); it will be retold."""

    beat: int
    reason: str


class Ballot(RoomFrame, tag="ballot", kw_only=True):
    """A vote window opens. It closes ``duration_ms`` after it was sent."""

    window: int
    beat: int
    options: list[Option]
    duration_ms: int
    closes_at_ms: int
    mode: Literal["plurality"] = "plurality"
    #: Options a moderator vetoed: shown struck out, not votable, cannot win.
    vetoed: list[int] = []


class Tally(RoomFrame, tag="tally", kw_only=True):
    """Live counts of the open window (latest value, at most once per tick)."""

    window: int
    counts: list[int]
    voters: int


class VoteResult(RoomFrame, tag="vote_result", kw_only=True):
    """The window closed: ``winner`` is an option index; ``tie_break`` explains how it won."""

    window: int
    winner: int
    text: str
    counts: list[int]
    voters: int
    tie_break: str | None = None


class Mood(RoomFrame, tag="mood", kw_only=True):
    """The room's aggregate mood (latest value, time-decayed, at most once per tick)."""

    valence: float
    arousal: float
    intensity: float
    reactions: dict[str, float]


class Presence(RoomFrame, tag="presence", kw_only=True):
    """How many distinct participants are in the room (latest value)."""

    viewers: int


class Phase(RoomFrame, tag="phase", kw_only=True):
    """The room entered ``phase``; ``reason`` says why when paused."""

    phase: PhaseName
    beat: int
    reason: str | None = None


class Narrator(RoomFrame, tag="narrator", kw_only=True):
    """The narrator's (engine's) state for this room: ok, busy (queued), stalled, down."""

    state: NarratorState
    message: str = ""


class Cue(RoomFrame, tag="cue", kw_only=True):
    """The scene of beat ``beat`` (sent after its ``beat_end``, before the ballot).

    For scenes and overlays. Validated before it is sent; ``source`` is
    ``fallback`` when the engine's cue failed its schema twice and the server
    built one from the story state.
    """

    beat: int
    location: str
    time_of_day: str
    weather: str
    lighting: str
    music: str
    characters: list[str]
    image_prompt: str
    source: Literal["engine", "fallback"] = "engine"


class StoryState(msgspec.Struct, kw_only=True, gc=False):
    """The compact story state a beat's prompt was built from."""

    location: str = ""
    present: list[str] = []
    carrying: list[str] = []
    goal: str | None = None
    #: Open questions of the story (the engine's state update; empty when it wrote none).
    threads: list[str] = []
    #: The rolling summary: the engine's one-sentence recaps of the last beats, or the
    #: choices they acted out where it wrote none.
    summary: str = ""


class Opening(msgspec.Struct, kw_only=True, gc=False):
    """One candidate opening of a beat and its score (docs/stories.md, best-of-n)."""

    text: str
    #: Similarity to the winning option minus the best similarity to a losing one.
    choice: float
    #: Margin of the directive's tone over the best other tone.
    tone: float
    score: float


class Why(RoomFrame, tag="why", kw_only=True):
    """Why beat ``beat`` went as it did (sent after its ``beat_end``; kept by the room).

    ``ballot``, ``counts``, ``winner``, ``voters`` and ``tie_break`` are those of
    the vote that chose ``choice`` (empty for the opening beat); ``mood`` is the
    room's mood when the beat was requested; ``tone`` and ``directive`` the tone
    directive applied; ``state`` and ``lore`` what the prompt was given;
    ``openings`` the scored candidate openings and ``opening`` the one continued;
    ``rests`` the tone margins of the candidate rests and ``rest`` the one told
    (with tone steps: the beat's tone margin after each sentence told, and
    ``rest`` null).
    """

    beat: int
    choice: str | None = None
    ballot: list[str] = []
    counts: list[int] = []
    winner: int | None = None
    voters: int = 0
    tie_break: str | None = None
    mood: dict[str, float] = {}
    tone: str | None = None
    directive: str | None = None
    state: StoryState | None = None
    lore: list[str] = []
    #: The candidate openings scored (empty: one opening was sampled) and the one continued.
    openings: list[Opening] = []
    opening: int | None = None
    #: Tone margins of the candidate rests of the beat (the tone pass) and the one told;
    #: with tone steps, the beat's margin after each sentence told (``rest`` null).
    rests: list[float] = []
    rest: int | None = None


class Rewind(RoomFrame, tag="rewind", kw_only=True):
    """The story was rewound to beat ``beat``: replace the story with ``story``.

    ``story`` is the story now (its last beats, as in a snapshot; ``truncated``
    when older ones are left out). The beats that followed ``beat`` are kept in
    the transcript as branch ``branch``. What comes next follows as usual frames
    (``phase``, then a ``ballot`` for beat ``beat``).
    """

    beat: int
    branch: int
    story: list[StoryBeat]
    truncated: bool = False


# ---- messages for one viewer: no seq


class Welcome(_Msg, tag="welcome", kw_only=True):
    """Answer to ``hello``. ``recovered`` is set when the hello asked to resume.

    ``recovered: true``: the missed frames follow, in order, then live frames.
    ``recovered: false``: a ``snapshot`` follows; the client must resync from it.
    """

    protocol: int
    room: str
    #: The identity votes count under: the token's subject (never a client-chosen id).
    participant: str
    #: What this connection may do in this room.
    role: Role = "viewer"
    #: A server-issued anonymous identity (a signed token) when the hello had none, or a
    #: refreshed one: store it and send it as ``hello.token`` on every later connection.
    identity: str | None = None
    epoch: str
    seq: int
    recovered: bool | None = None
    limits: Limits
    reactions: list[str]
    tick_ms: int


class Snapshot(_Msg, tag="snapshot", kw_only=True):
    """The room as of room frame ``seq``: the next room frame is ``seq + 1``."""

    epoch: str
    seq: int
    title: str
    phase: PhaseName
    beat: int
    story: list[StoryBeat]
    truncated: bool
    partial: str
    ballot: Ballot | None
    tally: Tally | None
    mood: Mood
    viewers: int
    narrator: NarratorState
    reason: str | None = None
    my_vote: int | None = None
    #: The scene cue of the last committed beat (None before the first).
    cue: Cue | None = None


class Error(_Msg, tag="error", kw_only=True):
    """Something the client sent was not applied; ``code`` is from docs/protocol.md.

    ``ref`` names the client message type the error answers (``"hello"``,
    ``"vote"``...) when the server knows it, else null.
    """

    code: ErrorCode
    message: str
    ref: str | None = None


class VoteAck(_Msg, tag="vote_ack", kw_only=True):
    """A vote was applied: ``counted`` (first), ``changed`` (replaced) or ``unchanged``."""

    window: int
    option: int
    status: VoteStatus


class Pong(_Msg, tag="pong", kw_only=True):
    """Answer to ``ping``."""

    nonce: int
    server_time_ms: int


class ModAck(_Msg, tag="mod_ack", kw_only=True):
    """A ``moderate`` action was applied (``ref`` echoes the request's)."""

    action: str
    ref: str | None = None
    detail: str = ""


class HeldBeat(msgspec.Struct, kw_only=True, gc=False):
    """A beat waiting for a moderator: approve, edit or reject it by ``hold``."""

    hold: int
    beat: int
    text: str
    choice: str | None = None
    reason: str
    held_at_ms: int


class AuditRecord(msgspec.Struct, kw_only=True, gc=False):
    """Who did what: one moderator action, applied (``outcome: ok``) or refused (its code)."""

    t_ms: int
    room: str
    subject: str
    role: str
    action: str
    outcome: str
    detail: str = ""


class ModState(_Msg, tag="mod_state", kw_only=True):
    """A room's moderation state, for moderators who sent ``watch`` (sent on every change)."""

    room: str
    approval: bool
    paused: str | None = None
    holds: list[HeldBeat]
    muted: list[str]
    banned: list[str]
    inject: str | None = None
    filter: str
    audit: list[AuditRecord]


RoomMessage = (
    BeatStart
    | Token
    | BeatEnd
    | BeatAbort
    | Ballot
    | Tally
    | VoteResult
    | Mood
    | Presence
    | Phase
    | Narrator
    | Cue
    | Why
    | Rewind
)
ServerMessage = RoomMessage | Welcome | Snapshot | Error | VoteAck | Pong | ModAck | ModState

#: Room frame classes, for code that needs to tell room frames from personal ones.
ROOM_FRAME_TYPES: Final = (
    BeatStart,
    Token,
    BeatEnd,
    BeatAbort,
    Ballot,
    Tally,
    VoteResult,
    Mood,
    Presence,
    Phase,
    Narrator,
    Cue,
    Why,
    Rewind,
)
