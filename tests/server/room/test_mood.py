"""server/room/mood.py: decay-weighted mean of (valence, arousal) points, half-life decay."""

from __future__ import annotations

import pytest

from fablecast.protocol.messages import REACTIONS
from fablecast.server.room.mood import REACTION_POINTS, MoodAggregator, MoodSnapshot


def test_empty_mood_is_neutral() -> None:
    assert MoodAggregator().read(100.0) == MoodSnapshot(0.0, 0.0, 0.0, {})


def test_points_are_in_range_and_cover_the_reaction_set() -> None:
    assert set(REACTION_POINTS) == set(REACTIONS)
    for v, a in REACTION_POINTS.values():
        assert -1.0 <= v <= 1.0
        assert -1.0 <= a <= 1.0


@pytest.mark.parametrize("reaction", REACTIONS)
def test_one_reaction_is_its_point(reaction: str) -> None:
    agg = MoodAggregator()
    agg.add(5.0, reaction=reaction)
    snap = agg.read(5.0)
    assert (snap.valence, snap.arousal) == REACTION_POINTS[reaction]
    assert snap.intensity == 1.0
    assert snap.reactions == {reaction: 1.0}


def test_mean_of_points() -> None:
    agg = MoodAggregator()
    agg.add(0.0, reaction="joy")  # (0.8, 0.5)
    agg.add(0.0, reaction="sad")  # (-0.7, -0.4)
    snap = agg.read(0.0)
    assert snap.valence == pytest.approx(0.05)
    assert snap.arousal == pytest.approx(0.05)
    assert snap.intensity == 2.0
    assert snap.reactions == {"joy": 1.0, "sad": 1.0}
    assert list(snap.reactions) == sorted(snap.reactions)


def test_explicit_sample_wins_over_the_reaction_point_and_is_clamped() -> None:
    agg = MoodAggregator()
    agg.add(0.0, reaction="joy", valence=-0.5)
    snap = agg.read(0.0)
    assert (snap.valence, snap.arousal) == (-0.5, REACTION_POINTS["joy"][1])
    agg2 = MoodAggregator()
    agg2.add(0.0, valence=3.0, arousal=-9.0)
    snap2 = agg2.read(0.0)
    assert (snap2.valence, snap2.arousal, snap2.reactions) == (1.0, -1.0, {})


def test_continuous_sample_without_reaction_counts_in_intensity_only() -> None:
    agg = MoodAggregator()
    agg.add(0.0, valence=0.4)
    snap = agg.read(0.0)
    assert (snap.valence, snap.arousal, snap.intensity, snap.reactions) == (0.4, 0.0, 1.0, {})


@pytest.mark.parametrize("half_life", [1.0, 20.0])
def test_intensity_halves_every_half_life(half_life: float) -> None:
    agg = MoodAggregator(half_life_s=half_life)
    agg.add(100.0, reaction="fear")
    agg.add(100.0, reaction="fear")
    assert agg.read(100.0 + half_life).intensity == pytest.approx(1.0, abs=1e-3)
    assert agg.read(100.0 + 2 * half_life).intensity == pytest.approx(0.5, abs=1e-3)
    snap = agg.read(100.0 + 3 * half_life)
    # The mean does not decay: only how much the room reacts does.
    assert (snap.valence, snap.arousal) == REACTION_POINTS["fear"]
    assert snap.reactions == {"fear": 0.25}


def test_recent_samples_weigh_more() -> None:
    agg = MoodAggregator(half_life_s=10.0)
    agg.add(0.0, valence=1.0, arousal=0.0)
    agg.add(10.0, valence=-1.0, arousal=0.0)  # the first now weighs 0.5
    snap = agg.read(10.0)
    assert snap.valence == pytest.approx((0.5 - 1.0) / 1.5, abs=1e-3)
    assert snap.intensity == pytest.approx(1.5)


def test_decay_drops_faded_reactions_and_goes_neutral() -> None:
    agg = MoodAggregator(half_life_s=1.0)
    agg.add(0.0, reaction="laugh")
    assert agg.read(11.0).reactions == {}  # 2**-11 < 1e-3
    assert agg.read(40.0) == MoodSnapshot(0.0, 0.0, 0.0, {})


def test_reading_the_past_does_not_decay_or_undecay() -> None:
    agg = MoodAggregator(half_life_s=10.0)
    agg.add(10.0, reaction="joy")
    assert agg.read(20.0).intensity == pytest.approx(0.5)
    assert agg.read(15.0).intensity == pytest.approx(0.5)  # the clock never runs backwards
    assert agg.read(20.0).intensity == pytest.approx(0.5)


def test_rounding_for_the_wire() -> None:
    agg = MoodAggregator()
    for _ in range(3):
        agg.add(0.0, valence=0.1234567, arousal=-0.7654321)
    snap = agg.read(0.0)
    assert (snap.valence, snap.arousal) == (0.123, -0.765)
