"""The narrator service: story contexts in; clean narration, grounded ballots and cues out.

It is the one place that talks to an ``EngineClient`` on behalf of rooms: it
builds requests (``prompts``), enforces the stall timeout (no delta within
``stall_timeout_s`` -> ``EngineStalled`` and the request is aborted), and
guards what reaches clients:

- ``narrate`` streams the prefill (the winning option, written in as the
  beat's first sentence) and then whole sentences only: a sentence that talks
  about the audience or voting, or repeats an 8-word run of an earlier beat or
  of this beat, is dropped; an unfinished tail is dropped, so a beat always
  ends at a sentence end.
- after a vote, with ``openings`` > 1, ``narrate`` first samples that many
  candidate openings (the same prefill, each cut after its second sentence),
  scores them (``story.rerank``: nearer the winning option than the losers,
  in the tone asked for), and continues the best one; ``prepare`` starts that
  sampling early (at vote close, during the reveal pause).
- with a tone directive, the rest of such a beat is told in tone steps
  (``tone_by = "sentence"``): ``openings`` candidates for each next sentence,
  the one that leaves the beat nearest the tone told, sentence by sentence;
  or (``"rest"``) ``openings`` whole rests, the best-toned told as one block.
- ``ballot`` samples ``CANDIDATES`` options concurrently, keeps clean,
  grounded, distinct ones and tops up from ``fallback_options``.
- ``cue`` asks for a JSON cue, validates it, retries once, then falls back.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, TypeVar, get_args

from fablecast.inference.engine import EngineClient, close_stream
from fablecast.inference.prompts import (
    NarrationContext,
    cue_request,
    narration_request,
    option_request,
    state_request,
)
from fablecast.inference.story.ballots import CANDIDATES, clean_option, fallback_options, select
from fablecast.inference.story.cues import SceneCue, fallback_cue, parse_cue
from fablecast.inference.story.embed import Embedder, LexicalEmbedder
from fablecast.inference.story.rerank import (
    TONE_WEIGHT,
    OpeningScore,
    best_opening,
    score_openings,
    tone_margins,
)
from fablecast.inference.story.text import is_meta, shares_run, split_complete
from fablecast.inference.story.update import StateUpdate, parse_state
from fablecast.inference.types import (
    ChatMessage,
    EngineError,
    EngineStalled,
    FinishReason,
    GenerationDelta,
    GenerationRequest,
)

log = logging.getLogger(__name__)


_T = TypeVar("_T")


async def _successes(aws: Iterable[Awaitable[_T]]) -> list[_T]:
    """The results of ``aws``, run together, failures left out (a cancellation is raised)."""
    answers = await asyncio.gather(*aws, return_exceptions=True)
    for a in answers:
        if isinstance(a, asyncio.CancelledError):
            raise a
    return [a for a in answers if not isinstance(a, BaseException)]


def _prose(sentence: str) -> bool:
    """Whether a candidate sentence of a tone step is prose: three words or more, no
    digits (the default model drifts into lists of figures: "20 high. 6 inches thick.")."""
    return len(sentence.split()) >= 3 and not any(c.isdigit() for c in sentence)


@dataclass(frozen=True, slots=True)
class BallotResult:
    """A ballot's options; ``fallback`` of them came from the story card, not the engine."""

    options: list[str]
    fallback: int
    candidates: list[str]


@dataclass(slots=True)
class NarrationStats:
    """What the guard did to the last narration of a context (for the why record and eval)."""

    prefill: str = ""
    generated: str = ""
    dropped: int = 0
    tokens: int = 0
    #: ``time.monotonic()`` of the first token the engine produced (None: none yet).
    first_token_at: float | None = None
    #: The candidate openings scored (empty: one opening, no choice made).
    openings: list[OpeningScore] = field(default_factory=list)
    #: Index of the opening continued (None: no choice made).
    opening: int | None = None
    #: ``time.monotonic()`` when the opening was chosen (None: no choice made).
    chosen_at: float | None = None
    #: Tone margins of the candidate rests of the beat (empty: the rest was streamed).
    rests: list[float] = field(default_factory=list)
    #: Index of the rest told (None: the rest was streamed).
    rest: int | None = None


@dataclass(frozen=True, slots=True)
class Openings:
    """The candidate openings of one beat, scored, and the one to continue."""

    scores: list[OpeningScore]
    chosen: int
    #: The chosen opening as the engine wrote it, cut after its second sentence.
    raw: str
    #: Engine tokens spent on all candidates; ``kept`` of them are in ``raw``.
    tokens: int
    kept: int
    first_token_at: float | None
    chosen_at: float


#: Candidate openings per beat after a vote on real engines (``[engine] openings``).
DEFAULT_OPENINGS = 6
#: Tokens a candidate opening may take (two sentences of the default model).
OPENING_TOKENS = 48
#: Tokens a candidate sentence of a tone step may take.
STEP_TOKENS = 40
#: Fewer tokens than this left of a beat's budget: no further sentence is sampled.
MIN_SENTENCE_TOKENS = 8
#: How the tone pass chooses (``[engine] tone_by``): each next sentence, or whole rests.
ToneBy = Literal["sentence", "rest"]
TONE_BY: tuple[ToneBy, ...] = get_args(ToneBy)


class Narrator:
    """Runs narration, ballot and cue requests for rooms on one engine (or scheduler)."""

    def __init__(
        self,
        engine: EngineClient,
        *,
        stall_timeout_s: float = 10.0,
        embedder: Embedder | None = None,
        sentence_guard: bool = True,
        openings: int = 1,
        opening_tokens: int = OPENING_TOKENS,
        tone_weight: float = TONE_WEIGHT,
        rests: bool = True,
        tone_rounds: int = 1,
        tone_by: ToneBy = "sentence",
    ) -> None:
        if tone_by not in TONE_BY:
            raise ValueError(f"tone_by must be one of {TONE_BY}, not {tone_by!r}")
        self.engine = engine
        #: ``"sentence"``: the tone pass picks each next sentence of the rest of the
        #: beat among ``openings`` candidates; ``"rest"``: it picks among whole rests.
        self.tone_by: ToneBy = tone_by
        #: Rounds of the tone pass at most: another round only when no rest of the
        #: previous ones is in the tone asked for.
        self.tone_rounds = tone_rounds
        #: With best-of-n openings and a tone directive: also sample the rest of the
        #: beat ``openings`` times and tell the best-toned (the tone pass).
        self.rests = rests
        #: Candidate openings of a beat after a vote (1: no best-of-n, one stream).
        self.openings = openings
        self.opening_tokens = opening_tokens
        self.tone_weight = tone_weight
        #: False: narration streams token by token, unguarded (token-timing benchmarks).
        self.sentence_guard = sentence_guard
        self.stall_timeout_s = stall_timeout_s
        self.embedder: Embedder = embedder or LexicalEmbedder()
        self._ids = itertools.count(1)
        #: Why recent cues were rejected (for logs and ``fablecast eval``).
        self.cue_errors: deque[str] = deque(maxlen=50)
        #: Why recent engine state updates were rejected (``fablecast eval`` shows them).
        self.state_errors: deque[str] = deque(maxlen=50)

    def _request_id(self, ctx: NarrationContext, kind: str) -> str:
        return f"{ctx.room}:{ctx.beat}:{kind}:{next(self._ids)}"

    async def stream(self, request: GenerationRequest) -> AsyncIterator[GenerationDelta]:
        """Stream ``request`` with the stall timeout; closing the stream aborts it."""
        agen = self.engine.generate(request)
        try:
            while True:
                try:
                    async with asyncio.timeout(self.stall_timeout_s):
                        delta = await anext(agen)
                except StopAsyncIteration:
                    return
                except TimeoutError:
                    await self.engine.abort(request.request_id)
                    raise EngineStalled(f"no token within {self.stall_timeout_s:g} s") from None
                yield delta
                if delta.finished:
                    if delta.finish_reason in ("abort", "error"):
                        raise EngineError(f"request ended with {delta.finish_reason}")
                    return
        finally:
            await close_stream(agen)

    # ------------------------------------------------------------------ narration

    def narrate(
        self,
        ctx: NarrationContext,
        earlier: Sequence[str] = (),
        stats: NarrationStats | None = None,
        prepared: asyncio.Future[Openings | None] | None = None,
    ) -> AsyncIterator[GenerationDelta]:
        """Stream beat ``ctx.beat``: the prefill, then whole clean sentences.

        ``earlier`` are recent beats (for the loop guard only; they are not
        in the prompt). ``stats``, if given, is filled in as the beat goes.
        A beat after a vote, with ``openings`` > 1 and the guard on, continues
        the best of ``openings`` candidate openings; ``prepared`` is a task of
        ``prepare`` for this very context, started earlier (else they are
        sampled now). The prefill is yielded at once either way.
        """
        request = narration_request(ctx, self._request_id(ctx, "narrate"))
        if not self.sentence_guard:
            return self._unguarded(request)
        stats = stats or NarrationStats()
        if self.best_of(ctx):
            source = self._best_of(ctx, request, list(earlier), stats, prepared)
        else:
            source = self.stream(request)
        return self._narrate(request, source, list(earlier), stats)

    def best_of(self, ctx: NarrationContext) -> bool:
        """Whether beat ``ctx`` is opened best-of-n (after a vote, ``openings`` > 1, guarded)."""
        return self.openings > 1 and self.sentence_guard and bool(ctx.choice)

    def prepare(
        self, ctx: NarrationContext, earlier: Sequence[str] = ()
    ) -> asyncio.Task[Openings | None]:
        """Start sampling ``ctx``'s candidate openings now (None when every request failed).

        Pass the task to ``narrate`` as ``prepared``; cancel it if unused.
        """
        return asyncio.get_running_loop().create_task(
            self._openings(ctx, list(earlier)), name=f"openings:{ctx.room}:{ctx.beat}"
        )

    async def _sample(
        self, request: GenerationRequest, sentences: int = 0, first: list[float] | None = None
    ) -> tuple[str, int, FinishReason | None]:
        """One candidate: (its text, tokens, the engine's finish reason, None when cut).

        With ``sentences``, the stream is closed (the request aborted) once that many
        sentences are complete; ``first`` gets the time of the first token of all.
        """
        text = ""
        tokens = 0
        reason: FinishReason | None = None
        agen = self.stream(request)
        try:
            async for delta in agen:
                if first is not None and delta.tokens and not first:
                    first.append(time.monotonic())
                text += delta.text
                tokens += delta.tokens
                if delta.finished:
                    reason = delta.finish_reason
                elif sentences and len(split_complete(text, final=False)[0]) >= sentences:
                    break
        finally:
            await close_stream(agen)
        return text, tokens, reason

    def _variants(
        self,
        ctx: NarrationContext,
        base: GenerationRequest,
        label: str,
        salt: int = 0,
        **changes: Any,
    ) -> list[GenerationRequest]:
        """``openings`` copies of ``base`` to sample at once, each with its own id
        (``label`` and its index) and seed; ``salt`` sets the seeds of one round apart."""
        return [
            replace(
                base,
                request_id=self._request_id(ctx, f"{label}{k}"),
                seed=None if base.seed is None else base.seed + 7919 * k + 104729 * salt,
                **changes,
            )
            for k in range(self.openings)
        ]

    async def _openings(self, ctx: NarrationContext, earlier: list[str]) -> Openings | None:
        base = narration_request(ctx, "")
        requests = self._variants(
            ctx, base, "opening", max_tokens=min(self.opening_tokens, ctx.max_tokens)
        )
        first: list[float] = []
        good = [
            (text, tokens)
            for text, tokens, _ in await _successes(self._sample(r, 2, first) for r in requests)
        ]
        if not good:
            log.info("room %s beat %d: every opening failed", ctx.room, ctx.beat)
            return None
        prefill = base.messages[-1].content
        raws: list[str] = []
        kept: list[int] = []
        shown: list[str] = []
        for text, tokens in good:
            done, _ = split_complete(text)
            raw = "".join(done[:2]) if done else text
            raws.append(raw.rstrip())
            kept.append(round(tokens * len(raw) / len(text)) if text else 0)
            # What the guard will release of it (meta-talk and loops are dropped).
            clean = [
                d.strip()
                for d in (done[:2] if done else [text])
                if d.strip() and not is_meta(d) and not shares_run(d, [*earlier, prefill])
            ]
            shown.append(" ".join(clean).lstrip(",;: "))
        tone = ctx.tone.name if ctx.tone else None
        scores = await asyncio.to_thread(
            functools.partial(
                score_openings,
                shown,
                ctx.choice or "",
                ctx.losers,
                tone,
                self.embedder,
                tone_weight=self.tone_weight,
            )
        )
        chosen = best_opening(scores)
        return Openings(
            scores=scores,
            chosen=chosen,
            raw=raws[chosen],
            tokens=sum(t for _, t in good),
            kept=kept[chosen],
            first_token_at=first[0] if first else None,
            chosen_at=time.monotonic(),
        )

    async def _rests(
        self,
        ctx: NarrationContext,
        follow: GenerationRequest,
        earlier: list[str],
        told: list[str],
        stats: NarrationStats,
    ) -> GenerationDelta | None:
        """The best-toned of ``openings`` rests of the beat, as one finished delta.

        When no rest of a round is in the tone asked for (every margin <= 0),
        another round is sampled, up to ``tone_rounds`` rounds; the best of all
        rounds is told.
        """
        assert ctx.tone is not None
        good: list[tuple[str, int]] = []
        margins: list[float] = []
        for round_ in range(max(1, self.tone_rounds)):
            requests = self._variants(ctx, follow, f"rest{round_}.", 1 + round_)
            fresh = [
                (text, tokens)
                for text, tokens, _ in await _successes(self._sample(r) for r in requests)
            ]
            if not fresh:
                break
            beats: list[str] = []
            for text, _ in fresh:
                done, _ = split_complete(text)
                clean = [
                    d.strip()
                    for d in done
                    if d.strip() and not is_meta(d) and not shares_run(d, earlier)
                ]
                beats.append(" ".join([*told, *clean]) if clean else "")
            margins += await asyncio.to_thread(
                functools.partial(tone_margins, beats, ctx.tone.name, self.embedder)
            )
            good += fresh
            if max(margins) > 0:
                break
        if not good:
            return None
        best = max(range(len(margins)), key=lambda i: (margins[i], -i))
        stats.rests = margins
        stats.rest = best
        return GenerationDelta(
            good[best][0], sum(t for _, t in good), finished=True, finish_reason="length"
        )

    async def _sentence(self, request: GenerationRequest) -> tuple[str, int, bool]:
        """One candidate next sentence: (its text with the space after it, tokens, whether
        the engine ended the beat right after it); ``""`` when none was finished."""
        text, tokens, reason = await self._sample(request, 1)
        ended = reason == "stop"
        done, tail = split_complete(text, final=reason is not None)
        if not done:
            return "", tokens, ended
        return done[0], tokens, ended and len(done) == 1 and not tail.strip()

    async def _tone_steps(
        self,
        ctx: NarrationContext,
        follow: GenerationRequest,
        earlier: list[str],
        told: list[str],
        stats: NarrationStats,
    ) -> AsyncIterator[GenerationDelta]:
        """The rest of the beat in tone steps, each sentence a finished choice.

        Each step samples ``openings`` candidates for the next sentence from the
        beat so far; the clean ones (prose of three words or more without
        digits, no meta-talk, no repeated run) are scored by
        the tone margin of the whole beat with them (``tone_margins``) and the
        best is told at once. The beat ends when its token budget is spent, when
        the chosen sentence was the engine's last, or when no candidate is clean.
        If every request of the first step fails, the rest is one plain stream.
        ``stats.rests`` gets the told sentence's margin per step.
        """
        assert ctx.tone is not None
        prefill = follow.messages[-1].content
        left = follow.max_tokens
        told = list(told)
        step = 0
        while left >= MIN_SENTENCE_TOKENS:
            requests = self._variants(
                ctx,
                follow,
                f"step{step}.",
                1 + step,
                messages=(*follow.messages[:-1], ChatMessage("assistant", prefill)),
                max_tokens=min(left, STEP_TOKENS),
            )
            fresh = await _successes(self._sentence(r) for r in requests)
            if not fresh and step == 0:
                async for delta in self.stream(follow):
                    yield delta
                return
            spent = sum(t for _, t, _ in fresh)
            clean = [
                (text, tokens, ended)
                for text, tokens, ended in fresh
                if _prose(text)
                and not is_meta(text)
                and not shares_run(text.strip(), [*earlier, prefill])
            ]
            if not clean:
                yield GenerationDelta("", spent, finished=True, finish_reason="stop")
                return
            beats = [" ".join([*told, text.strip()]) for text, _, _ in clean]
            margins = await asyncio.to_thread(
                functools.partial(tone_margins, beats, ctx.tone.name, self.embedder)
            )
            best = max(range(len(margins)), key=lambda i: (margins[i], -i))
            text, tokens, ended = clean[best]
            stats.rests.append(margins[best])
            told.append(text.strip())
            prefill += text
            left -= tokens
            step += 1
            yield GenerationDelta(
                text, spent, finished=ended, finish_reason="stop" if ended else None, complete=True
            )
            if ended:
                return
        yield GenerationDelta("", 0, finished=True, finish_reason="length")

    async def _best_of(
        self,
        ctx: NarrationContext,
        request: GenerationRequest,
        earlier: list[str],
        stats: NarrationStats,
        prepared: asyncio.Future[Openings | None] | None,
    ) -> AsyncIterator[GenerationDelta]:
        """The chosen opening as one delta, then the stream that continues it."""
        chosen = await (prepared if prepared is not None else self._openings(ctx, earlier))
        if chosen is None:  # every candidate failed: one plain stream
            async for delta in self.stream(request):
                yield delta
            return
        stats.openings = list(chosen.scores)
        stats.opening = chosen.chosen
        stats.chosen_at = chosen.chosen_at
        if stats.first_token_at is None:
            stats.first_token_at = chosen.first_token_at
        # Tokens of the candidates not kept were spent all the same: count them here.
        yield GenerationDelta(chosen.raw, chosen.tokens)
        left = ctx.max_tokens - chosen.kept
        if left < MIN_SENTENCE_TOKENS:
            yield GenerationDelta("", 0, finished=True, finish_reason="length")
            return
        prefill = request.messages[-1].content + chosen.raw
        follow = replace(
            request,
            request_id=self._request_id(ctx, "narrate"),
            messages=(*request.messages[:-1], ChatMessage("assistant", prefill)),
            max_tokens=left,
        )
        if ctx.tone is None or not self.rests:
            async for delta in self.stream(follow):
                yield delta
            return
        # The tone pass: the rest of the beat sentence by sentence (tone steps), or
        # ``openings`` whole rests with the best-toned told as one block.
        told = [chosen.scores[chosen.chosen].text]
        if self.tone_by == "sentence":
            async for delta in self._tone_steps(ctx, follow, earlier, told, stats):
                yield delta
            return
        rest = await self._rests(ctx, follow, [*earlier, prefill], told, stats)
        if rest is None:  # every rest failed: one plain stream
            async for delta in self.stream(follow):
                yield delta
            return
        yield rest

    async def _unguarded(self, request: GenerationRequest) -> AsyncIterator[GenerationDelta]:
        yield GenerationDelta(request.messages[-1].content + " ", 0)
        async for delta in self.stream(request):
            yield delta

    async def _narrate(
        self,
        request: GenerationRequest,
        source: AsyncIterator[GenerationDelta],
        earlier: list[str],
        stats: NarrationStats,
    ) -> AsyncIterator[GenerationDelta]:
        prefill = request.messages[-1].content
        # A prefill left open with a comma is shown without it; the comma (or a full
        # stop, if the model starts a new sentence) joins the first sentence that is
        # released, and a full stop closes it if that sentence is dropped.
        join = prefill.endswith(",")
        told = prefill.rstrip(",")
        stats.prefill = told
        yield GenerationDelta(told, 0)
        buf = ""
        pending_tokens = 0
        space = False  # whether whitespace separates the last told sentence from the next
        async for delta in source:
            buf += delta.text
            pending_tokens += delta.tokens
            stats.tokens += delta.tokens
            if stats.first_token_at is None and delta.tokens:
                stats.first_token_at = time.monotonic()
            done, buf = split_complete(buf, final=delta.finished or delta.complete)
            for sentence in done:
                clean = sentence.strip()
                lead = space or sentence[:1].isspace()
                space = sentence[-1:].isspace()
                if not clean:
                    continue
                if is_meta(clean) or shares_run(clean, [*earlier, told]):
                    stats.dropped += 1
                    if join or (not split_complete(told)[0] and told.strip()):
                        # The prefill's sentence was left open: close it.
                        join = False
                        told += "."
                        yield GenerationDelta(".", 0)
                    space = True
                    continue
                if join:
                    join = False
                    clean = clean.lstrip(",;: ")
                    text = (". " if clean[:1].isupper() else ", ") + clean
                else:
                    text = f" {clean}" if lead and told.strip() else clean
                told += text
                stats.generated += text
                yield GenerationDelta(text, pending_tokens)
                pending_tokens = 0
        # The unfinished tail (cut at max_tokens) is dropped: beats end at a sentence end.
        # A beat with no finished sentence at all (a tiny token budget) is closed
        # with a full stop after its last whole word instead.
        if not split_complete(told)[0]:
            tail = "" if is_meta(buf) else buf.rstrip()
            tail = tail[: tail.rfind(" ")] if " " in tail.strip() else tail
            tail = tail.rstrip(" ,;:-")
            close = f", {tail.strip()}." if join and tail.strip() else f"{tail}."
            told += close
            stats.generated += close
            yield GenerationDelta(close, pending_tokens)
            pending_tokens = 0
        yield GenerationDelta("", pending_tokens, finished=True, finish_reason="stop")

    # ------------------------------------------------------------------ ballots

    async def _text(self, request: GenerationRequest) -> str:
        return "".join([d.text async for d in self.stream(request)])

    async def ballot(self, ctx: NarrationContext, beat_text: str) -> BallotResult:
        """``ctx.n_choices`` grounded, distinct options after ``beat_text``.

        Raises ``EngineError`` only when every candidate request failed (the
        engine is down); unusable answers are replaced by fallbacks.
        """
        card = ctx.story
        spec = ctx.spec
        hero = spec.protagonist
        exclude = hero.short if hero else ""
        entities = card.scene_entities(beat_text, exclude=exclude)
        requests = [
            option_request(ctx, beat_text, entities, self._request_id(ctx, f"option{k}"), k)
            for k in range(CANDIDATES)
        ]
        answers = await asyncio.gather(*(self._text(r) for r in requests), return_exceptions=True)
        errors = [a for a in answers if isinstance(a, BaseException)]
        for a in errors:
            if isinstance(a, asyncio.CancelledError):
                raise a
        if len(errors) == len(answers):
            raise EngineError(f"every ballot request failed: {errors[0]}")
        known = self.embedder.known
        candidates = [
            clean_option(spec.subject, a, entities, known) if isinstance(a, str) else None
            for a in answers
        ]
        # Spare templates, so that recent winners are not needed to fill the ballot.
        fallbacks = fallback_options(card, ctx.n_choices, seed=ctx.beat, spare=2 * ctx.n_choices)
        options, used = await asyncio.to_thread(
            functools.partial(
                select,
                candidates,
                ctx.n_choices,
                self.embedder,
                fallbacks,
                avoid=card.events,
                entities=entities,
            )
        )
        if used:
            log.info("room %s beat %d: %d fallback option(s)", ctx.room, ctx.beat, used)
        return BallotResult(options, used, [c for c in candidates if c])

    async def choices(self, ctx: NarrationContext, beat_text: str) -> list[str]:
        """The ballot options after ``beat_text`` (``ballot`` without its details)."""
        return (await self.ballot(ctx, beat_text)).options

    # ------------------------------------------------------------------ cues

    async def cue(self, ctx: NarrationContext, beat_text: str, tone: str | None = None) -> SceneCue:
        """The scene cue of ``beat_text``: the engine's, validated, one retry, else the fallback."""
        cue = await self._validated(
            ctx,
            "cue",
            lambda rid: cue_request(ctx, beat_text, rid, tone),
            lambda text: parse_cue(text, ctx.story, tone),
            self.cue_errors,
        )
        return cue if cue is not None else fallback_cue(ctx.story, beat_text, tone)

    async def _validated(
        self,
        ctx: NarrationContext,
        what: str,
        make: Callable[[str], GenerationRequest],
        parse: Callable[[str], _T],
        errors: deque[str],
    ) -> _T | None:
        """The engine's answer to ``make(request_id)``, parsed, with one retry when
        ``parse`` refuses it (the reason goes to ``errors``); None when both were
        refused or the engine failed the request."""
        for attempt in range(2):
            request = make(self._request_id(ctx, f"{what}{attempt}"))
            try:
                return parse(await self._text(request))
            except ValueError as exc:
                errors.append(str(exc))
                log.info("room %s beat %d: %s rejected: %s", ctx.room, ctx.beat, what, exc)
            except EngineError as exc:
                log.info("room %s beat %d: %s request failed: %s", ctx.room, ctx.beat, what, exc)
                break
        return None

    # ------------------------------------------------------------------ story state

    async def state(self, ctx: NarrationContext, beat_text: str) -> StateUpdate | None:
        """The engine's story state after ``beat_text``, validated, one retry; None: keep the fold.

        ``ctx.story`` should already have the beat folded in (``StoryCard.update``).
        """
        return await self._validated(
            ctx,
            "state",
            lambda rid: state_request(ctx, beat_text, rid),
            lambda text: parse_state(text, ctx.story, beat_text),
            self.state_errors,
        )
