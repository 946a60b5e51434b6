"""Best-of-n opening scores with a fake embedder (no model)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from fablecast.inference.story.rerank import EMPTY_SCORE, OpeningScore, best_opening, score_openings
from fablecast.inference.story.tone import ANCHORS

TONES = list(ANCHORS)
#: Dimensions: 0 the winner's topic, 1 the loser's, then one per tone.
DIMS = 2 + len(TONES)


class Fake:
    """Maps a text to a vector by markers: WIN, LOSE, and tone names in capitals."""

    name = "fake"

    def known(self, word: str) -> bool:
        return True

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        out = []
        for text in texts:
            v = [0.0] * DIMS
            v[0] = text.count("WIN")
            v[1] = text.count("LOSE")
            for i, tone in enumerate(TONES):
                anchor = any(text == a for a in ANCHORS[tone])
                v[2 + i] = 1.0 if anchor else text.count(tone.upper())
            norm = math.sqrt(sum(x * x for x in v)) or 1.0
            out.append([x / norm for x in v])
        return out


def test_the_candidate_that_acts_the_winner_out_scores_best() -> None:
    scores = score_openings(["LOSE LOSE", "WIN WIN", "WIN LOSE"], "WIN", ["LOSE"], None, Fake())
    assert [s.tone for s in scores] == [0.0, 0.0, 0.0]
    assert scores[1].choice > scores[2].choice > scores[0].choice
    assert best_opening(scores) == 1


def test_tone_breaks_a_tie_between_equally_adherent_candidates() -> None:
    scores = score_openings(["WIN FUNNY", "WIN TENSE"], "WIN", ["LOSE"], "tense", Fake())
    assert scores[0].choice == scores[1].choice
    assert scores[1].tone > 0 > scores[0].tone
    assert best_opening(scores) == 1


def test_a_candidate_right_on_both_beats_one_that_excels_at_one() -> None:
    # Candidate 0: closest to the winner but in the wrong tone; 1: nearer the
    # winner than the loser, and in the tone asked for.
    scores = score_openings(
        ["WIN WIN WIN SAD", "WIN WIN LOSE TENSE TENSE"], "WIN", ["LOSE"], "tense", Fake()
    )
    assert scores[0].choice > scores[1].choice > 0
    assert best_opening(scores) == 1


def test_no_losers_no_tone_and_empty_candidates() -> None:
    scores = score_openings(["", "WIN"], "WIN", [], None, Fake())
    assert scores[0].score == EMPTY_SCORE
    assert scores[1].choice == 1.0 and scores[1].tone == 0.0
    assert best_opening(scores) == 1
    assert score_openings([], "WIN", [], None, Fake()) == []
    assert best_opening([]) == -1
    # An unknown tone name adds nothing.
    assert score_openings(["WIN"], "WIN", [], "eerie", Fake())[0].tone == 0.0


def test_ties_pick_the_first() -> None:
    same = [OpeningScore("a", 0, 0, 1.0), OpeningScore("b", 0, 0, 1.0)]
    assert best_opening(same) == 0
