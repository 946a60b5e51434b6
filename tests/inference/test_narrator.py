"""The Narrator over the scripted engine: prefill, sentence guard, stall timeout, ballots, cues."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from fablecast.inference.backends.scripted import ScriptedEngine
from fablecast.inference.narrator import NarrationStats, Narrator
from fablecast.inference.prompts import NarrationContext
from fablecast.inference.story.embed import LexicalEmbedder
from fablecast.inference.story.spec import load_spec
from fablecast.inference.story.state import StoryCard
from fablecast.inference.story.text import ends_sentence
from fablecast.inference.types import (
    EngineError,
    EngineHealth,
    EngineStalled,
    GenerationDelta,
    GenerationRequest,
)

SPEC = load_spec("noir")


def ctx(choice: str | None = None, max_tokens: int = 40) -> NarrationContext:
    return NarrationContext(
        "r", 2, SPEC, StoryCard(SPEC), choice=choice, max_tokens=max_tokens, seed=1
    )


async def engine() -> ScriptedEngine:
    e = ScriptedEngine(tokens_per_s=1000, first_token_s=0)
    await e.start()
    return e


@dataclass
class Canned:
    """An engine that streams fixed text (one delta per word), whatever is asked."""

    text: str
    name: str = "canned"
    model: str = "canned"
    max_concurrency: int = 8

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def abort(self, request_id: str) -> None: ...

    def health(self) -> EngineHealth:
        return EngineHealth(True, "canned", "canned")

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationDelta]:
        parts = self.text.split(" ")
        for i, w in enumerate(parts):
            last = i == len(parts) - 1
            yield GenerationDelta(
                " " + w, 1, finished=last, finish_reason="length" if last else None
            )


async def text_of(n: Narrator, c: NarrationContext, earlier: list[str] | None = None) -> str:
    return "".join([d.text async for d in n.narrate(c, earlier or [])])


async def test_narrate_opens_with_the_choice_and_ends_at_a_sentence() -> None:
    n = Narrator(await engine(), stall_timeout_s=1)
    text = await text_of(n, ctx("I follow Lena to the docks"))
    assert text.startswith("I follow Lena to the docks, ")
    assert ends_sentence(text)


async def test_guard_drops_meta_talk_loops_and_the_cut_tail() -> None:
    old = "The rain hammers the roof of the old office all night long."
    canned = Canned(
        f"The audience must now decide. {old} I light a cigarette. Lena smiles at the door and"
    )
    stats = NarrationStats()
    n = Narrator(canned)  # type: ignore[arg-type]
    text = "".join([d.text async for d in n.narrate(ctx("I wait"), [old], stats)])
    assert text == "I wait. I light a cigarette."
    assert stats.dropped == 2 and stats.generated == " I light a cigarette."


async def test_a_beat_with_no_finished_sentence_is_closed_at_a_word() -> None:
    n = Narrator(Canned("walks on and then nothing ends"))  # type: ignore[arg-type]
    text = await text_of(n, ctx("I wait"))
    assert text == "I wait, walks on and then nothing."
    assert ends_sentence(text)


async def test_stall_raises_and_aborts() -> None:
    e = await engine()
    e.stall_next = 1
    n = Narrator(e, stall_timeout_s=0.05)
    with pytest.raises(EngineStalled):
        await text_of(n, ctx())


async def test_engine_failure_propagates() -> None:
    e = await engine()
    e.fail_next = 1
    with pytest.raises(EngineError):
        await text_of(Narrator(e), ctx())


async def test_ballot_is_grounded_and_distinct() -> None:
    n = Narrator(await engine(), embedder=LexicalEmbedder())
    ballot = await n.ballot(ctx(), "I walk into the Blue Heron club. Lena waits.")
    assert len(ballot.options) == 3
    assert all(o.startswith("I ") for o in ballot.options)


async def test_ballot_falls_back_on_junk_and_fails_when_engine_is_down() -> None:
    n = Narrator(Canned("1. Fast."), embedder=LexicalEmbedder())  # type: ignore[arg-type]
    ballot = await n.ballot(ctx(), "I wait.")
    assert ballot.fallback == 3 and len(ballot.options) == 3
    e = await engine()
    e.fail_next = 100
    with pytest.raises(EngineError):
        await Narrator(e).ballot(ctx(), "I wait.")


async def test_cue_from_engine_and_fallback() -> None:
    cue = await Narrator(await engine()).cue(ctx(), "I wait at the docks.")
    assert cue.source == "engine"
    bad = await Narrator(Canned('{"location": "Mars"}')).cue(ctx(), "I wait.", "sad")  # type: ignore[arg-type]
    assert bad.source == "fallback" and bad.music == "sad"


async def test_request_ids_unique() -> None:
    n = Narrator(await engine())
    assert n._request_id(ctx(), "narrate") != n._request_id(ctx(), "narrate")
