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


@dataclass
class Openers:
    """Streams ``openings[k]`` for requests ``...:opening{k}:...``, else ``rest``; records them."""

    openings: list[str]
    rest: str
    name: str = "openers"
    model: str = "openers"
    max_concurrency: int = 8

    def __post_init__(self) -> None:
        self.requests: list[GenerationRequest] = []

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def abort(self, request_id: str) -> None: ...

    def health(self) -> EngineHealth:
        return EngineHealth(True, "openers", "openers")

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationDelta]:
        self.requests.append(request)
        kind = request.request_id.split(":")[2]
        text = self.openings[int(kind[7:])] if kind.startswith("opening") else self.rest
        parts = text.split(" ")
        for i, w in enumerate(parts):
            last = i == len(parts) - 1
            yield GenerationDelta(
                (" " if i else "") + w, 1, finished=last, finish_reason="stop" if last else None
            )


WIN = "I follow Lena to the docks"
LOSERS = ("I hide the photograph", "I call Nico")
OPENINGS = [
    " hiding the photograph in a drawer. The photograph stays hidden from everyone. More",
    " following Lena down to the docks. Lena walks along the docks in the rain. More",
    " calling Nico from the office phone. Nico does not answer the call. More",
]
REST = " The fog rolls in over the water. A ship horn sounds far away."


def voted(max_tokens: int = 80) -> NarrationContext:
    return NarrationContext(
        "r", 2, SPEC, StoryCard(SPEC), choice=WIN, losers=LOSERS, max_tokens=max_tokens, seed=1
    )


async def test_best_opening_is_the_one_streamed_and_continued() -> None:
    eng = Openers(OPENINGS, REST)
    n = Narrator(eng, stall_timeout_s=1, embedder=LexicalEmbedder(), openings=3)
    stats = NarrationStats()
    text = "".join([d.text async for d in n.narrate(voted(), [], stats)])
    chosen = "following Lena down to the docks. Lena walks along the docks in the rain."
    assert text == f"{WIN}, {chosen}{REST}"
    assert stats.opening == 1 and len(stats.openings) == 3
    assert stats.openings[1].score == max(s.score for s in stats.openings)
    assert stats.generated == f", {chosen}{REST}"
    # Three candidates, then one continuation whose prefill carries the chosen opening
    # (cut after its second sentence) and whose budget is what the opening left.
    kinds = [r.request_id.split(":")[2] for r in eng.requests]
    assert sorted(kinds[:3]) == ["opening0", "opening1", "opening2"] and kinds[3] == "narrate"
    follow = eng.requests[3]
    assert follow.messages[-1].content == f"{WIN}, {chosen}"
    assert follow.max_tokens < 80
    assert stats.tokens == sum(len(o.split(" ")) for o in OPENINGS) + len(REST.split(" "))


async def test_a_prepared_opening_is_used_without_sampling_again() -> None:
    eng = Openers(OPENINGS, REST)
    n = Narrator(eng, stall_timeout_s=1, embedder=LexicalEmbedder(), openings=3)
    task = n.prepare(voted())
    await task
    before = len(eng.requests)
    text = "".join([d.text async for d in n.narrate(voted(), [], None, task)])
    assert "following Lena down to the docks" in text
    assert len(eng.requests) == before + 1


async def test_one_opening_and_opening_beats_use_one_unchanged_stream() -> None:
    for openings, c in ((1, voted()), (4, ctx(None, 80))):
        eng = Openers(OPENINGS, REST)
        n = Narrator(eng, stall_timeout_s=1, embedder=LexicalEmbedder(), openings=openings)
        stats = NarrationStats()
        text = "".join([d.text async for d in n.narrate(c, [], stats)])
        assert len(eng.requests) == 1 and eng.requests[0].request_id.split(":")[2] == "narrate"
        assert eng.requests[0].messages[-1].content in (f"{WIN},", SPEC.subject)
        assert text.endswith(REST) and stats.opening is None and stats.openings == []


async def test_best_of_falls_back_to_one_stream_when_every_opening_fails() -> None:
    class Failing(Openers):
        async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationDelta]:
            if "opening" in request.request_id:
                raise EngineError("down")
            async for d in super().generate(request):
                yield d

    n = Narrator(Failing(OPENINGS, REST), stall_timeout_s=1, embedder=LexicalEmbedder(), openings=2)
    stats = NarrationStats()
    text = "".join([d.text async for d in n.narrate(voted(), [], stats)])
    assert text == f"{WIN}.{REST}" and stats.opening is None


async def test_the_tone_pass_tells_the_best_toned_rest_as_one_block() -> None:
    # Rests come from ``rest`` (every narrate request): give each request its own.
    rests = [
        " She sits calmly. The room is quiet. More",
        " He laughs at the silly joke. Everyone giggles at it. More",
        " The cold wind blows. A door shuts. More",
    ]

    class Rests(Openers):
        async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationDelta]:
            kind = request.request_id.split(":")[2]
            if kind.startswith("rest"):
                self.rest = rests[int(kind[4:].split(".")[1])]
            async for d in super().generate(request):
                yield d

    from fablecast.inference.story.tone import TONES

    eng = Rests(OPENINGS, REST)
    n = Narrator(eng, stall_timeout_s=1, embedder=LexicalEmbedder(), openings=3, tone_by="rest")
    c = voted()
    c.tone = TONES["funny"]
    stats = NarrationStats()
    deltas = [d async for d in n.narrate(c, [], stats)]
    text = "".join(d.text for d in deltas)
    assert stats.rest == 1 and len(stats.rests) == 3  # one in tone: no second round
    assert text.endswith("rain. He laughs at the silly joke. Everyone giggles at it.")
    # Without a tone (or with the pass off) the rest is one plain stream.
    n.rests = False
    eng.requests.clear()
    "".join([d.text async for d in n.narrate(c, [], NarrationStats())])
    assert not any("rest" in r.request_id.split(":")[2] for r in eng.requests)


async def test_a_second_tone_round_when_no_rest_is_in_tone() -> None:
    rounds = [
        [" The cold wind blows. A door shuts. More", " She sits calmly. The room is quiet. More"],
        [" A ship sails. Gulls cry. More", " He laughs at the silly joke. Everyone giggles. More"],
    ]

    class Rounds(Openers):
        async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationDelta]:
            kind = request.request_id.split(":")[2]
            if kind.startswith("rest"):
                r, k = kind[4:].split(".")
                self.rest = rounds[int(r)][int(k)]
            async for d in super().generate(request):
                yield d

    from fablecast.inference.story.tone import TONES

    for tone_rounds, told in ((2, "He laughs at the silly joke."), (1, None)):
        eng = Rounds(OPENINGS[:2], REST)
        n = Narrator(
            eng,
            stall_timeout_s=1,
            embedder=LexicalEmbedder(),
            openings=2,
            tone_rounds=tone_rounds,
            tone_by="rest",
        )
        c = voted()
        c.tone = TONES["funny"]
        stats = NarrationStats()
        text = "".join([d.text async for d in n.narrate(c, [], stats)])
        rests = [r for r in eng.requests if r.request_id.split(":")[2].startswith("rest")]
        assert len(rests) == 2 * tone_rounds and len(stats.rests) == 2 * tone_rounds
        if told:
            assert told in text and stats.rest == 3
        else:
            assert "laughs" not in text


class Steps(Openers):
    """Streams ``steps[s][k]`` for tone-step requests ``...:step{s}.{k}:...``."""

    def __init__(self, steps: list[list[str]]) -> None:
        super().__init__(OPENINGS, REST)
        self.steps = steps

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationDelta]:
        kind = request.request_id.split(":")[2]
        if kind.startswith("step"):
            s, k = kind[4:].split(".")
            self.rest = self.steps[int(s)][int(k)]
        async for d in super().generate(request):
            yield d


async def test_tone_steps_tell_the_best_toned_next_sentence_one_at_a_time() -> None:
    from fablecast.inference.story.tone import TONES

    eng = Steps(
        [
            [" The cold wind blows. More", " He laughs at the silly joke. More", " A door. More"],
            [" Grief fills me. More", " Everyone giggles at it.", " I weep alone. More"],
        ]
    )
    n = Narrator(eng, stall_timeout_s=1, embedder=LexicalEmbedder(), openings=3)
    c = voted()
    c.tone = TONES["funny"]
    stats = NarrationStats()
    text = ""
    async for d in n.narrate(c, [], stats):
        text += d.text
        if "laughs" in d.text:
            # Told as soon as it is chosen: the next step has not started yet.
            assert not any(":step1." in r.request_id for r in eng.requests)
    assert text.endswith("rain. He laughs at the silly joke. Everyone giggles at it.")
    # The second step continues from the first's choice; the engine ended the beat
    # after the chosen sentence of step 1, so there is no step 2.
    step1 = [r for r in eng.requests if ":step1." in r.request_id]
    assert len(step1) == 3
    assert step1[0].messages[-1].content.endswith("in the rain. He laughs at the silly joke. ")
    assert not any(":step2." in r.request_id for r in eng.requests)
    assert len(stats.rests) == 2 and stats.rest is None and all(m > 0 for m in stats.rests)
    assert ends_sentence(text)


async def test_tone_steps_skip_meta_and_loops_and_stop_when_nothing_is_clean() -> None:
    from fablecast.inference.story.tone import TONES

    earlier = "The fog rolls over the black water of the harbour tonight again."
    eng = Steps(
        [
            [
                " The audience laughs at the silly joke. More",
                " The fog rolls over the black water of the harbour tonight again. More",
                " A gull squawks. More",
            ],
            [" Voters giggle. More", " 20 feet high. More", " Ha ha. More"],
        ]
    )
    n = Narrator(eng, stall_timeout_s=1, embedder=LexicalEmbedder(), openings=3)
    c = voted()
    c.tone = TONES["funny"]
    stats = NarrationStats()
    text = "".join([d.text async for d in n.narrate(c, [earlier], stats)])
    assert text.endswith("in the rain. A gull squawks.")
    assert "audience" not in text.lower() and len(stats.rests) == 1


async def test_tone_steps_fall_back_to_one_stream_when_the_first_step_fails() -> None:
    from fablecast.inference.story.tone import TONES

    class Down(Steps):
        async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationDelta]:
            if ":step" in request.request_id:
                raise EngineError("down")
            async for d in super().generate(request):
                yield d

    n = Narrator(Down([]), stall_timeout_s=1, embedder=LexicalEmbedder(), openings=2)
    c = voted()
    c.tone = TONES["funny"]
    text = "".join([d.text async for d in n.narrate(c, [], NarrationStats())])
    assert text.endswith(REST)


def test_tone_by_is_checked() -> None:
    with pytest.raises(ValueError, match="tone_by"):
        Narrator(Canned("x"), tone_by="word")
