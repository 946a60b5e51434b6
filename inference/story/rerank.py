"""Best-of-n openings: score candidate openings of a beat, pick the one to continue.

After a vote, the narrator samples ``n`` openings of the beat (the same
prefill, each cut at the end of its second sentence) and continues the best.
A candidate's score, with unit sentence embeddings (cosine = dot product)::

    choice = cos(c, winner) - max(cos(c, loser) for each losing option)
    tone   = max cos(c, anchor of the directive's tone)
             - max over the other tones of max cos(c, their anchor)
    score  = choice + tone_weight * tone
             + CHOICE_BONUS if choice > 0 + TONE_BONUS if tone > 0

so the chosen opening acts the winning option out rather than a loser, and
carries the tone asked for. The embedder is the one ``fablecast eval`` scores
with (all-MiniLM-L6-v2 on real engines), so this optimises the metric's own
signal; docs/quality.md reports a keyword cross-check beside it. Pure: texts
and an embedder in, scores out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from fablecast.inference.story.embed import Embedder, cosine
from fablecast.inference.story.tone import ANCHORS

#: Weight of the tone margin next to the choice margin.
TONE_WEIGHT: Final = 1.0
#: Added when the choice margin is positive (the candidate is nearer the winner
#: than every loser): acting the winner out comes first.
CHOICE_BONUS: Final = 1.0
#: Added when the tone margin is positive (its tone is the one asked for): among
#: candidates that act the winner out, one in the right tone wins.
TONE_BONUS: Final = 0.5
#: The score of an empty candidate: below any other (real scores lie within [-4, 4]).
EMPTY_SCORE: Final = -10.0


@dataclass(frozen=True, slots=True)
class OpeningScore:
    """One candidate opening and how it scored."""

    text: str
    #: cos(candidate, winner) - max cos(candidate, loser) (cos(candidate, winner) with no losers).
    choice: float
    #: Margin of the directive's tone over the best other tone (0 with no tone).
    tone: float
    score: float


def score_openings(
    candidates: Sequence[str],
    winner: str,
    losers: Sequence[str],
    tone: str | None,
    embedder: Embedder,
    *,
    tone_weight: float = TONE_WEIGHT,
    choice_bonus: float = CHOICE_BONUS,
    tone_bonus: float = TONE_BONUS,
) -> list[OpeningScore]:
    """Score every candidate (in order); an empty candidate scores ``EMPTY_SCORE``.

    ``tone`` is a key of ``ANCHORS`` (None, or an unknown name: the tone term is 0).
    """
    if not candidates:
        return []
    names = list(ANCHORS) if tone in ANCHORS else []
    flat = [(n, a) for n in names for a in ANCHORS[n]]
    texts = [*candidates, winner, *losers, *(a for _, a in flat)]
    vecs = embedder.embed(texts)
    cand = vecs[: len(candidates)]
    win = vecs[len(candidates)]
    lose = vecs[len(candidates) + 1 : len(candidates) + 1 + len(losers)]
    anchors = vecs[len(candidates) + 1 + len(losers) :]
    out: list[OpeningScore] = []
    for text, c in zip(candidates, cand, strict=True):
        if not text.strip():
            out.append(OpeningScore(text, 0.0, 0.0, EMPTY_SCORE))
            continue
        choice = cosine(c, win) - max((cosine(c, v) for v in lose), default=0.0)
        tone_m = 0.0
        if names:
            best: dict[str, float] = {}
            for (n, _), v in zip(flat, anchors, strict=True):
                best[n] = max(best.get(n, -1.0), cosine(c, v))
            assert tone is not None
            tone_m = best[tone] - max(s for n, s in best.items() if n != tone)
        total = choice + tone_weight * tone_m
        if losers and choice > 0:
            total += choice_bonus
        if names and tone_m > 0:
            total += tone_bonus
        out.append(OpeningScore(text, round(choice, 4), round(tone_m, 4), round(total, 4)))
    return out


def tone_margins(texts: Sequence[str], tone: str, embedder: Embedder) -> list[float]:
    """Per text: its best similarity to ``tone``'s anchors minus the best other tone's.

    ``tone`` must be a key of ``ANCHORS``; an empty text gets ``EMPTY_SCORE``.
    """
    names = list(ANCHORS)
    flat = [(n, a) for n in names for a in ANCHORS[n]]
    vecs = embedder.embed([*texts, *(a for _, a in flat)])
    anchors = vecs[len(texts) :]
    out: list[float] = []
    for text, v in zip(texts, vecs, strict=False):
        if not text.strip():
            out.append(EMPTY_SCORE)
            continue
        best: dict[str, float] = {}
        for (n, _), a in zip(flat, anchors, strict=True):
            best[n] = max(best.get(n, -1.0), cosine(v, a))
        out.append(round(best[tone] - max(s for n, s in best.items() if n != tone), 4))
    return out


def best_opening(scores: Sequence[OpeningScore]) -> int:
    """Index of the highest score (the first of equals); ``-1`` for no candidates."""
    if not scores:
        return -1
    return max(range(len(scores)), key=lambda i: (scores[i].score, -i))
