"""One vote window: one counted vote per participant, replaceable, with explained tie-breaks.

Rules:
- A participant has at most one vote in a window; voting again replaces it
  (``changed``), or is a no-op when it names the same option (``unchanged``).
- Counts always equal the number of participants whose current vote names each option.
- Winner: the most votes. A tie goes to the tied option that reached that count
  first (``tie_break="first_to_reach"``). With no votes at all, a seeded draw
  picks the winner (``tie_break="no_votes_draw"``), so a room nobody votes in
  still moves on, reproducibly.
- A vetoed option (a moderator's veto) cannot be voted for or win; the votes it
  had are dropped (their voters may vote again). One option at least stays.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Literal

VoteOutcome = Literal["counted", "changed", "unchanged"]


@dataclass(frozen=True, slots=True)
class WindowResult:
    """The closed window's outcome."""

    winner: int
    counts: tuple[int, ...]
    voters: int
    tie_break: str | None


@dataclass(slots=True)
class VoteWindow:
    """The votes of one open window."""

    window: int
    options: tuple[str, ...]
    opened_at: float
    closes_at: float
    votes: dict[str, int] = field(default_factory=dict)
    counts: list[int] = field(default_factory=list)
    vetoed: set[int] = field(default_factory=set)
    # reached[option][count] = arrival number at which the option last reached count.
    _reached: list[dict[int, int]] = field(default_factory=list)
    _arrivals: int = 0

    def __post_init__(self) -> None:
        if not 2 <= len(self.options) <= 5:
            raise ValueError("a ballot has 2 to 5 options")
        self.counts = [0] * len(self.options)
        self._reached = [{} for _ in self.options]

    def cast(self, participant: str, option: int) -> VoteOutcome:
        """Apply one vote. The caller has checked ``0 <= option < len(options)``."""
        previous = self.votes.get(participant)
        if previous == option:
            return "unchanged"
        self._arrivals += 1
        if previous is not None:
            self.counts[previous] -= 1
        self.votes[participant] = option
        self.counts[option] += 1
        self._reached[option][self.counts[option]] = self._arrivals
        return "counted" if previous is None else "changed"

    def veto(self, option: int) -> None:
        """Take ``option`` off the ballot and drop its votes (the caller checked it is valid)."""
        self.vetoed.add(option)
        for participant in [p for p, o in self.votes.items() if o == option]:
            self.withdraw(participant)

    def withdraw(self, participant: str) -> None:
        """Drop ``participant``'s vote, if any (a veto, a ban)."""
        option = self.votes.pop(participant, None)
        if option is not None:
            self.counts[option] -= 1

    def result(self, seed: str) -> WindowResult:
        """The winner, with how a tie (or no vote) was broken."""
        counts = tuple(self.counts)
        voters = len(self.votes)
        open_options = [i for i in range(len(self.options)) if i not in self.vetoed]
        if voters == 0:
            rnd = random.Random(f"{seed}:{self.window}")
            pick = open_options[rnd.randrange(len(open_options))]
            return WindowResult(pick, counts, 0, "no_votes_draw")
        top = max(counts[i] for i in open_options)
        tied = [i for i in open_options if counts[i] == top]
        if len(tied) == 1:
            return WindowResult(tied[0], counts, voters, None)
        winner = min(tied, key=lambda i: self._reached[i][top])
        return WindowResult(winner, counts, voters, "first_to_reach")
