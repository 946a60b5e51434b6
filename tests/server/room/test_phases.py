"""server/room/phases.py: the transition table and what each phase accepts."""

from __future__ import annotations

import itertools

import pytest

from fablecast.server.room.phases import (
    ACCEPTS,
    TRANSITIONS,
    Phase,
    Step,
    TransitionError,
    next_phase,
)

ALLOWED = [
    (Phase.NARRATING, Step.BALLOT_OPENED, Phase.VOTING),
    (Phase.NARRATING, Step.ENGINE_FAILED, Phase.PAUSED),
    (Phase.VOTING, Step.WINDOW_CLOSED, Phase.RESOLVING),
    (Phase.RESOLVING, Step.REVEAL_DONE, Phase.NARRATING),
    (Phase.RESOLVING, Step.EMPTY, Phase.PAUSED),
    (Phase.PAUSED, Step.RESUME, Phase.NARRATING),
    (Phase.PAUSED, Step.ENGINE_FAILED, Phase.PAUSED),
    (Phase.NARRATING, Step.REWIND, Phase.PAUSED),
    (Phase.VOTING, Step.REWIND, Phase.PAUSED),
    (Phase.RESOLVING, Step.REWIND, Phase.PAUSED),
    (Phase.PAUSED, Step.REWIND, Phase.PAUSED),
    # Moderation: a retold beat, a moderator's pause or kill from any phase, a resume
    # into the open window, and a resume into an empty room.
    (Phase.NARRATING, Step.RETELL, Phase.NARRATING),
    (Phase.NARRATING, Step.MOD_PAUSE, Phase.PAUSED),
    (Phase.VOTING, Step.MOD_PAUSE, Phase.PAUSED),
    (Phase.RESOLVING, Step.MOD_PAUSE, Phase.PAUSED),
    (Phase.PAUSED, Step.MOD_PAUSE, Phase.PAUSED),
    (Phase.PAUSED, Step.RESUME_VOTE, Phase.VOTING),
    (Phase.PAUSED, Step.EMPTY, Phase.PAUSED),
]
ALLOWED_PAIRS = {(p, s) for p, s, _ in ALLOWED}
FORBIDDEN = [(p, s) for p, s in itertools.product(Phase, Step) if (p, s) not in ALLOWED_PAIRS]


@pytest.mark.parametrize(("phase", "step", "after"), ALLOWED)
def test_allowed_transitions(phase: Phase, step: Step, after: Phase) -> None:
    assert next_phase(phase, step) is after


def test_table_is_exactly_the_diagram() -> None:
    table = {(p, s, n) for p, steps in TRANSITIONS.items() for s, n in steps.items()}
    assert table == set(ALLOWED)
    assert set(TRANSITIONS) == set(Phase)


@pytest.mark.parametrize(("phase", "step"), FORBIDDEN)
def test_forbidden_transitions_raise(phase: Phase, step: Step) -> None:
    with pytest.raises(TransitionError, match=f"{step.value} is not allowed in {phase.value}"):
        next_phase(phase, step)


def test_forbidden_examples() -> None:
    # Voting can only end by its window closing; a paused room cannot reveal.
    assert (Phase.VOTING, Step.ENGINE_FAILED) in FORBIDDEN
    assert (Phase.VOTING, Step.EMPTY) in FORBIDDEN
    assert (Phase.PAUSED, Step.REVEAL_DONE) in FORBIDDEN
    assert (Phase.NARRATING, Step.WINDOW_CLOSED) in FORBIDDEN


def test_transition_error_is_a_runtime_error() -> None:
    assert issubclass(TransitionError, RuntimeError)


def test_every_phase_is_reachable_and_can_be_left() -> None:
    targets = {n for steps in TRANSITIONS.values() for n in steps.values()}
    assert targets == set(Phase)
    assert all(TRANSITIONS[p] for p in Phase)


@pytest.mark.parametrize("phase", list(Phase))
def test_viewer_messages_accepted_in_every_phase(phase: Phase) -> None:
    assert {"react", "ping"} <= ACCEPTS[phase]


@pytest.mark.parametrize("phase", list(Phase))
def test_vote_only_in_voting(phase: Phase) -> None:
    assert ("vote" in ACCEPTS[phase]) == (phase is Phase.VOTING)


def test_hello_is_never_a_phase_matter() -> None:
    assert all("hello" not in ACCEPTS[p] for p in Phase)


def test_phase_values() -> None:
    assert [p.value for p in Phase] == ["narrating", "voting", "resolving", "paused"]
    assert Phase("voting") is Phase.VOTING
