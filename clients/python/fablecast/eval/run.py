"""The eval driver: presets as concurrent rooms on one engine, a scripted audience, scored beats.

Each preset is played as its own room (all at once, on one engine, as a node
would): narrate a beat with the tone of the scripted mood, update the story
card, ask for the ballot and the cue together, let the scripted audience vote
(the winner walks through every ballot position in turn, so the last, least
likely option wins as often as the first), and narrate the next beat from the
winner. Timing: vote close is when the next beat's request is built (the
configured reveal pause is not counted).
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from fablecast.eval.metrics import BeatRecord, score
from fablecast.inference.engine import EngineClient
from fablecast.inference.narrator import (
    OPENING_TOKENS,
    NarrationStats,
    Narrator,
    Openings,
    ToneBy,
)
from fablecast.inference.prompts import NarrationContext, narration_request
from fablecast.inference.story.embed import Embedder
from fablecast.inference.story.rerank import TONE_WEIGHT
from fablecast.inference.story.spec import StorySpec, load_spec
from fablecast.inference.story.state import StoryCard
from fablecast.inference.story.tone import TONES

#: The scripted mood swings: the tone asked for at beat k is MOOD_SWINGS[(k - 1) % 5].
MOOD_SWINGS = ("tense", "funny", "sad", "calm", "exciting")


@dataclass(slots=True)
class StoryRun:
    """One preset played through."""

    preset: str
    spec: StorySpec
    beats: list[BeatRecord] = field(default_factory=list)
    ballots: list[list[str]] = field(default_factory=list)
    winners: list[int] = field(default_factory=list)


def _context(
    preset: str,
    spec: StorySpec,
    card: StoryCard,
    *,
    beat: int,
    choice: str | None,
    losers: list[str],
    seed: int,
) -> NarrationContext:
    tone = TONES[MOOD_SWINGS[(beat - 1) % len(MOOD_SWINGS)]]
    return NarrationContext(
        room=preset,
        beat=beat,
        spec=spec,
        card=card,
        choice=choice,
        losers=tuple(losers),
        tone=tone,
        max_tokens=spec.beat.tokens,
        n_choices=spec.beat.options,
        seed=seed + beat,
        lore=card.lore(f"{card.last_beat} {choice or ''}"),
    )


async def play(
    preset: str,
    narrator: Narrator,
    beats: int,
    *,
    seed: int = 0,
    progress: bool = False,
    reveal_s: float = 0.0,
    room: str | None = None,
    samples: list[dict[str, Any]] | None = None,
) -> StoryRun:
    """Play ``beats`` beats of ``preset`` with the scripted audience.

    ``reveal_s`` > 0 models the node's reveal pause: the next beat's candidate
    openings start at vote close, its narration ``reveal_s`` later; latencies
    are measured from vote close minus ``reveal_s`` (at least 0). ``room``
    names the room (default: the preset). ``samples``, if given, gets one
    dict per beat: the narration prompt and what was told (``fablecast tune``).
    """
    spec = load_spec(preset)
    run = StoryRun(preset, spec)
    room = room or preset
    card = StoryCard(spec)
    choice: str | None = None
    losers: list[str] = []
    earlier: list[str] = []
    prepared: asyncio.Task[Openings | None] | None = None
    closed = time.monotonic()
    for beat in range(1, beats + 1):
        ctx = _context(room, spec, card, beat=beat, choice=choice, losers=losers, seed=seed)
        prompt = narration_request(ctx, "sample").messages if samples is not None else ()
        tone = ctx.tone
        assert tone is not None
        if reveal_s > 0 and beat > 1:
            if narrator.best_of(ctx):
                prepared = narrator.prepare(ctx, earlier)
            await asyncio.sleep(reveal_s)
        stats = NarrationStats()
        t0 = closed + (reveal_s if beat > 1 else 0.0)
        parts: list[str] = []
        first_text: float | None = None
        async for delta in narrator.narrate(ctx, earlier, stats, prepared):
            if delta.text and len(parts) == 1 and first_text is None:
                first_text = max(0.0, time.monotonic() - t0)
            if delta.text:
                parts.append(delta.text)
        prepared = None
        text = "".join(parts).strip()
        card.update(text, choice)
        earlier = [*earlier[-7:], text]
        ballot, cue, written = await asyncio.gather(
            narrator.ballot(ctx, text),
            narrator.cue(ctx, text, tone.name),
            narrator.state(ctx, text),
        )
        if written is not None:
            card.apply(written)
        entities = card.entities()
        rec = BeatRecord(
            beat=beat,
            text=text,
            generated=stats.generated.strip(),
            choice=choice,
            losers=losers,
            tone=tone.name,
            options=ballot.options,
            entities=entities,
            subject=spec.subject,
            ballot_fallback=ballot.fallback,
            cue={k: v for k, v in asdict(cue).items() if k != "source"},
            cue_source=cue.source,
            state=None if written is None else written.to_dict(),
            dropped=stats.dropped,
            tokens=stats.tokens,
            first_token_s=max(0.0, stats.first_token_at - t0) if stats.first_token_at else None,
            first_text_s=first_text,
            openings=[asdict(o) for o in stats.openings],
            opening=stats.opening,
            rests=list(stats.rests),
            rest=stats.rest,
        )
        run.beats.append(rec)
        if samples is not None:
            samples.append(
                {
                    "preset": preset,
                    "room": room,
                    "beat": beat,
                    "messages": [{"role": m.role, "content": m.content} for m in prompt],
                    "generated": stats.generated,
                    "text": text,
                    "choice": choice,
                    "losers": list(losers),
                    "tone": tone.name,
                    "dropped": stats.dropped,
                }
            )
        if progress:
            print(f"[eval] {room}: beat {beat}/{beats}", file=sys.stderr, flush=True)
        run.ballots.append(ballot.options)
        winner = beat % len(ballot.options)
        run.winners.append(winner)
        choice = ballot.options[winner]
        losers = [o for i, o in enumerate(ballot.options) if i != winner]
        closed = time.monotonic()  # vote close: the next beat's clock starts
    return run


async def evaluate(
    engine: EngineClient,
    presets: Sequence[str],
    beats: int,
    embedder: Embedder,
    *,
    progress: bool = False,
    openings: int = 1,
    opening_tokens: int = OPENING_TOKENS,
    tone_weight: float = TONE_WEIGHT,
    reveal_s: float = 0.0,
    rests: bool = True,
    tone_rounds: int = 1,
    tone_by: ToneBy = "sentence",
    rooms: int = 1,
    samples: list[dict[str, Any]] | None = None,
) -> tuple[list[StoryRun], dict[str, Any]]:
    """Play every preset concurrently on ``engine``; return the runs and the report.

    ``openings`` > 1: beats after a vote continue the best of that many
    candidate openings (``Narrator``), ``rests``: with the tone pass, by
    ``tone_by`` (``"sentence"`` or ``"rest"``);
    ``reveal_s``, ``samples``: see ``play``; ``rooms``: rooms per preset
    (``preset-2``, ... after the first).
    """
    narrator = Narrator(
        engine,
        stall_timeout_s=120.0,
        embedder=embedder,
        openings=openings,
        opening_tokens=opening_tokens,
        tone_weight=tone_weight,
        rests=rests,
        tone_rounds=tone_rounds,
        tone_by=tone_by,
    )
    t0 = time.monotonic()
    runs = await asyncio.gather(
        *(
            play(
                p,
                narrator,
                beats,
                progress=progress,
                reveal_s=reveal_s,
                room=p if k == 0 else f"{p}-{k + 1}",
                samples=samples,
                seed=1000 * k,
            )
            for p in presets
            for k in range(rooms)
        )
    )
    wall = time.monotonic() - t0
    report: dict[str, Any] = {
        "engine": engine.name,
        "model": engine.model,
        "embedder": embedder.name,
        "adapter": getattr(engine, "narration_adapter", None),
        "openings": openings,
        "tone_pass": rests and openings > 1,
        "tone_rounds": tone_rounds,
        "tone_by": tone_by,
        "reveal_s": reveal_s,
    }
    per: dict[str, Any] = {}
    for preset in dict.fromkeys(presets):
        per[preset] = score([r.beats for r in runs if r.preset == preset], embedder)
    overall = score([r.beats for r in runs], embedder)
    narration_tokens = sum(b.tokens for r in runs for b in r.beats)
    overall["narration_tokens"] = narration_tokens
    overall["wall_s"] = round(wall, 1)
    overall["narration_tokens_per_s"] = round(narration_tokens / wall, 1) if wall else None
    report["presets"] = per
    overall["cue_errors"] = list(narrator.cue_errors)[:10]
    overall["state_errors"] = list(narrator.state_errors)[:10]
    report["overall"] = overall
    return list(runs), report


async def evaluate_on(
    kind: str,
    model: str | None,
    options: Mapping[str, Any],
    presets: Sequence[str],
    beats: int,
    **kw: Any,
) -> tuple[list[StoryRun], dict[str, Any], Embedder]:
    """``evaluate`` on a fresh engine of ``kind`` (started, played, closed).

    Returns the runs, the report and the embedder it scored with (MiniLM on
    real engines), so callers can score more without loading it again.
    """
    from fablecast.inference.backends import create_engine
    from fablecast.inference.story.embed import default_embedder

    engine = create_engine(kind, model, options)
    embedder = await asyncio.to_thread(default_embedder)
    await engine.start()
    try:
        runs, report = await evaluate(engine, presets, beats, embedder, **kw)
    finally:
        await engine.close()
    return runs, report, embedder


def transcript(run: StoryRun) -> str:
    """A run as Markdown: every beat, its tone, ballot, winner and cue."""
    lines = [f"### {run.spec.title} (`{run.preset}`)", ""]
    for rec, options, winner in zip(run.beats, run.ballots, run.winners, strict=True):
        head = f"**Beat {rec.beat}**"
        if rec.choice:
            head += f" — acts out: *{rec.choice}*"
        lines += [f"{head} — tone: {rec.tone}", "", f"> {rec.text}", ""]
        if rec.opening is not None and rec.openings:
            scores = ", ".join(
                f"{'**' if i == rec.opening else ''}{o['score']:+.2f}"
                f"{'**' if i == rec.opening else ''} ({o['choice']:+.2f}/{o['tone']:+.2f})"
                for i, o in enumerate(rec.openings)
            )
            lines += [
                f"Openings (score (choice/tone margin) per candidate, chosen in bold): {scores}",
                "",
            ]
        if rec.rest is not None and rec.rests:
            rests = ", ".join(
                f"{'**' if i == rec.rest else ''}{t:+.2f}{'**' if i == rec.rest else ''}"
                for i, t in enumerate(rec.rests)
            )
            lines += [f"Rests (tone margin of each candidate, told in bold): {rests}", ""]
        elif rec.rests:
            steps = ", ".join(f"{t:+.2f}" for t in rec.rests)
            lines += [f"Tone steps (the beat's tone margin after each sentence told): {steps}", ""]
        opts = " | ".join(
            f"{'**' if i == winner else ''}{o}{'**' if i == winner else ''}"
            for i, o in enumerate(options)
        )
        lines += [
            f"Ballot: {opts}"
            + (f" ({rec.ballot_fallback} fallback)" if rec.ballot_fallback else "")
        ]
        if rec.cue:
            c = rec.cue
            lines += [
                f"Cue ({rec.cue_source}): {c['location']}, {c['time_of_day']}, {c['weather']}, "
                f"{c['lighting']} light, {c['music']} music, {', '.join(c['characters'])}",
                "",
            ]
        if rec.state:
            st = rec.state
            threads = "; ".join(st.get("threads") or ()) or "none"
            lines += [
                f"State (engine): {st.get('summary') or '-'} | at {st['location']} | "
                f"goal: {st.get('goal') or '-'} | open: {threads}",
                "",
            ]
    return "\n".join(lines)
