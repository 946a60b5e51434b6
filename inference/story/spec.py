"""Story specs: what a room's story is about, loaded from TOML and validated.

A spec is a TOML file (docs/stories.md documents every key). ``load_spec``
takes a path or the name of a packaged preset (``PRESETS``); a spec with an
unknown key, a missing field or a value out of range is refused with
``SpecError("FILE: KEY: REASON")``. Validation is msgspec's (strict types,
unknown fields forbidden, ranges from ``Meta``).
"""

from __future__ import annotations

import re
import tomllib
from importlib import resources
from pathlib import Path
from typing import Annotated, Literal

import msgspec

Short = Annotated[str, msgspec.Meta(min_length=1, max_length=120)]
Text = Annotated[str, msgspec.Meta(min_length=1, max_length=600)]


#: First words of a name that are titles, not names.
_TITLES = frozenset(
    re.findall(
        r"\w+",
        "King Queen Prince Princess Captain Admiral General Master Old Young Lord Lady "
        "Sir Dame Doctor Dr Mr Mrs Ms Miss Mister Father Mother Brother Sister Uncle Aunt",
    )
)


class Character(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """A person of the story. ``pronouns`` like ``she/her``."""

    name: Short
    pronouns: Annotated[str, msgspec.Meta(pattern=r"^[a-z]+/[a-z]+$")] = "they/them"
    role: Short = "a person of the story"
    protagonist: bool = False

    @property
    def short(self) -> str:
        """The name a sentence uses: the first word of ``name``, or all of it after a
        title (``Sam Calloway`` -> ``Sam``; ``King Orin`` stays ``King Orin``)."""
        first = self.name.split()[0]
        return self.name if first in _TITLES or first.lower() == "the" else first

    @property
    def subject(self) -> str:
        """The subject pronoun (``she``)."""
        return self.pronouns.split("/")[0]


class Style(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """How the prose reads."""

    person: Literal["first", "third"] = "third"
    tense: Literal["present", "past"] = "present"
    tone: Short = "vivid and concrete"
    sentence_length: Literal["short", "medium", "long"] = "medium"


class Beat(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """Beat and ballot sizes."""

    tokens: Annotated[int, msgspec.Meta(ge=30, le=400)] = 110
    options: Annotated[int, msgspec.Meta(ge=2, le=5)] = 3
    vote_s: Annotated[float, msgspec.Meta(ge=3.0, le=300.0)] = 15.0


class World(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """Places and things the story may name; where and when it starts."""

    notes: Annotated[str, msgspec.Meta(max_length=600)] = ""
    places: Annotated[list[Short], msgspec.Meta(max_length=20)] = []
    objects: Annotated[list[Short], msgspec.Meta(max_length=20)] = []
    start_place: Short | None = None
    time_of_day: Literal["dawn", "morning", "noon", "afternoon", "dusk", "evening", "night"] = (
        "evening"
    )
    weather: Literal["clear", "cloudy", "rain", "storm", "fog", "snow", "wind"] = "clear"


class Lore(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """A fact added to the prompt when one of ``keywords`` appears in the scene."""

    keywords: Annotated[list[Short], msgspec.Meta(min_length=1, max_length=8)]
    text: Annotated[str, msgspec.Meta(min_length=1, max_length=300)]


class StorySpec(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """A whole story spec. Only ``title`` and ``premise`` are required in code;
    a spec file must also name at least one character (see ``load_spec``)."""

    title: Short
    premise: Text
    language: Literal["en"] = "en"
    rating: Literal["general", "teen", "mature"] = "teen"
    goal: Short | None = None
    style: Style = Style()
    beat: Beat = Beat()
    world: World = World()
    characters: Annotated[list[Character], msgspec.Meta(max_length=8)] = []
    lore: Annotated[list[Lore], msgspec.Meta(max_length=32)] = []
    #: LoRA adapter the narrator's requests ask for (None: the base model).
    adapter: str | None = None

    @property
    def protagonist(self) -> Character | None:
        """The first character marked ``protagonist`` (else the first character)."""
        for c in self.characters:
            if c.protagonist:
                return c
        return self.characters[0] if self.characters else None

    @property
    def subject(self) -> str:
        """How an action sentence starts: ``I`` (first person) or the hero's short name."""
        if self.style.person == "first":
            return "I"
        hero = self.protagonist
        return hero.short if hero else "The hero"


class SpecError(ValueError):
    """A spec that cannot be used: ``file: key: reason``."""

    def __init__(self, file: str, key: str, reason: str) -> None:
        super().__init__(f"{file}: {key}: {reason}")
        self.file, self.key, self.reason = file, key, reason


#: Packaged presets (inference/story/presets/NAME.toml).
PRESETS = ("lantern_market", "noir", "space_opera", "fairy_tale", "wuxia")
#: The presets ``fablecast eval`` plays by default (four stories that differ for real).
EVAL_PRESETS = ("noir", "space_opera", "fairy_tale", "wuxia")


def _preset_text(name: str) -> str:
    return (
        resources.files("fablecast.inference.story")
        .joinpath(f"presets/{name}.toml")
        .read_text(encoding="utf-8")
    )


def parse_spec(text: str, file: str = "<spec>") -> StorySpec:
    """Parse and validate spec TOML; raises ``SpecError`` naming ``file``, the key and why."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(file, "(toml)", str(exc)) from None
    try:
        spec = msgspec.convert(data, StorySpec)
    except msgspec.ValidationError as exc:
        msg = str(exc)
        reason, _, where = msg.rpartition(" - at `")
        key = where.rstrip("`").removeprefix("$").lstrip(".") or "(top)"
        if not reason:
            reason, key = msg, "(top)"
        if reason.startswith("Object contains unknown field"):
            field = reason.split("`")[1] if "`" in reason else "?"
            key = f"{key}.{field}" if key != "(top)" else field
            reason = "unknown key"
        elif reason.startswith("Object missing required field"):
            field = reason.split("`")[1] if "`" in reason else "?"
            key = f"{key}.{field}" if key != "(top)" else field
            reason = "missing required key"
        raise SpecError(file, key, reason) from None
    if not spec.characters:
        raise SpecError(file, "characters", "at least one [[characters]] entry is required")
    return spec


def load_spec(source: str) -> StorySpec:
    """A spec from a TOML file path or a preset name (``PRESETS``)."""
    if source in PRESETS:
        return parse_spec(_preset_text(source), f"preset:{source}")
    path = Path(source)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError(source, "(file)", f"cannot read: {exc.strerror or exc}") from None
    return parse_spec(text, source)
