"""The story state card and rolling summary: what the narrator is reminded of each beat.

Two layers. ``StoryCard.update`` is a deterministic fold that never fails:
it reads the beat for the spec's characters, places and objects and for new
proper names, moves the location to the last place named, marks objects
taken, and appends the acted-out choice to the event list. Then the engine's
own update (``inference.story.update``: JSON under a schema, validated) is
laid over it with ``apply``: a one-sentence summary of the beat, where the
scene is, who is there, what they carry, the goal and the open threads. A
field the engine got wrong keeps its folded value.

The prompt gets ``render()`` (a few short lines) plus the last beat verbatim,
never the whole story, so its size is bounded at any story length
(``MAX_EVENTS``, ``MAX_SEEN``, ``MAX_THREADS`` and the update's length limits).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fablecast.inference.story.spec import StorySpec
from fablecast.inference.story.text import one_line, sentences

if TYPE_CHECKING:
    from fablecast.inference.story.update import StateUpdate

#: Acted-out choices kept for the rolling summary.
MAX_EVENTS = 6
#: Names seen in the story (besides the spec's) kept as entities.
MAX_SEEN = 6
#: Lore entries added to one prompt at most.
MAX_LORE = 2
#: Open threads kept (the engine's, newest update wins).
MAX_THREADS = 3

_TAKE = re.compile(
    r"\b(take|takes|took|grab|grabs|grabbed|pick(?:s|ed)? up|carr(?:y|ies|ied)|hold|holds|"
    r"held|pocket(?:s|ed)?|steal|steals|stole)\b",
    re.IGNORECASE,
)
_NAME = re.compile(r"(?<![.!?]\s)(?<!^)\b([A-Z][a-z]{2,})(?:\s+([A-Z][a-z]{2,}))?\b")
_NOT_NAMES = frozenset(
    [
        "The",
        "This",
        "That",
        "There",
        "Then",
        "When",
        "What",
        "Where",
        "Who",
        "Why",
        "How",
        "And",
        "But",
        "Yet",
        "For",
        "Not",
        "Now",
        "Her",
        "His",
        "Its",
        "She",
        "They",
        "You",
        "Your",
        "Our",
        "Their",
        "Him",
        "Them",
        "One",
        "Two",
        "Three",
        "Mister",
        "Miss",
        "Mrs",
        "Sir",
        "Lady",
        "Lord",
        "Every",
        "Suddenly",
        "Outside",
        "Inside",
        "Somewhere",
        "Meanwhile",
        "Once",
        "After",
        "Before",
        "Maybe",
        "Perhaps",
        "Behind",
        "Above",
        "Below",
        "With",
        "Without",
        "Into",
        "From",
        "Upon",
    ]
)


def _bare(entity: str) -> str:
    """``the ledger`` -> ``ledger`` (what to look for in text)."""
    return re.sub(r"^(the|a|an)\s+", "", entity, flags=re.IGNORECASE)


def mentions(text: str, entity: str) -> bool:
    """Whether ``text`` names ``entity`` (case-insensitive, whole words, article optional)."""
    bare = _bare(entity)
    return bool(bare) and re.search(rf"\b{re.escape(bare)}\b", text, re.IGNORECASE) is not None


@dataclass(slots=True)
class StoryCard:
    """Who, where, what they carry, their goal, what happened: the compact story state."""

    spec: StorySpec
    location: str = ""
    carrying: list[str] = field(default_factory=list)
    present: list[str] = field(default_factory=list)
    events: list[str] = field(default_factory=list)
    seen: list[str] = field(default_factory=list)
    last_beat: str = ""
    beats: int = 0
    #: The goal: the spec's until the engine updates it.
    goal: str = ""
    #: Open threads (questions the story has raised), from the engine's updates.
    threads: list[str] = field(default_factory=list)
    #: The rolling summary: (beat, text) for the last ``MAX_EVENTS`` beats; the
    #: engine's one-sentence summary of a beat, or the choice it acted out.
    recaps: list[tuple[int, str]] = field(default_factory=list)
    #: Beats whose state the engine wrote (``apply``), for the record.
    written: int = 0

    def __post_init__(self) -> None:
        if not self.goal:
            self.goal = self.spec.goal or ""
        w = self.spec.world
        if not self.location:
            self.location = w.start_place or (w.places[0] if w.places else "")
        hero = self.spec.protagonist
        if hero and not self.present:
            self.present = [hero.name]

    # ---------------------------------------------------------------- entities

    def spec_entities(self) -> list[str]:
        """Characters (short names), places and objects of the spec."""
        s = self.spec
        return [c.short for c in s.characters] + list(s.world.places) + list(s.world.objects)

    def entities(self) -> list[str]:
        """Every entity a ballot option may name: the spec's and names seen in the story."""
        out = self.spec_entities()
        out += [n for n in self.seen if n not in out]
        return out

    def scene_entities(self, text: str, *, exclude: str = "") -> list[str]:
        """Entities named in ``text`` first, then the others (``exclude`` left out)."""
        ents = [e for e in self.entities() if e != exclude]
        named = [e for e in ents if mentions(text, e)]
        return named + [e for e in ents if e not in named]

    # ---------------------------------------------------------------- updates

    def update(self, beat_text: str, choice: str | None) -> None:
        """Fold a committed beat (and the choice it acted out) into the card."""
        self.beats += 1
        self.last_beat = beat_text
        if choice:
            self.events.append(one_line(choice, 100).rstrip("."))
            del self.events[:-MAX_EVENTS]
            self.recaps.append((self.beats, self.events[-1]))
            del self.recaps[:-MAX_EVENTS]
        places = [p for p in self.spec.world.places if mentions(beat_text, p)]
        if places:
            # The last place named in the beat is where the scene now is.
            self.location = max(places, key=lambda p: beat_text.lower().rfind(_bare(p).lower()))
        for sentence in sentences(beat_text):
            if _TAKE.search(sentence):
                for obj in self.spec.world.objects:
                    if mentions(sentence, obj) and obj not in self.carrying:
                        self.carrying.append(obj)
        del self.carrying[:-4]
        names = [c.name for c in self.spec.characters if mentions(beat_text, c.short)]
        hero = self.spec.protagonist
        if hero and hero.name not in names:
            names.insert(0, hero.name)
        self.present = names
        known = {e.lower() for e in self.spec_entities()} | {
            w.lower() for c in self.spec.characters for w in c.name.split()
        }
        for m in _NAME.finditer(beat_text):
            name = m.group(0)
            first = m.group(1)
            if first in _NOT_NAMES or name.lower() in known or first.lower() in known:
                continue
            if name in self.seen:
                self.seen.remove(name)
            self.seen.append(name)
        del self.seen[:-MAX_SEEN]

    def apply(self, update: StateUpdate) -> None:
        """Lay the engine's validated update of the last folded beat over the fold."""
        self.written += 1
        if update.summary:
            self.recaps = [r for r in self.recaps if r[0] != self.beats]
            self.recaps.append((self.beats, update.summary.rstrip(".")))
            del self.recaps[:-MAX_EVENTS]
        if update.location:
            self.location = update.location
        if update.present:
            self.present = list(update.present)
        if update.carrying is not None:
            self.carrying = list(update.carrying)[-4:]
        if update.goal:
            self.goal = update.goal.rstrip(".")
        self.threads = [t.rstrip(".?") for t in update.threads][:MAX_THREADS]

    # ---------------------------------------------------------------- prompt text

    def lore(self, text: str) -> list[str]:
        """Lore entries whose keywords ``text`` names (at most ``MAX_LORE``)."""
        out = [e.text for e in self.spec.lore if any(mentions(text, k) for k in e.keywords)]
        return out[:MAX_LORE]

    def summary(self) -> str:
        """The rolling summary, oldest first: the engine's recaps or the acted-out choices."""
        return "; ".join(text for _, text in self.recaps)

    def render(self) -> str:
        """The card as a few short prompt lines."""
        s = self.spec
        cast = "; ".join(f"{c.name} ({c.pronouns}), {c.role}" for c in s.characters)
        lines = [f"Characters: {cast}."]
        if self.location:
            lines.append(f"Place: {self.location}.")
        if self.carrying:
            lines.append(f"Carrying: {', '.join(self.carrying)}.")
        if self.goal:
            lines.append(f"Goal: {self.goal}.")
        if self.threads:
            lines.append(f"Open questions: {'; '.join(self.threads)}.")
        if self.recaps:
            lines.append(f"So far: {self.summary()}.")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """The card as plain data (the why record's ``state``)."""
        return {
            "location": self.location,
            "present": list(self.present),
            "carrying": list(self.carrying),
            "goal": self.goal or None,
            "threads": list(self.threads),
            "summary": self.summary(),
            "seen": list(self.seen),
        }
