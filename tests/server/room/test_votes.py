"""server/room/votes.py: one counted vote per participant, replaceable, explained tie-breaks."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fablecast.server.room.votes import VoteWindow


def window(n: int = 3, number: int = 1) -> VoteWindow:
    return VoteWindow(number, tuple(f"option {i}" for i in range(n)), 10.0, 25.0)


@pytest.mark.parametrize("n", [0, 1, 6])
def test_ballot_size_is_2_to_5(n: int) -> None:
    with pytest.raises(ValueError, match="2 to 5"):
        window(n)


@pytest.mark.parametrize("n", [2, 5])
def test_ballot_size_bounds(n: int) -> None:
    w = window(n)
    assert w.counts == [0] * n
    assert w.votes == {}


def test_counted_changed_unchanged() -> None:
    w = window()
    assert w.cast("a", 0) == "counted"
    assert w.counts == [1, 0, 0]
    assert w.cast("a", 0) == "unchanged"
    assert w.counts == [1, 0, 0]
    assert w.cast("a", 2) == "changed"
    assert w.counts == [0, 0, 1]
    assert w.cast("b", 2) == "counted"
    assert w.counts == [0, 0, 2]
    assert w.votes == {"a": 2, "b": 2}
    assert w.cast("a", 0) == "changed"
    assert w.counts == [1, 0, 1]


def test_clear_winner_has_no_tie_break() -> None:
    w = window()
    for p, o in [("a", 1), ("b", 1), ("c", 0)]:
        w.cast(p, o)
    r = w.result("seed")
    assert (r.winner, r.counts, r.voters, r.tie_break) == (1, (1, 2, 0), 3, None)


def test_tie_goes_to_first_to_reach() -> None:
    w = window()
    w.cast("a", 2)  # option 2 reaches 1 first
    w.cast("b", 0)
    r = w.result("seed")
    assert (r.winner, r.counts, r.voters, r.tie_break) == (2, (1, 0, 1), 2, "first_to_reach")


def test_tie_break_uses_the_tied_count_not_earlier_ones() -> None:
    w = window()
    w.cast("a", 0)  # 0 reaches 1 first...
    w.cast("b", 1)
    w.cast("c", 1)  # ...but 1 reaches 2 first
    w.cast("d", 0)
    r = w.result("seed")
    assert (r.winner, r.counts, r.tie_break) == (1, (2, 2, 0), "first_to_reach")


def test_tie_break_after_changed_votes_uses_the_last_reach() -> None:
    w = window()
    w.cast("a", 0)
    w.cast("b", 0)  # 0 reaches 2 (arrival 2)
    w.cast("c", 1)
    w.cast("b", 1)  # 0 drops to 1, 1 reaches 2 (arrival 4)
    w.cast("d", 0)  # 0 reaches 2 again (arrival 5): later than option 1
    r = w.result("seed")
    assert r.counts == (2, 2, 0)
    assert (r.winner, r.tie_break) == (1, "first_to_reach")


def test_unchanged_vote_does_not_count_as_reaching() -> None:
    w = window()
    w.cast("a", 1)
    w.cast("b", 0)
    w.cast("a", 1)  # unchanged: option 1 still reached 1 first
    assert w.result("s").winner == 1


def test_no_votes_draw_is_seeded_and_deterministic() -> None:
    results = {window(5, number=7).result("room-seed").winner for _ in range(5)}
    assert len(results) == 1
    r = window(5, number=7).result("room-seed")
    assert r.tie_break == "no_votes_draw"
    assert r.voters == 0
    assert r.counts == (0, 0, 0, 0, 0)
    assert r.winner == random.Random("room-seed:7").randrange(5)


def test_no_votes_draw_varies_with_seed_and_window() -> None:
    winners = {window(5, number=n).result(f"seed{s}").winner for n in range(1, 8) for s in range(8)}
    assert len(winners) > 1
    assert winners <= set(range(5))


def test_votes_moved_away_is_not_a_draw() -> None:
    w = window(2)
    w.cast("a", 0)
    w.cast("a", 1)
    r = w.result("s")
    assert (r.winner, r.counts, r.voters, r.tie_break) == (1, (0, 1), 1, None)


casts = st.lists(
    st.tuples(st.sampled_from(["a", "b", "c", "d", "e", "f"]), st.integers(0, 3)), max_size=60
)


@settings(max_examples=150, deadline=None)
@given(n_options=st.integers(2, 5), seq=casts)
def test_counts_always_equal_the_histogram_of_current_votes(
    n_options: int, seq: list[tuple[str, int]]
) -> None:
    w = window(n_options)
    current: dict[str, int] = {}
    for participant, raw in seq:
        option = raw % n_options
        previous = current.get(participant)
        status = w.cast(participant, option)
        expected = (
            "counted" if previous is None else "unchanged" if previous == option else "changed"
        )
        assert status == expected
        current[participant] = option
        hist = Counter(current.values())
        assert w.counts == [hist[i] for i in range(n_options)]
        assert w.votes == current
    r = w.result("seed")
    assert r.voters == len(current)
    assert sum(r.counts) == len(current)
    if current:
        assert r.counts[r.winner] == max(r.counts)
        tied = r.counts.count(max(r.counts)) > 1
        assert r.tie_break == ("first_to_reach" if tied else None)
    else:
        assert r.tie_break == "no_votes_draw"
