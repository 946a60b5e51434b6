"""Ballots grounded in the story: how options are asked for, checked, deduped and replaced.

An option is a short action sentence about the protagonist that names an
entity of the story: ``Sam follows Lena Voss`` / ``Elsa opens the golden key``.
The engine writes it as the continuation of ``"{subject}"`` (the prompt shows
the shape), constrained by ``option_regex``: 1 to 5 lower-case words, then one
entity from the story's list, then a full stop. No digits, no list numbering.
Several candidates are sampled; ``select`` keeps the first ``n`` that are
clean and pairwise distinct (cosine below ``DISTINCT_THRESHOLD``), and fills
any gap with ``fallback_options`` (grounded by construction).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Sequence

from fablecast.inference.story.embed import Embedder, cosine
from fablecast.inference.story.state import StoryCard, mentions
from fablecast.inference.story.text import is_meta, one_line, without

#: Two options whose embeddings (all-MiniLM-L6-v2) have a cosine at or above
#: this are the same option ("Climb the final ladder" / "... ladders": 0.98;
#: different actions on one entity score about 0.5-0.75).
DISTINCT_THRESHOLD = 0.8
#: Longest option shown on a ballot.
MAX_OPTION_CHARS = 80
#: Candidates sampled per ballot (``n`` of them are kept).
CANDIDATES = 6

#: A verb, at most one more word, an optional preposition, then the entity.
_VERB = r" [a-z][a-z']{1,14}( [a-z][a-z']{2,14})?"
_PREPS = (
    "to|into|at|with|toward|towards|for|from|on|in|inside|under|behind|near|through|across|"
    "over|after|about|around|past"
)
#: Words that may not stand right before an entity (the entity brings its own article).
_DETERMINERS = frozenset(
    [
        "the",
        "a",
        "an",
        "her",
        "his",
        "their",
        "its",
        "my",
        "our",
        "your",
        "this",
        "that",
    ]
)


#: First words that make no action ("Mira does not to the market", "I am to the
#: docks", "I will need to Lena"): auxiliaries, modals and their negations.
_NOT_ACTIONS = frozenset(
    re.findall(
        r"[a-z']+",
        "am is are was were be been being has have had does do did will would can could "
        "should shall must may might need needs isn't aren't wasn't weren't hasn't haven't "
        "hadn't doesn't don't didn't won't wouldn't can't couldn't shouldn't",
    )
)


#: First words that are no verb at all ("Aria and the starship", "Aria to the
#: starship", "Aria herself finds Vex"): conjunctions, pronouns, adverbs of
#: sequence and the prepositions of ``_PREPS``.
_NOT_VERBS = frozenset(
    re.findall(
        r"[a-z]+",
        "and or but nor so then also just still now not never only even the a an "
        "he she it they we you i me him her us them myself herself himself itself "
        "themselves ourselves yourself",
    )
) | frozenset(_PREPS.split("|"))
#: Verbs that take another verb after "to": with an entity there instead the
#: option says nothing ("Aria decides to Rook", "I prepare to the docks").
_CATENATIVE = frozenset(
    re.findall(
        r"[a-z]+",
        "decide decides decided prepare prepares prepared try tries tried want wants wanted "
        "begin begins began start starts started plan plans planned hope hopes hoped "
        "set sets seem seems seemed learn learns learned agree agrees agreed refuse refuses "
        "refused attempt attempts attempted choose chooses chose manage manages managed "
        "continue continues continued need needs needed forget forgets forgot promise "
        "promises promised offer offers offered dare dares dared",
    )
)
#: Object pronouns: one right after the verb and before a preposition leaves the
#: action's object unclear ("Aria rolls her to the bridge").
_OBJECT_PRONOUNS = frozenset(
    re.findall(
        r"[a-z]+",
        "her him them it me us you one someone something herself himself themselves "
        "itself myself yourself",
    )
)
#: Prepositions beyond ``_PREPS`` (two in a row make no sense: "beside across").
_MORE_PREPS = frozenset(
    re.findall(
        r"[a-z]+",
        "beside besides between beyond along among against onto upon via within without "
        "below above beneath",
    )
)
#: Every preposition the checks know.
_ALL_PREPS = frozenset(_PREPS.split("|")) | _MORE_PREPS
#: The determiners as a regex alternation.
_DET_ALT = "|".join(sorted(_DETERMINERS))
#: Numbers spelled out: like digits, list talk rather than an action.
_NUMBER_WORDS = frozenset(
    re.findall(r"[a-z]+", "two three four five six seven eight nine ten dozen hundred")
)
#: Irregular past forms: with a third-person subject the first word must look
#: like a verb (``-s``, ``-ed`` or one of these); "Mira van Tomas" does not.
_IRREGULAR_PAST = frozenset(
    re.findall(
        r"[a-z]+",
        "found took went ran saw met left led fled hid held kept brought bought caught "
        "fought thought sought taught told sold sent spent stood sat came became gave got "
        "made paid said struck stole swam threw wrote rode rose spoke broke chose drove "
        "flew froze grew knew drew wore tore woke shook fell felt heard lost lit read cut "
        "hit put set shut let hurt cast crept slept swept wept dug hung won spun stuck "
        "sang rang drank began climbed slid bit hid bent lent dealt meant leapt knelt",
    )
)


def _escape(text: str) -> str:
    """Escape regex metacharacters (not spaces: guided-decoding grammars take them as is)."""
    return re.sub(r"([.^$*+?{}\[\]\\|()])", r"\\\1", text)


def option_regex(entities: Sequence[str]) -> str:
    """The shape of an option's continuation after the subject.

    A verb, at most one more word, an optional preposition, one entity of the
    story and a full stop: ``" walks into the office."``, ``" asks Lena."``.
    """
    alts = "|".join(_escape(e) for e in dict.fromkeys(entities) if e)
    if not alts:  # a story with no named places or things: a short free action
        return f"{_VERB}( [a-z][a-z']{{1,14}}){{1,3}}\\."
    return f"{_VERB}( ({_PREPS}))? ({alts})\\."


def clean_option(
    subject: str,
    continuation: str,
    entities: Sequence[str] = (),
    known: Callable[[str], bool] | None = None,
) -> str | None:
    """``subject`` + the engine's continuation as a ballot option (None: unusable).

    With ``known``, every word outside the ``entities`` must be a known word:
    a small model under a grammar sometimes spells junk ("ofdownloadedadk").
    """
    text = one_line(f"{subject}{continuation}", MAX_OPTION_CHARS + 1).rstrip(" .")
    rest = without(continuation, entities)
    if re.search(r"[^\sA-Za-z,-]", rest.strip().rstrip(".")):
        return None  # an apostrophe or a symbol outside the entity ("love it'l's the club")
    if known is not None and not all(known(w) for w in re.findall(r"[a-z]+", rest.lower())):
        return None
    if len(text) > MAX_OPTION_CHARS or len(text.split()) < 3 or is_meta(text):
        return None
    if re.search(r"\d|\b(\w+) \1\b", text):
        return None  # digits (list numbering) or a stutter ("the the")
    if not _an_action(subject, continuation, entities):
        return None
    return text


def _an_action(subject: str, continuation: str, entities: Sequence[str]) -> bool:
    """Whether the continuation reads as an action: a verb where the verb should be,
    and none of the shapes a small model writes under the grammar instead."""
    words = [w.lower() for w in continuation.split()]
    if not words:
        return False
    first = words[0]
    if first in _NOT_ACTIONS or first in _NOT_VERBS or first.endswith("ly"):
        return False  # an auxiliary, no verb at all, or an adverb ("initially sets about")
    third = subject.strip().lower() not in ("i", "we")
    if third and not re.search(r"(s|ed)$", first) and first not in _IRREGULAR_PAST:
        return False  # no verb form after a name ("Mira van Tomas")
    if first in _CATENATIVE and "to" in words[1:3]:
        return False  # "decides to Rook": the verb after "to" is missing
    if len(words) > 2 and words[1] in _OBJECT_PRONOUNS and words[2] in _ALL_PREPS:
        return False  # "rolls her to the bridge": whose?
    if len(words) > 1 and words[1] in ("and", "or", "but"):
        return False  # "waits and the Archivist"
    for a, b in itertools.pairwise(words):
        if a in _ALL_PREPS and b in _ALL_PREPS:
            return False  # "stands beside across the lantern"
        if a in _DETERMINERS and (b in _ALL_PREPS or b in _DETERMINERS):
            return False  # "dances the from the station", "grabs her the lantern"
    if any(w in _NUMBER_WORDS for w in words):
        return False  # "performs two on the village"
    return not any(
        e[:1].isupper() and re.search(rf"\b(?i:{_DET_ALT}) {re.escape(e)}\b", continuation)
        for e in entities
    )  # an article before a name: "holds her Master Gao", "searches the Vex"


def grounded(option: str, entities: Sequence[str], subject: str = "") -> bool:
    """Whether ``option`` names an entity of the story other than its subject."""
    body = option[len(subject) :] if subject and option.startswith(subject) else option
    return any(mentions(body, e) for e in entities)


def distinct(options: Sequence[str], embedder: Embedder) -> bool:
    """Whether the options are pairwise distinct by meaning."""
    vecs = embedder.embed(list(options))
    return all(
        cosine(vecs[i], vecs[j]) < DISTINCT_THRESHOLD
        for i in range(len(vecs))
        for j in range(i + 1, len(vecs))
    )


def ballot_problems(
    options: Sequence[str], entities: Sequence[str], embedder: Embedder, subject: str = ""
) -> list[str]:
    """Why a ballot is not valid (empty: valid): size, junk, grounding, distinctness."""
    problems: list[str] = []
    if not 2 <= len(options) <= 5:
        problems.append(f"{len(options)} options (2-5 allowed)")
    for o in options:
        if not o or len(o) > MAX_OPTION_CHARS or re.search(r"\d", o) or is_meta(o):
            problems.append(f"junk option {o!r}")
        elif not grounded(o, entities, subject):
            problems.append(f"ungrounded option {o!r}")
    if len(options) >= 2 and not distinct(options, embedder):
        problems.append("options too similar")
    return problems


# (third person, first person) templates; {s} subject, {c} character, {p} place, {o} object.
# A template whose slot the story cannot fill is skipped; _BARE ones need none.
_BARE = (
    ("{s} searches the area", "{s} search the area"),
    ("{s} waits and listens", "{s} wait and listen"),
    ("{s} turns back", "{s} turn back"),
    ("{s} calls for help", "{s} call for help"),
    ("{s} hides in the shadows", "{s} hide in the shadows"),
    ("{s} runs ahead", "{s} run ahead"),
)
_FALLBACKS = (
    ("{s} follows {c}", "{s} follow {c}"),
    ("{s} searches {p}", "{s} search {p}"),
    ("{s} hides {o}", "{s} hide {o}"),
    ("{s} confronts {c}", "{s} confront {c}"),
    ("{s} runs to {p}", "{s} run to {p}"),
    ("{s} examines {o}", "{s} examine {o}"),
)


def fallback_options(card: StoryCard, n: int, *, seed: int = 0, spare: int = 0) -> list[str]:
    """``n`` options built from the story card (used when generation fails), grounded
    where the story has the names; with ``spare``, up to that many more grounded ones
    (the templates again with other names), so a caller can leave some out. The
    bare templates ("searches the area") only ever fill up to ``n``."""
    spec = card.spec
    subject = spec.subject
    first = spec.style.person == "first"
    hero = spec.protagonist
    chars = [c.short for c in spec.characters if c is not hero] or [subject]
    places = [p for p in spec.world.places if p != card.location] or list(spec.world.places)
    objects = list(card.carrying) + [o for o in spec.world.objects if o not in card.carrying]
    slots = {"c": chars if chars != [subject] else [], "p": places, "o": objects}

    def fill(pair: tuple[str, str], k: int) -> str | None:
        """The template with the ``k``-th names of its slots (None: a slot is empty)."""
        template = pair[1] if first else pair[0]
        needed = [key for key in "cpo" if "{" + key + "}" in template]
        if any(not slots[key] for key in needed):
            return None
        return template.format(
            s=subject, **{key: slots[key][k % len(slots[key])] for key in needed}
        )

    templates = [_FALLBACKS[(i + seed) % len(_FALLBACKS)] for i in range(len(_FALLBACKS))]
    # Grounded templates first (again with the next names for spares), then bare ones
    # only while fewer than ``n``.
    plan = [
        (pair, seed + j + r, n + spare)
        for r in range(3 if spare else 1)
        for j, pair in enumerate(templates)
    ]
    plan += [(pair, seed, n) for pair in _BARE]
    out: list[str] = []
    for pair, k, limit in plan:
        text = fill(pair, k) if len(out) < limit else None
        if text and text not in out:
            out.append(text)
    return out


def select(
    candidates: Sequence[str | None],
    n: int,
    embedder: Embedder,
    fallbacks: Sequence[str],
    *,
    avoid: Sequence[str] = (),
    entities: Sequence[str] = (),
) -> tuple[list[str], int]:
    """``n`` pairwise distinct options: candidates first, topped up from ``fallbacks``.

    A candidate as close as ``DISTINCT_THRESHOLD`` to one in ``avoid`` (the
    options that won recently: acting one out again would retell it) is left
    out, unless the ballot would then be short of ``n`` options (then the
    oldest of them come back first, never the last winner while an older one
    will do). Options that
    name an entity no chosen option names yet are taken first, so a ballot
    spreads over the story.
    Returns the options (in candidate order) and how many came from ``fallbacks``.
    """
    pool = [c for c in candidates if c]
    everything = pool + list(fallbacks)
    vecs = embedder.embed([*everything, *avoid]) if everything else []
    avoid_vecs = vecs[len(everything) :]
    # How recent the winner an option repeats is (-1: none; higher: more recent).
    repeats = [
        max(
            (k for k, a in enumerate(avoid_vecs) if cosine(vecs[i], a) >= DISTINCT_THRESHOLD),
            default=-1,
        )
        for i in range(len(everything))
    ]
    ok = [i for i in range(len(everything)) if repeats[i] < 0]
    # When recent winners must fill a ballot after all, the oldest come back first.
    oldest_first = sorted(range(len(everything)), key=lambda i: repeats[i])

    def entity(i: int) -> str:
        named = [e for e in entities if mentions(everything[i], e)]
        return named[0] if named else ""

    # Three passes, each topping up what the one before left short: options that
    # name an entity no chosen option names, then any allowed option, then (too
    # few without them) the recent winners after all.
    chosen: list[int] = []
    for indices, fresh_only in ((ok, True), (ok, False), (oldest_first, False)):
        for i in indices:
            if len(chosen) == n:
                break
            if i in chosen:
                continue
            if fresh_only and entity(i) and entity(i) in {entity(j) for j in chosen}:
                continue
            if all(cosine(vecs[i], vecs[j]) < DISTINCT_THRESHOLD for j in chosen):
                chosen.append(i)
    chosen.sort()
    used_fb = sum(1 for i in chosen if i >= len(pool))
    return [everything[i] for i in chosen], used_fb
