"""The engine-written story state: after each beat the engine updates the card as JSON.

``state_schema`` is the JSON schema the engine writes under (vLLM guided
decoding): a one-sentence ``summary`` of the beat, then ``location`` and
``present`` (the story's own places and characters, as enums), ``carrying``
(the story's objects, as an enum), a ``goal`` shaped "<someone of the story>
must <do something>" and up to three open ``threads``, each a question ("Who
tore the letter"); a goal or thread of another shape is left out.

``parse_state`` validates the answer in two layers:

1. Structure: JSON, the schema's keys and types, enum values. A failure
   raises ``ValueError``; the narrator retries once and then keeps the
   deterministic fold alone (``StoryCard.update``), which never fails.
2. Sense, field by field. Every text must name an entity of the story (a
   character, place or object) and must not talk about the audience or
   voting, nor copy the worked example of the request or the story's title (a
   shared 3-word run). The ``summary`` is cut to its first sentence (one cut
   off mid-sentence by the length bound is refused) and must be about this
   beat (two of its content words in the beat) but no copy of its text (a
   shared 6-word run), and no copy of an earlier summary (a shared 4-word
   run). The ``goal`` and each thread must not be a copy of the beat (a
   shared 5-word run) nor little more than names (two other words at
   least), nor unfinished (a trailing comma, the length bound reached) or
   stuttering (a 3-word run twice), and keep to 3-14 words. A field
   that fails is left out (``None`` or dropped) and the card keeps its folded
   value for it. The default model copies much (docs/quality.md): these
   checks are what keep its copies out of the prompt.

The result is plain data (``StateUpdate.to_dict``): the room core keeps it on
the committed beat and the event log records it (``kind="state"``), so
restore, rewind and fork rebuild the same card (docs/stories.md, story state).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from fablecast.inference.story.state import MAX_THREADS, StoryCard, mentions
from fablecast.inference.story.text import (
    is_meta,
    json_object,
    ngrams,
    one_line,
    runs,
    split_complete,
    without,
    words,
)

#: Longest summary, goal and thread the engine may write (characters). xgrammar
#: (vLLM's guided decoding) cannot compile a repetition bound above 128.
MAX_SUMMARY: Final = 120
MAX_GOAL: Final = 90
MAX_THREAD: Final = 80
_TEXT = "[A-Za-z ,.'-]"


@dataclass(frozen=True, slots=True)
class StateUpdate:
    """What the engine wrote about one beat, validated (``None``: keep the fold's value)."""

    summary: str | None
    location: str | None
    #: Who is there (empty: the story has no cast; the fold's list stands).
    present: tuple[str, ...]
    carrying: tuple[str, ...] | None
    goal: str | None
    threads: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        """Plain data: what the core keeps on the beat and the event log records."""
        return {
            "summary": self.summary,
            "location": self.location,
            "present": list(self.present),
            "carrying": None if self.carrying is None else list(self.carrying),
            "goal": self.goal,
            "threads": list(self.threads),
        }


#: How an open thread starts: it is a question (the prompt shows them as "Open questions").
THREAD_WORDS: Final = ("Who", "What", "Why", "Where", "How", "Whether", "Will", "Can")


#: Longest text after "must " in a goal, and after the question word in a thread (the
#: patterns' second group): an answer that long was cut off by the bound, mid-word
#: ("Aria must lend the sma").
_GOAL_TAIL: Final = 60
_THREAD_TAIL: Final = 70


def _string(lo: int, hi: int) -> dict[str, Any]:
    return {"type": "string", "pattern": f"^{_TEXT}{{{lo},{hi}}}$"}


def _alts(words: Sequence[str]) -> str:
    """A regex alternation of literal words (no escaped spaces: xgrammar takes them as is)."""
    return "|".join(re.sub(r"([.^$*+?{}\[\]\\|()])", r"\\\1", w) for w in words)


def goal_pattern(card: StoryCard) -> str:
    """A goal is a sentence about what someone of the story must do:
    ``"Aria must find the beacon before Vex does"`` (guided decoding writes it so)."""
    spec = card.spec
    who = dict.fromkeys(
        [spec.subject, *(c.short for c in spec.characters), *(c.name for c in spec.characters)]
    )
    return f"^({_alts(list(who))}) must ([a-z][A-Za-z ,'-]{{6,{_GOAL_TAIL - 1}}})$"


def thread_pattern() -> str:
    """An open thread is a question: ``"Who tore the letter"``."""
    return f"^({_alts(THREAD_WORDS)}) ([A-Za-z][A-Za-z ,'-]{{6,{_THREAD_TAIL - 1}}})$"


def state_schema(card: StoryCard) -> dict[str, Any]:
    """JSON schema of a state update for this story.

    A story without places, cast or objects has no ``location``, ``present``
    or ``carrying`` field (nothing to choose from: the fold keeps them).
    """
    w = card.spec.world
    places = list(dict.fromkeys(p for p in (card.location, *w.places) if p))
    names = [c.name for c in card.spec.characters]
    props: dict[str, Any] = {"summary": _string(10, MAX_SUMMARY)}
    if places:
        props["location"] = {"enum": places}
    if names:
        props["present"] = {
            "type": "array",
            "items": {"enum": names},
            "minItems": 1,
            "maxItems": 4,
        }
    if w.objects:
        props["carrying"] = {"type": "array", "items": {"enum": list(w.objects)}, "maxItems": 4}
    props["goal"] = {"type": "string", "pattern": goal_pattern(card)}
    props["threads"] = {
        "type": "array",
        "items": {"type": "string", "pattern": thread_pattern()},
        "maxItems": MAX_THREADS,
    }
    return {
        "type": "object",
        "properties": props,
        "required": list(props),
        "additionalProperties": False,
    }


#: A worked example for the state request (``prompts.state_request``): the default
#: model copies its shape, and sometimes its words, which ``parse_state`` refuses
#: (a 3-word run of the example's answer in any field).
STATE_EXAMPLE: Final = (
    "Example scene: Tom climbs the mill tower and finds a torn letter. Ann shouts "
    "that the miller is coming back.\n"
    'Example JSON: {"summary": "Tom finds a torn letter in the mill tower", '
    '"location": "the mill", "present": ["Tom", "Ann"], "carrying": ["the letter"], '
    '"goal": "Tom must read the letter before the miller returns", '
    '"threads": ["Who tore the letter", "Why the miller came back"]}'
)
_EXAMPLE_ANSWER: Final = STATE_EXAMPLE.split("Example JSON:", 1)[1]


def _grounded(text: str, card: StoryCard) -> bool:
    names = [w for c in card.spec.characters for w in c.name.split() if len(w) > 2]
    return not is_meta(text) and any(mentions(text, e) for e in (*card.entities(), *names))


def _content(text: str) -> set[str]:
    return {w for w in words(text) if len(w) >= 4}


def _copies(text: str, source: str, n: int) -> bool:
    return bool(ngrams(text, n) & ngrams(source, n))


def _borrowed(value: str, card: StoryCard) -> bool:
    """Whether ``value`` copies the worked example or the story's title (a 3-word run)."""
    return _copies(value, _EXAMPLE_ANSWER, 3) or _copies(value, card.spec.title, 3)


def _bare(value: str, card: StoryCard) -> bool:
    """Whether ``value`` is little more than names: under two words besides its entities."""
    rest = without(value, (*card.entities(), *(c.name for c in card.spec.characters)))
    return len([w for w in words(rest) if w not in ("the", "a", "an", "and", "of")]) < 2


def _summary(value: str, card: StoryCard, beat_text: str) -> str | None:
    value = one_line(value, MAX_SUMMARY).strip()
    done, _ = split_complete(value)
    if done:
        value = done[0].strip()  # one sentence
    elif len(value) >= MAX_SUMMARY - 2:
        return None  # cut off by the length bound, mid-sentence
    if len(value) < 10 or not _grounded(value, card) or _borrowed(value, card):
        return None
    if card.spec.title.lower() in value.lower():
        return None
    if beat_text and len(_content(value) & _content(beat_text)) < 2:
        return None  # not about this beat
    if beat_text and _copies(value, beat_text, 6):
        return None  # a sentence of the beat copied, not a summary
    earlier = [old for b, old in card.recaps if b != card.beats]
    if any(_copies(value, old, 4) or value.lower() == old.lower() for old in earlier):
        return None  # an earlier beat's summary again
    return value


def _aim(
    value: str, limit: int, card: StoryCard, beat_text: str, *, pattern: str, tail: int
) -> str | None:
    """A goal or a thread: grounded, 3-14 words, not a copy of the beat, not a bare name,
    of the schema's shape (``pattern``) and not cut off by its bound (``tail``)."""
    value = one_line(value, limit).strip()
    shaped = re.fullmatch(pattern.removeprefix("^").removesuffix("$"), value.rstrip("?"))
    if shaped is None or len(shaped[2]) >= tail - 1:
        return None  # not the shape the schema asks for, or cut off by its bound
    n = len(value.split())
    if not 3 <= n <= 14 or not _grounded(value, card) or _borrowed(value, card):
        return None
    if beat_text and _copies(value, beat_text, 5):
        return None
    if _bare(value, card):
        return None
    if value.endswith((",", "-", "'")) or _stutters(value):
        return None  # unfinished, or "what is she doing, what is she doing"
    return value


def _stutters(text: str) -> bool:
    """Whether a 3-word run comes back within ``text``."""
    threes = runs(text, 3)
    return len(threes) != len(set(threes))


def parse_state(text: str, card: StoryCard, beat_text: str = "") -> StateUpdate:
    """A validated update from the engine's JSON answer about ``beat_text``.

    ``ValueError`` says what is structurally wrong; fields that make no sense
    are left out (see the module's rule 2). ``card`` is the card with the beat
    already folded in.
    """
    data = json_object(text)
    props = state_schema(card)["properties"]
    extra = set(data) - set(props)
    if extra:
        raise ValueError(f"unknown keys {sorted(extra)}")
    missing = set(props) - set(data)
    if missing:
        raise ValueError(f"missing keys {sorted(missing)}")
    if "location" in props and data["location"] not in props["location"]["enum"]:
        raise ValueError(f"location: {data['location']!r} is not a place of the story")
    for key in ("present", "carrying"):
        if key not in props:
            continue
        value = data[key]
        allowed = props[key]["items"]["enum"]
        if not isinstance(value, list) or any(v not in allowed for v in value):
            raise ValueError(f"{key}: {value!r} is not a list of {allowed}")
    if "present" in props and not data["present"]:
        raise ValueError("present: empty")
    for key in ("summary", "goal"):
        if not isinstance(data[key], str):
            raise ValueError(f"{key}: not a string")
    threads = data["threads"]
    if not isinstance(threads, list) or any(not isinstance(t, str) for t in threads):
        raise ValueError("threads: not a list of strings")

    summary = _summary(data["summary"], card, beat_text)
    goal = _aim(
        data["goal"], MAX_GOAL, card, beat_text, pattern=props["goal"]["pattern"], tail=_GOAL_TAIL
    )
    kept: list[str] = []
    for t in threads[:MAX_THREADS]:
        t2 = _aim(
            t,
            MAX_THREAD,
            card,
            beat_text,
            pattern=props["threads"]["items"]["pattern"],
            tail=_THREAD_TAIL,
        )
        if t2 and all(t2.lower() != k.lower() for k in (*kept, goal or "", summary or "")):
            kept.append(t2)
    return StateUpdate(
        summary=summary,
        location=data.get("location"),
        present=tuple(dict.fromkeys(data.get("present") or ())),
        carrying=tuple(dict.fromkeys(data["carrying"])) if "carrying" in props else None,
        goal=goal,
        threads=tuple(kept),
    )


def state_from_dict(data: Mapping[str, Any]) -> StateUpdate | None:
    """An update as the event log or the core keeps it (None if it is not one)."""
    try:
        carrying = data.get("carrying")
        return StateUpdate(
            summary=_opt(data.get("summary")),
            location=_opt(data.get("location")),
            present=tuple(str(p) for p in data.get("present") or ()),
            carrying=None if carrying is None else tuple(str(c) for c in carrying),
            goal=_opt(data.get("goal")),
            threads=tuple(str(t) for t in data.get("threads") or ()),
        )
    except (KeyError, TypeError, ValueError):
        return None


def _opt(value: object) -> str | None:
    return None if value is None else str(value)


def fold(card: StoryCard, text: str, choice: str | None, state: Mapping[str, Any] | None) -> None:
    """Fold a committed beat into ``card``, then the engine's update of it (if it wrote one)."""
    card.update(text, choice)
    update = state_from_dict(state) if state else None
    if update is not None:
        card.apply(update)
