"""Plain tests of the bench measurement helpers (no sockets)."""

from __future__ import annotations

from fablecast.bench.engine import stamps_ns
from fablecast.bench.stats import Histogram, SeqTracker, merge_spread, spread_histogram


def test_histogram_percentiles_and_merge() -> None:
    h = Histogram()
    for ms in range(1, 101):
        h.add_us(ms * 1000 - 50)
    assert h.total == 100
    assert h.percentile_ms(0.5) == 50.0
    assert h.percentile_ms(0.99) == 99.0
    other = Histogram()
    other.add_us(20_000_000)  # beyond the dense range: kept exactly
    h.merge_wire(other.to_wire())
    assert h.total == 101
    assert h.percentile_ms(1.0) == 20_000.0
    assert Histogram().percentile_ms(0.5) is None
    assert set(h.summary()) == {"p50", "p99", "p999"}


def test_seq_tracker_counts_loss_duplicates_and_reorders() -> None:
    t = SeqTracker()
    t.reset_to(10)
    for seq in (11, 12, 14, 15):
        t.see(seq)
    assert (t.lost, t.duplicated, t.reordered) == (1, 0, 0)
    t.see(13)  # late: reordered, no longer lost
    assert (t.lost, t.duplicated, t.reordered) == (0, 0, 1)
    t.see(15)
    assert t.duplicated == 1


def test_spread_counts_frames_everyone_got() -> None:
    spread: dict[tuple[int, int], list[int]] = {}
    merge_spread(spread, [(0, 1, 1_000_000, 3_000_000, 2)])
    merge_spread(spread, [(0, 1, 500_000, 2_000_000, 1), (0, 2, 0, 0, 1)])
    h = spread_histogram(spread, {0: 3})
    assert h.total == 1  # seq 2 reached one viewer of three: not a complete frame
    assert h.percentile_ms(0.5) == 2.6


def test_stamps_parse_only_numbers() -> None:
    assert stamps_ns("123 456 hello 789 ") == [123, 456, 789]
