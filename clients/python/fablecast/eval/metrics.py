"""Story quality metrics of ``fablecast eval`` (pure: texts and an embedder in, numbers out).

Definitions (docs/quality.md):

- ``choice_adherence``: of the beats that follow a vote, the share whose
  generated text (the prefill the server inserts does not count), by its
  first two sentences, is closer to the winning option than to every losing one.
- ``choice_keyword_rate`` (a cross-check that uses no embeddings): of the
  same beats, the share whose first two own sentences share a content word
  with the winning option that no losing option has.
- ``ballots_valid_rate``: ballots with 2-5 options, no junk, every option
  naming an entity of the story, pairwise cosine below ``DISTINCT_THRESHOLD``.
- ``loop_rate``: beats sharing an 8-word run with an earlier beat.
- ``meta_talk_rate``: beats mentioning the audience, viewers or voting.
- ``cut_rate``: beats not ending at a sentence end.
- ``mood_agreement``: of the beats given a tone, the share whose generated
  text is closest (max cosine over ``ANCHORS``) to the anchors of that tone.
- ``state_written_rate``: beats whose story state the engine wrote (validated);
  the others keep the deterministic fold alone.
- ``cues_valid_rate``: cues from the engine that passed validation (first try
  or retry), over all beats; fallbacks are counted apart (``cues_fallback``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from fablecast.inference.story.ballots import ballot_problems
from fablecast.inference.story.embed import Embedder, cosine
from fablecast.inference.story.rerank import tone_similarities
from fablecast.inference.story.text import ends_sentence, is_meta, sentences, shares_run, words


@dataclass(slots=True)
class BeatRecord:
    """One beat as eval saw it."""

    beat: int
    text: str
    generated: str
    choice: str | None = None
    losers: list[str] = field(default_factory=list)
    tone: str | None = None
    options: list[str] = field(default_factory=list)
    entities: list[str] = field(default_factory=list)
    subject: str = ""
    ballot_fallback: int = 0
    cue: dict[str, Any] | None = None
    cue_source: str = "engine"
    #: The engine's story state after the beat (``StateUpdate.to_dict``; None: it wrote none).
    state: dict[str, Any] | None = None
    dropped: int = 0
    tokens: int = 0
    first_token_s: float | None = None
    first_text_s: float | None = None
    #: Scores of the candidate openings (``OpeningScore`` as dicts) and the one chosen.
    openings: list[dict[str, Any]] = field(default_factory=list)
    opening: int | None = None
    #: Tone margins of the candidate rests (the tone pass) and the one told.
    rests: list[float] = field(default_factory=list)
    rest: int | None = None


def _rate(hits: int, total: int) -> float | None:
    return round(hits / total, 3) if total else None


def percentile(values: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile (None for no values)."""
    if not values:
        return None
    s = sorted(values)
    k = max(0, min(len(s) - 1, math.ceil(p / 100 * len(s)) - 1))
    return round(s[k], 3)


def adheres(record: BeatRecord, embedder: Embedder) -> bool | None:
    """Whether the beat's own text is closer to its winning option than to each loser."""
    if not record.choice or not record.losers:
        return None
    head = " ".join(sentences(record.generated)[:2])
    if not head:
        return False
    vecs = embedder.embed([head, record.choice, *record.losers])
    win = cosine(vecs[0], vecs[1])
    return all(win > cosine(vecs[0], v) for v in vecs[2:])


#: Words that carry no meaning of their own (left out of the keyword cross-check).
_STOP = frozenset(
    re.findall(
        r"\w+",
        "the a an and or to into onto at with toward towards for from on in inside under behind "
        "near through across over after about around past his her their its my our your this that "
        "then them they she he i is am are was were be been just will can",
    )
)


def _stems(text: str) -> set[str]:
    return {w[:5] for w in words(text) if len(w) >= 3 and w not in _STOP}


def keyword_adheres(record: BeatRecord) -> bool | None:
    """Cross-check of ``adheres`` without embeddings: the beat's first two own sentences
    share a content word (5-letter stem) with the winning option that no losing option has."""
    if not record.choice or not record.losers:
        return None
    own = _stems(record.choice) - set().union(*(_stems(o) for o in record.losers))
    head = _stems(" ".join(sentences(record.generated)[:2]))
    return bool(own & head)


def tone_of(text: str, embedder: Embedder) -> str | None:
    """The tone whose anchors ``text`` is closest to."""
    if not text.strip():
        return None
    best = tone_similarities(embedder.embed([text])[0], embedder)
    return max(best, key=lambda n: best[n])


def score(stories: Sequence[Sequence[BeatRecord]], embedder: Embedder) -> dict[str, Any]:
    """Every metric over ``stories`` (each one story's beats, in order)."""
    records = [r for story in stories for r in story]
    adh = [a for r in records if (a := adheres(r, embedder)) is not None]
    kw = [a for r in records if (a := keyword_adheres(r)) is not None]
    ballots = [r for r in records if r.options]
    valid = [not ballot_problems(r.options, r.entities, embedder, r.subject) for r in ballots]
    loops = 0
    for story in stories:
        earlier: list[str] = []
        for r in story:
            loops += shares_run(r.text, earlier)
            earlier.append(r.text)
    toned = [r for r in records if r.tone]
    agree = [tone_of(r.generated, embedder) == r.tone for r in toned]
    first = [r.first_token_s for r in records if r.choice and r.first_token_s is not None]
    shown = [r.first_text_s for r in records if r.choice and r.first_text_s is not None]
    return {
        "beats": len(records),
        "choice_adherence": _rate(sum(adh), len(adh)),
        "choice_keyword_rate": _rate(sum(kw), len(kw)),
        "ballots_valid_rate": _rate(sum(valid), len(valid)),
        "ballot_fallback_options": sum(r.ballot_fallback for r in records),
        "loop_rate": _rate(loops, len(records)),
        "meta_talk_rate": _rate(sum(is_meta(r.text) for r in records), len(records)),
        "cut_rate": _rate(sum(not ends_sentence(r.text) for r in records), len(records)),
        "mood_agreement": _rate(sum(agree), len(agree)),
        "cues_valid_rate": _rate(sum(r.cue_source == "engine" for r in records), len(records)),
        "cues_fallback": sum(r.cue_source != "engine" for r in records),
        "state_written_rate": _rate(sum(r.state is not None for r in records), len(records)),
        "sentences_dropped": sum(r.dropped for r in records),
        "vote_close_to_first_token_s": {"p50": percentile(first, 50), "p95": percentile(first, 95)},
        "vote_close_to_first_text_s": {"p50": percentile(shown, 50), "p95": percentile(shown, 95)},
    }
