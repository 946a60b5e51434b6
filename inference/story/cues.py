"""Scene cues: a machine-readable description of each beat for scenes and overlays.

The engine writes a cue as JSON under ``cue_schema`` (vLLM guided decoding:
enums for every field it can be, the story's own places and characters for
``location`` and ``characters``). ``parse_cue`` validates it; the narrator
retries once and then uses ``fallback_cue``, which is built from the story
card and never fails. A cue never reaches a client unvalidated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from fablecast.inference.story.state import StoryCard, mentions
from fablecast.inference.story.text import json_object, one_line

TIMES: Final = ("dawn", "morning", "noon", "afternoon", "dusk", "evening", "night")
WEATHERS: Final = ("clear", "cloudy", "rain", "storm", "fog", "snow", "wind")
LIGHTING: Final = ("bright", "dim", "dark", "neon", "candlelight", "firelight", "moonlight")
MUSIC: Final = ("tense", "playful", "sad", "calm", "heroic", "mysterious", "action")
MAX_IMAGE_PROMPT = 100

#: Tone -> the music mood a fallback cue uses.
TONE_MUSIC: Final = {
    "tense": "tense",
    "funny": "playful",
    "sad": "sad",
    "calm": "calm",
    "exciting": "action",
}


@dataclass(frozen=True, slots=True)
class SceneCue:
    """The scene of one beat. ``source``: ``engine`` or ``fallback``."""

    location: str
    time_of_day: str
    weather: str
    lighting: str
    music: str
    characters: tuple[str, ...]
    image_prompt: str
    source: str = "engine"


def cue_schema(card: StoryCard, tone: str | None = None) -> dict[str, Any]:
    """JSON schema of a cue for this story (places and characters as enums).

    With the ``tone`` the beat was told in, ``music`` is that tone's
    (``TONE_MUSIC``): the scene's music follows the room's mood (left to
    itself the default model wrote "sad" for every beat; docs/quality.md).
    """
    music = [TONE_MUSIC[tone]] if tone in TONE_MUSIC else list(MUSIC)
    places = list(dict.fromkeys([card.location, *card.spec.world.places])) or ["unknown"]
    names = [c.name for c in card.spec.characters] or ["unknown"]
    return {
        "type": "object",
        "properties": {
            "location": {"enum": places},
            "time_of_day": {"enum": list(TIMES)},
            "weather": {"enum": list(WEATHERS)},
            "lighting": {"enum": list(LIGHTING)},
            "music": {"enum": music},
            "characters": {
                "type": "array",
                "items": {"enum": names},
                "minItems": 1,
                "maxItems": 4,
            },
            "image_prompt": {
                "type": "string",
                "pattern": f"^[A-Za-z ,.'-]{{10,{MAX_IMAGE_PROMPT}}}$",
            },
        },
        "required": [
            "location",
            "time_of_day",
            "weather",
            "lighting",
            "music",
            "characters",
            "image_prompt",
        ],
        "additionalProperties": False,
    }


def parse_cue(text: str, card: StoryCard, tone: str | None = None) -> SceneCue:
    """A validated cue from the engine's JSON answer; ``ValueError`` says what is wrong."""
    data = json_object(text)
    schema = cue_schema(card, tone)["properties"]
    for key in ("location", "time_of_day", "weather", "lighting", "music"):
        if data.get(key) not in schema[key]["enum"]:
            raise ValueError(f"{key}: {data.get(key)!r} is not one of {schema[key]['enum']}")
    chars = data.get("characters")
    names = schema["characters"]["items"]["enum"]
    if (
        not isinstance(chars, list)
        or not 1 <= len(chars) <= 4
        or any(c not in names for c in chars)
    ):
        raise ValueError(f"characters: {chars!r}")
    image = data.get("image_prompt")
    if not isinstance(image, str) or not 10 <= len(image.strip()) <= MAX_IMAGE_PROMPT:
        raise ValueError("image_prompt: missing or out of length")
    extra = set(data) - set(schema)
    if extra:
        raise ValueError(f"unknown keys {sorted(extra)}")
    return SceneCue(
        location=data["location"],
        time_of_day=data["time_of_day"],
        weather=data["weather"],
        lighting=data["lighting"],
        music=data["music"],
        characters=tuple(dict.fromkeys(chars)),
        image_prompt=one_line(image, MAX_IMAGE_PROMPT),
    )


def fallback_cue(card: StoryCard, beat_text: str, tone: str | None = None) -> SceneCue:
    """A cue built from the story card alone (used when the engine's cue fails twice)."""
    w = card.spec.world
    names = [c.name for c in card.spec.characters if mentions(beat_text, c.short)]
    hero = card.spec.protagonist
    if not names and hero is not None:
        names = [hero.name]
    time = w.time_of_day
    lighting = (
        "dark" if time == "night" else "dim" if time in ("dusk", "evening", "dawn") else "bright"
    )
    location = card.location or "unknown"
    return SceneCue(
        location=location,
        time_of_day=time,
        weather=w.weather,
        lighting=lighting,
        music=TONE_MUSIC.get(tone or "", "mysterious"),
        characters=tuple(names[:4]),
        image_prompt=one_line(
            f"{', '.join(names[:2])} at {location}, {time}, {w.weather}, {card.spec.style.tone}",
            MAX_IMAGE_PROMPT,
        ),
        source="fallback",
    )
