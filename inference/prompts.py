"""Prompt layout: short prompts the 135M default model can follow (docs/quality.md).

Every request of a room is three messages, never the story's history as the
model's own turns (a small model copies its own earlier turns)::

    system:    how to write: person, tense, tone, sentence length   (fixed per story)
    user:      title, premise, the story card (cast, place, carried
               things, goal, rolling summary), lore the scene names,
               the last beat verbatim, the tone directive, the ask
    assistant: the prefill the model continues

The prefill does the steering: a beat after a vote opens with the winning
option written in as its first words (``"I follow Lena to the docks,"``, left
open), then the tone's lead phrase when the room has a tone (``"I follow Lena
to the docks, heart pounding,"``); the model finishes that sentence and goes
on, so the beat acts the choice out in the tone asked for. A ballot option is the
continuation of ``"{subject}"`` under a regex that admits only a few words and
an entity of the story. Crowd text (the winning option) appears only inside
that prefill, cleaned to one bounded line: the system and user messages of a
beat never depend on it, so it cannot change the narrator's instructions.
Nothing in any prompt speaks of an audience or voting.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from fablecast.inference.story.ballots import option_regex
from fablecast.inference.story.cues import cue_schema
from fablecast.inference.story.spec import Character, StorySpec
from fablecast.inference.story.state import StoryCard
from fablecast.inference.story.text import one_line
from fablecast.inference.story.tone import Tone
from fablecast.inference.story.update import STATE_EXAMPLE, state_schema
from fablecast.inference.types import ChatMessage, GenerationRequest, RequestKind

__all__ = [
    "MAX_CHOICE_CHARS",
    "NarrationContext",
    "StorySpec",
    "choice_sentence",
    "cue_request",
    "narration_request",
    "option_request",
    "parse_choices",
    "quote",
    "story_spec",
]

MAX_CHOICE_CHARS = 80
#: Last-beat characters kept in a prompt (the beat is ~110 tokens; this bounds odd ones).
MAX_LAST_BEAT_CHARS = 900

_LENGTH = {
    "short": "Use short, plain sentences.",
    "medium": "Use clear sentences.",
    "long": "Use long, flowing sentences.",
}


def story_spec(title: str, premise: str, style: str = "", adapter: str | None = None) -> StorySpec:
    """A spec for a room configured with only a title and premise (no spec file).

    It gets one protagonist, Mira (she/her), a young courier: the cast of the
    default room's premise. Rooms should name a spec (docs/stories.md).
    """
    from fablecast.inference.story.spec import Style

    return StorySpec(
        title=one_line(title, 120) or "Untitled",
        premise=one_line(premise, 600) or "A story begins.",
        style=Style(tone=one_line(style, 120)) if style else Style(),
        characters=[
            Character(name="Mira", pronouns="she/her", role="a young courier", protagonist=True)
        ],
        adapter=adapter,
    )


@dataclass(slots=True)
class NarrationContext:
    """Everything the prompts of beat ``beat`` need."""

    room: str
    beat: int
    spec: StorySpec
    card: StoryCard | None = None
    #: The winning option this beat acts out (None: the opening beat).
    choice: str | None = None
    #: The options of the same ballot that lost (the best-of-n opening steers away from them).
    losers: tuple[str, ...] = ()
    tone: Tone | None = None
    max_tokens: int = 110
    n_choices: int = 3
    seed: int | None = None
    #: Seconds by which the narration should start (the scheduler's urgent rule).
    deadline_s: float | None = None
    lore: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.card is None:
            self.card = StoryCard(self.spec)

    @property
    def story(self) -> StoryCard:
        """The story card (never None after construction)."""
        assert self.card is not None
        return self.card


def quote(text: str) -> str:
    """Crowd text as one bounded line (no newlines, no control characters)."""
    return one_line(text, MAX_CHOICE_CHARS)


def choice_sentence(choice: str) -> str:
    """The winning option as the beat's opening sentence (``"Sam follows Lena."``)."""
    text = quote(choice).rstrip(" .!?;:,")
    if not text:
        return ""
    return text[0].upper() + text[1:] + "."


#: Words of an option that carry no meaning of their own (not favoured).
_STOP = frozenset(
    re.findall(
        r"\w+",
        "the a an and or to into onto at with toward towards for from on in inside under "
        "behind near through across over after about around past his her their its my our "
        "your this that then them they she he i",
    )
)


def choice_words(choice: str, limit: int = 4, skip: Sequence[str] = ()) -> tuple[str, ...]:
    """The content words of a winning option (its verb and what it names), at most
    ``limit``, leaving out ``skip`` (the subject, which every option starts with:
    favouring it says nothing of the choice and makes the prose repeat the name)."""
    out: list[str] = []
    left_out = {s.lower() for s in skip}
    for w in re.findall(r"[A-Za-z]+", quote(choice)):
        if len(w) >= 4 and w.lower() not in _STOP | left_out and w not in out:
            out.append(w)
    return tuple(out[:limit])


def _system(spec: StorySpec) -> ChatMessage:
    st = spec.style
    return ChatMessage(
        "system",
        f"You are a novelist. Write {st.tone} fiction in the {st.person} person, "
        f"{st.tense} tense. {_LENGTH[st.sentence_length]} Write only the story.",
    )


def _context(ctx: NarrationContext, scene: str) -> str:
    card = ctx.story
    lines = [f"{ctx.spec.title}. {ctx.spec.premise}", card.render()]
    lines += [f"Fact: {t}" for t in ctx.lore]
    if card.last_beat:
        lines.append(f"Last scene: {card.last_beat[-MAX_LAST_BEAT_CHARS:]}")
    if scene:
        lines.append(scene)
    return "\n".join(lines)


def narration_request(ctx: NarrationContext, request_id: str) -> GenerationRequest:
    """The request that narrates beat ``ctx.beat``; its assistant turn is the prefill."""
    card = ctx.story
    ask = (
        "Write the next scene in 3 to 5 sentences."
        if card.last_beat
        else f"Write the opening scene in 3 to 5 sentences, at {card.location or 'the start'}."
    )
    if ctx.tone is not None:
        ask = f"{ctx.tone.directive}\n{ask}"
    # The winning option opens the beat, left open with a comma so the model
    # carries the action on in its own words before it moves the scene along
    # (a bare open end lets it run on into the last word: "moon" -> "moonlit").
    # A tone's lead phrase follows it ("Mira opens the door, heart pounding,"): the
    # model continues a sentence already in the tone asked for.
    action = choice_sentence(ctx.choice)[:-1] if ctx.choice else ""
    lead = ctx.tone.lead(ctx.beat) if ctx.tone is not None else ""
    if action:
        prefill = f"{action}, {lead}," if lead else f"{action},"
    else:
        prefill = f"{ctx.spec.subject}, {lead}," if lead else ctx.spec.subject
    return GenerationRequest(
        request_id=request_id,
        messages=(
            _system(ctx.spec),
            ChatMessage("user", _context(ctx, ask)),
            ChatMessage("assistant", prefill),
        ),
        max_tokens=ctx.max_tokens,
        seed=ctx.seed,
        # Penalties count generated tokens (frequency) and prompt tokens too
        # (repetition), so copying the last beat from the prompt is discouraged.
        frequency_penalty=0.5,
        repetition_penalty=1.15,
        # Decoding keeps to the choice and the tone: their words get a small logit bias.
        favour=(
            *(ctx.tone.favour if ctx.tone else ()),
            *choice_words(ctx.choice or "", skip=ctx.spec.subject.split()),
        ),
        # ... and off the opposed tones: their words get a negative bias.
        shun=ctx.tone.shun if ctx.tone else (),
        room=ctx.room,
        kind="narration",
        beat=ctx.beat,
        choice=ctx.choice,
        deadline_s=ctx.deadline_s,
        adapter=ctx.spec.adapter,
    )


def option_request(
    ctx: NarrationContext, beat_text: str, entities: list[str], request_id: str, k: int
) -> GenerationRequest:
    """Candidate ``k`` of the ballot after ``beat_text``: the continuation of the subject."""
    subject = ctx.spec.subject
    ask = (
        f"What does {subject} do next? Write one short action that names one of: "
        f"{', '.join(entities[:8])}."
    )
    return GenerationRequest(
        request_id=request_id,
        messages=(
            _system(ctx.spec),
            ChatMessage("user", _context(ctx, f"Scene: {beat_text[-MAX_LAST_BEAT_CHARS:]}\n{ask}")),
            ChatMessage("assistant", subject),
        ),
        max_tokens=24,
        temperature=1.0,
        seed=None if ctx.seed is None else ctx.seed + k,
        regex=option_regex(entities[:8]),
        room=ctx.room,
        kind="choices",
        beat=ctx.beat,
        n_choices=ctx.n_choices,
        hints=tuple(entities[:8]),
        adapter=ctx.spec.adapter,
    )


def cue_request(
    ctx: NarrationContext, beat_text: str, request_id: str, tone: str | None = None
) -> GenerationRequest:
    """The request for beat ``ctx.beat``'s scene cue (JSON under ``cue_schema``; ``tone``:
    the tone the beat was told in, which sets the music)."""
    ask = (
        f"Scene: {beat_text[-MAX_LAST_BEAT_CHARS:]}\n"
        "Describe this scene as JSON: location, time_of_day, weather, lighting, music, "
        "characters, image_prompt."
    )
    return _json_request(
        ctx,
        request_id,
        "You describe story scenes as JSON.",
        f"{ctx.spec.title}. {ctx.story.render()}\n{ask}",
        cue_schema(ctx.story, tone),
        kind="cues",
        max_tokens=200,
    )


def _json_request(
    ctx: NarrationContext,
    request_id: str,
    system: str,
    user: str,
    schema: dict[str, Any],
    *,
    kind: RequestKind,
    max_tokens: int,
) -> GenerationRequest:
    """A request for JSON under ``schema`` (guided decoding), at a low temperature."""
    return GenerationRequest(
        request_id=request_id,
        messages=(ChatMessage("system", system), ChatMessage("user", user)),
        max_tokens=max_tokens,
        temperature=0.3,
        seed=ctx.seed,
        json_schema=schema,
        room=ctx.room,
        kind=kind,
        beat=ctx.beat,
        adapter=ctx.spec.adapter,
    )


def state_request(ctx: NarrationContext, beat_text: str, request_id: str) -> GenerationRequest:
    """The request for the story state after beat ``ctx.beat`` (JSON under ``state_schema``)."""
    card = ctx.story
    ask = (
        f"{STATE_EXAMPLE}\n\n"
        f"Scene: {beat_text[-MAX_LAST_BEAT_CHARS:]}\n"
        "Update the story state after this scene as JSON: summary (one short sentence: "
        "what happened in this scene), location, present (who is there), carrying (what "
        f"{ctx.spec.subject} carries), goal (what {ctx.spec.subject} wants now), threads "
        "(up to three open questions)."
    )
    return _json_request(
        ctx,
        request_id,
        "You keep the state of a story as JSON.",
        f"{ctx.spec.title}. Before the scene:\n{card.render()}\n{ask}",
        state_schema(card),
        kind="state",
        max_tokens=260,
    )


_NUMBERED = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s*(.+?)\s*$")


def parse_choices(text: str, n: int) -> list[str]:
    """Options from a free-form ballot answer: JSON first, numbered or bulleted lines second.

    For engines without guided decoding. Returns 2..n distinct, trimmed
    options; raises ValueError when fewer than 2.
    """
    items: list[str] = []
    try:
        data = json.loads(text[text.index("{") : text.rindex("}") + 1])
        raw = data.get("choices") if isinstance(data, dict) else None
        if isinstance(raw, list):
            items = [str(x) for x in raw]
    except ValueError:
        pass
    if not items:
        items = [m.group(1) for line in text.splitlines() if (m := _NUMBERED.match(line))]
    out: list[str] = []
    seen: set[str] = set()
    for item in items:
        clean = " ".join(item.strip().strip("\"'").split())[:MAX_CHOICE_CHARS].rstrip()
        key = clean.casefold()
        if len(clean) >= 3 and key not in seen:
            seen.add(key)
            out.append(clean)
        if len(out) == n:
            break
    if len(out) < 2:
        raise ValueError(f"could not read at least 2 choices from {text[:200]!r}")
    return out
