"""bench/pages.py: matching DOM updates to yielded tokens."""

from __future__ import annotations

from fablecast.bench.pages import latencies


def test_each_token_is_timed_by_the_first_update_that_covers_it() -> None:
    # Beat 2's text grew by tokens ending at offsets 5, 9, 14, 20 (yielded at 100..400 ms).
    yields = {2: [(5, 100.0), (9, 200.0), (14, 300.0), (20, 400.0)]}
    # The page saw beat 2 at length 5 (its first update: skipped, maybe from a snapshot),
    # then 14 (two tokens at once, at 330 ms), then 20 (at 420 ms).
    page = [(2, 5, 120.0), (2, 14, 330.0), (2, 20, 420.0)]
    got, unmatched = latencies(yields, page)
    assert got == [130.0, 30.0, 20.0]
    assert unmatched == 0


def test_updates_before_the_window_and_unknown_text_are_not_timed() -> None:
    yields = {1: [(4, 0.0), (8, 50.0)]}
    page = [(1, 4, 10.0), (1, 8, 60.0), (3, 2, 70.0), (3, 9, 80.0)]
    got, unmatched = latencies(yields, page, since_ms=65.0)
    assert got == []  # beat 1's update came before the window
    assert unmatched == 1  # beat 3 grew but no token of beat 3 was yielded
