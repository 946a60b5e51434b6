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

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from fablecast.inference.story.embed import Embedder, Vector, cosine
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
    toned = tone in ANCHORS
    vecs = embedder.embed([*candidates, winner, *losers])
    cand = vecs[: len(candidates)]
    win = vecs[len(candidates)]
    lose = vecs[len(candidates) + 1 :]
    out: list[OpeningScore] = []
    for text, c in zip(candidates, cand, strict=True):
        if not text.strip():
            out.append(OpeningScore(text, 0.0, 0.0, EMPTY_SCORE))
            continue
        choice = cosine(c, win) - max((cosine(c, v) for v in lose), default=0.0)
        tone_m = _margin(tone_similarities(c, embedder), tone) if toned and tone else 0.0
        total = choice + tone_weight * tone_m
        if losers and choice > 0:
            total += choice_bonus
        if toned and tone_m > 0:
            total += tone_bonus
        out.append(OpeningScore(text, round(choice, 4), round(tone_m, 4), round(total, 4)))
    return out


def tone_margins(texts: Sequence[str], tone: str, embedder: Embedder) -> list[float]:
    """Per text: its best similarity to ``tone``'s anchors minus the best other tone's.

    ``tone`` must be a key of ``ANCHORS``; an empty text gets ``EMPTY_SCORE``.
    """
    vecs = embedder.embed(texts)
    return [
        round(_margin(tone_similarities(v, embedder), tone), 4) if text.strip() else EMPTY_SCORE
        for text, v in zip(texts, vecs, strict=True)
    ]


@functools.lru_cache(maxsize=8)
def _anchor_vectors(embedder: Embedder) -> tuple[tuple[str, Vector], ...]:
    """Every anchor passage's vector with its tone: embedded once per embedder, not
    once per scoring call (tone steps score every sentence of a beat)."""
    flat = [(n, a) for n in ANCHORS for a in ANCHORS[n]]
    vecs = embedder.embed([a for _, a in flat])
    return tuple((n, v) for (n, _), v in zip(flat, vecs, strict=True))


def tone_similarities(vec: Vector, embedder: Embedder) -> dict[str, float]:
    """Per tone of ``ANCHORS``: the best similarity of ``vec`` (``embedder``'s) to its anchors."""
    best: dict[str, float] = {}
    for name, anchor in _anchor_vectors(embedder):
        best[name] = max(best.get(name, -1.0), cosine(vec, anchor))
    return best


def _margin(best: dict[str, float], tone: str) -> float:
    """``tone``'s similarity minus the best other tone's."""
    return best[tone] - max(s for n, s in best.items() if n != tone)


def best_opening(scores: Sequence[OpeningScore]) -> int:
    """Index of the highest score (the first of equals); ``-1`` for no candidates."""
    if not scores:
        return -1
    return max(range(len(scores)), key=lambda i: (scores[i].score, -i))
