"""A deterministic engine that streams plausible story text at a set token rate.

For demos, tests and fan-out benchmarks: no model, no GPU, same output for the
same request. It reads the request's typed fields (``kind``, ``choice``,
``n_choices``, ``beat``) that real engines ignore, so the story visibly follows
the winning choice. Faults can be injected (``fail_next``, ``stall_next``) to
exercise the pause/retry path.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import re
from collections.abc import AsyncIterator

from fablecast.inference.types import (
    EngineError,
    EngineHealth,
    FinishReason,
    GenerationDelta,
    GenerationRequest,
)

_HEROES = ("Mira", "the ferryman", "Captain Oduya", "the clockmaker's apprentice", "old Tamsin")
_PLACES = (
    "the drowned library",
    "the lantern market",
    "the glass orchard",
    "the northern causeway",
    "the observatory ruins",
    "the salt caves",
)
_THINGS = (
    "a brass key",
    "a sealed letter",
    "a map drawn in ash",
    "a humming compass",
    "a locket with no picture",
    "a lantern that burns blue",
)
_MOODS = ("uneasy", "hopeful", "restless", "hushed", "electric", "grim")
_SENTENCES = (
    "{hero} stepped into {place}, where the air felt {mood}.",
    "Somewhere below, {thing} began to glow.",
    "The crowd of shadows parted, and {hero} saw {thing} resting on a cracked pedestal.",
    "A bell rang three times across {place}, though no bell had hung there for a century.",
    "{hero} remembered a promise made long ago, and the memory tasted of rain.",
    "Footsteps echoed behind them, slow and deliberate.",
    "The wind carried whispers that sounded almost like names.",
    "For a moment everything in {place} held its breath.",
    "{hero} turned {thing} over and found a mark that should not exist.",
    "Far away, a door that had been locked for years swung open.",
)
_CHOICES = (
    "Follow the footsteps into the dark",
    "Open the sealed letter",
    "Ring the old bell again",
    "Hide and watch who comes",
    "Ask the stranger for help",
    "Burn the map before anyone sees it",
    "Climb toward the light above",
    "Trust the humming compass",
    "Turn back and warn the others",
    "Bargain with the voice in the wind",
)

_WORD = re.compile(r"\S+\s*")


def _rng(request: GenerationRequest) -> random.Random:
    key = f"kind={request.kind}|beat={request.beat}|choice={request.choice}|n={request.n_choices}"
    key += "|" + (request.messages[-1].content if request.messages else "")
    digest = hashlib.sha256(f"{request.seed}|{key}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def _fill(template: str, rnd: random.Random) -> str:
    text = template.format(
        hero=rnd.choice(_HEROES),
        place=rnd.choice(_PLACES),
        thing=rnd.choice(_THINGS),
        mood=rnd.choice(_MOODS),
    )
    return text[0].upper() + text[1:]


def narration_text(request: GenerationRequest) -> str:
    """The full narration the scripted engine tells for ``request``."""
    rnd = _rng(request)
    parts: list[str] = []
    if request.choice:
        # The prefill already told the choice; continue it.
        parts.append(_fill("It was done before {hero} could doubt it, heart pounding.", rnd))
    prefill = request.messages[-1].content if request.messages else ""
    if request.messages and request.messages[-1].role == "assistant":
        # Continue the prefill: close its open sentence, or start a new one.
        end = prefill.rstrip()[-1:]
        lead = (
            " "
            if end in (".", "!", "?")
            else " heart pounding. "
            if end == ","
            else ", heart pounding. "
        )
        parts.insert(0, lead.rstrip() if lead.strip() else "")
    # Whole sentences only, as many as fit in max_tokens (one word = one token here).
    used = sum(len(p.split()) for p in parts)
    while True:
        sentence = _fill(rnd.choice(_SENTENCES), rnd)
        if parts and used + len(sentence.split()) > request.max_tokens:
            break
        parts.append(sentence)
        used += len(sentence.split())
    text = " ".join(parts)
    return text if text[:1] in (",", " ") else " " + text


_VERBS = ("follows", "searches", "hides", "questions", "runs toward", "studies", "trusts", "warns")
_VERBS_FIRST = ("follow", "search", "hide", "question", "run toward", "study", "trust", "warn")


def choices_text(request: GenerationRequest) -> str:
    """A ballot answer: one option (the continuation of the subject) when the
    request names the entities it may use (``hints``), else a JSON ballot."""
    rnd = _rng(request)
    first_person = bool(request.messages) and request.messages[-1].content == "I"
    if request.hints:
        verbs = _VERBS_FIRST if first_person else _VERBS
        return f" {rnd.choice(verbs)} {rnd.choice(request.hints)}."
    if request.regex is not None:  # a story that names no places or things
        return f" {rnd.choice(('waits', 'listens', 'hurries', 'hides'))} very quietly."
    n = max(2, min(5, request.n_choices or 3))
    return json.dumps({"choices": rnd.sample(_CHOICES, n)})


def cue_text(request: GenerationRequest) -> str:
    """A scene cue: the first allowed value of every enum field of the request's schema."""
    rnd = _rng(request)
    props = (request.json_schema or {}).get("properties", {})
    out: dict[str, object] = {}
    for key, prop in props.items():
        if "enum" in prop:
            out[key] = rnd.choice(prop["enum"])
        elif prop.get("type") == "array":
            out[key] = [prop["items"]["enum"][0]]
        else:
            out[key] = "A quiet street at night, lamps glowing in the rain"
    return json.dumps(out)


class ScriptedEngine:
    """Deterministic streaming engine; ``tokens_per_s`` per request, any concurrency."""

    def __init__(
        self,
        *,
        tokens_per_s: float = 20.0,
        first_token_s: float = 0.05,
        max_concurrency: int = 256,
        model: str = "scripted-v1",
    ) -> None:
        if tokens_per_s <= 0:
            raise ValueError("tokens_per_s must be > 0")
        self.tokens_per_s = tokens_per_s
        self.first_token_s = first_token_s
        self._max_concurrency = max_concurrency
        self._model = model
        self._aborted: set[str] = set()
        self._ready = False
        #: Fault injection: the next N requests fail after their first token.
        self.fail_next = 0
        #: Fault injection: the next N requests stop yielding after their first token.
        self.stall_next = 0
        #: Requests started, for tests and metrics.
        self.requests_started = 0

    @property
    def name(self) -> str:
        return "scripted"

    @property
    def model(self) -> str:
        return self._model

    @property
    def max_concurrency(self) -> int:
        return self._max_concurrency

    async def start(self) -> None:
        self._ready = True

    async def close(self) -> None:
        self._ready = False

    def health(self) -> EngineHealth:
        return EngineHealth(ready=self._ready, engine=self.name, model=self.model)

    async def abort(self, request_id: str) -> None:
        self._aborted.add(request_id)

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationDelta]:
        if not self._ready:
            raise EngineError("scripted engine not started")
        self.requests_started += 1
        fail = stall = False
        if self.fail_next > 0:
            self.fail_next -= 1
            fail = True
        elif self.stall_next > 0:
            self.stall_next -= 1
            stall = True
        if request.kind == "choices":
            text = choices_text(request)
        elif request.kind == "cues":
            text = cue_text(request)
        elif request.kind == "state":
            text = state_text(request)
        else:
            text = narration_text(request)
        words = _WORD.findall(text)[: request.max_tokens]
        if words and text[:1].isspace():
            words[0] = " " + words[0]  # a continuation keeps its leading space
        interval = 1.0 / self.tokens_per_s
        loop = asyncio.get_running_loop()
        start = loop.time()
        await asyncio.sleep(self.first_token_s)
        try:
            for i, word in enumerate(words):
                if request.request_id in self._aborted:
                    yield GenerationDelta("", 0, finished=True, finish_reason="abort")
                    return
                last = i == len(words) - 1
                reason: FinishReason | None = None
                if last:
                    reason = "length" if len(words) == request.max_tokens else "stop"
                yield GenerationDelta(word, 1, finished=last, finish_reason=reason)
                if i == 0 and fail:
                    raise EngineError("injected engine failure")
                if i == 0 and stall:
                    await asyncio.sleep(3600)
                # Pace against the start time so the rate holds under load.
                delay = start + self.first_token_s + (i + 1) * interval - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                else:
                    await asyncio.sleep(0)
        finally:
            self._aborted.discard(request.request_id)


def state_text(request: GenerationRequest) -> str:
    """A story state update that names the story's own entities (its schema's enums)."""
    rnd = _rng(request)
    props = (request.json_schema or {}).get("properties", {})
    place = rnd.choice(props["location"]["enum"]) if "location" in props else "the road"
    who = props["present"]["items"]["enum"][0] if "present" in props else "Someone"
    # The summary retells the scene's first words (the request's last "Scene:" line).
    scene = ""
    for line in (request.messages[-1].content if request.messages else "").splitlines():
        if line.startswith("Scene: "):
            scene = line[len("Scene: ") :]
    told = " ".join(re.sub(r"[^A-Za-z ,.'-]", " ", scene).split()[:12]).rstrip(" ,.")
    out: dict[str, object] = {"summary": told if len(told) >= 10 else f"{who} reaches {place}"}
    if "location" in props:
        out["location"] = place
    if "present" in props:
        out["present"] = [who]
    if "carrying" in props:
        out["carrying"] = props["carrying"]["items"]["enum"][:1]
    out["goal"] = f"{who} must learn the secret of {place}"
    out["threads"] = [f"Who waits at {place}"]
    return json.dumps(out)
