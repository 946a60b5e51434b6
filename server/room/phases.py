"""Room phases and what each accepts, as data.

Rules of the beat loop::

    paused ──resume──> narrating ──narration done──> (narrating: ballot being written)
                           │                                 │ choices ready
                           │ engine failed                   ▼
                           └──────> paused              voting ──window closed──> resolving
                                      ▲                                               │
                                      └── room empty ── at reveal done ──> narrating ─┘

- Narration and the ballot that follows it belong to ``narrating``; the room
  enters ``voting`` only when a ballot exists.
- ``resolving`` is the short reveal between a closed window and the next beat
  (clients show the winner); the next narration request goes out when it ends.
- ``paused`` has a reason: ``empty`` (nobody is watching; resumes on join),
  ``engine`` (the engine failed or stalled; resumes on the retry timer),
  ``busy`` (the engine's queue was full; retried the same way) or ``starting``.
- A rewind (the event log's, ``server/store``) goes through ``paused`` from any
  phase, then resumes at once: a ballot for the beat rewound to.
- A moderator may pause (or kill) a room from any phase: reason ``moderator``
  (``killed``); only a moderator's resume ends it (server/room/moderation.py).
- Viewer events (join, leave, react) are accepted in every phase; ``vote``
  only in ``voting``.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final


class Phase(StrEnum):
    """The phase of a room."""

    NARRATING = "narrating"
    VOTING = "voting"
    RESOLVING = "resolving"
    PAUSED = "paused"


class Step(StrEnum):
    """Internal transitions between phases (the edges of the diagram above)."""

    BALLOT_OPENED = "ballot_opened"
    WINDOW_CLOSED = "window_closed"
    REVEAL_DONE = "reveal_done"
    ENGINE_FAILED = "engine_failed"
    EMPTY = "empty"
    RESUME = "resume"
    REWIND = "rewind"
    #: A beat is told again in place (filter block, rejected held beat).
    RETELL = "retell"
    #: A moderator paused (or killed) the room, from any phase.
    MOD_PAUSE = "mod_pause"
    #: A moderator resumed a room paused with an open window: voting goes on.
    RESUME_VOTE = "resume_vote"


#: {phase: {step: next phase}}. A step not listed for a phase is a bug in the core.
TRANSITIONS: Final[dict[Phase, dict[Step, Phase]]] = {
    Phase.NARRATING: {
        Step.REWIND: Phase.PAUSED,
        Step.BALLOT_OPENED: Phase.VOTING,
        Step.ENGINE_FAILED: Phase.PAUSED,
        Step.RETELL: Phase.NARRATING,
        Step.MOD_PAUSE: Phase.PAUSED,
    },
    Phase.VOTING: {
        Step.REWIND: Phase.PAUSED,
        Step.WINDOW_CLOSED: Phase.RESOLVING,
        Step.MOD_PAUSE: Phase.PAUSED,
    },
    Phase.RESOLVING: {
        Step.REWIND: Phase.PAUSED,
        Step.REVEAL_DONE: Phase.NARRATING,
        Step.EMPTY: Phase.PAUSED,
        Step.MOD_PAUSE: Phase.PAUSED,
    },
    Phase.PAUSED: {
        Step.RESUME: Phase.NARRATING,
        Step.ENGINE_FAILED: Phase.PAUSED,
        Step.REWIND: Phase.PAUSED,
        Step.MOD_PAUSE: Phase.PAUSED,
        Step.RESUME_VOTE: Phase.VOTING,
        Step.EMPTY: Phase.PAUSED,
    },
}

#: Client messages each phase accepts (by protocol ``type``).
ACCEPTS: Final[dict[Phase, frozenset[str]]] = {
    Phase.NARRATING: frozenset({"react", "ping"}),
    Phase.VOTING: frozenset({"vote", "react", "ping"}),
    Phase.RESOLVING: frozenset({"react", "ping"}),
    Phase.PAUSED: frozenset({"react", "ping"}),
}


class TransitionError(RuntimeError):
    """The core asked for a transition the table does not allow (a bug, never client input)."""


def next_phase(phase: Phase, step: Step) -> Phase:
    """The phase after ``step`` from ``phase``; raises TransitionError if not allowed."""
    try:
        return TRANSITIONS[phase][step]
    except KeyError:
        raise TransitionError(f"{step.value} is not allowed in {phase.value}") from None
