"""``fablecast bench engine``: Fablecast's engine path against the bare engine, side by side.

The same prompts (one story per room, greedy decoding, so both paths
generate the same tokens) at the same concurrency (one request per room, all at
once) go through:

- **engine**: the bare engine. For vLLM that is ``AsyncLLM.generate`` alone,
  with the very prompt and sampling parameters the backend would send; for
  other kinds, the backend's ``generate``.
- **served**: Fablecast end to end: a ``server.node.Node`` with one room per
  request and one WebSocket client watching each room (``server/bench/served.py``):
  room core, runner, narrator, scheduler, hub, codec, socket, client decode.

Passes alternate (engine, served, engine, served, ...) after a warm-up, so the
drift of a shared machine falls on both sides. Reported: tokens/s over each
pass's wall time, TTFT (request start to first token) and ITL (gap between
tokens; a delta of k tokens counts k gaps of gap/k), p50 and p99 over all
passes, and ``overhead_ratio = served_tok_s / engine_tok_s`` (1.0: no cost).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from fablecast.inference.backends import create_engine
from fablecast.inference.engine import EngineClient
from fablecast.inference.prompts import NarrationContext, StorySpec, narration_request, story_spec
from fablecast.inference.types import GenerationDelta, GenerationRequest

_SETTINGS = (
    ("The Lantern Market", "A night market where every lantern holds a memory for sale."),
    ("Salt Caves", "Miners find a door in the salt that was not there yesterday."),
    ("Glass Orchard", "An orchard whose fruit shows the future, for a price."),
    ("The Drowned Library", "A librarian swims through a flooded archive to save one book."),
)


@dataclass(slots=True)
class PassStats:
    """Measurements of one or more passes of one path."""

    tokens: int = 0
    wall_s: float = 0.0
    ttft_s: list[float] = field(default_factory=list)
    itl_s: list[float] = field(default_factory=list)
    errors: int = 0
    first_error: str = ""

    def summary(self) -> dict[str, Any]:
        """Tokens/s and latency percentiles in ms."""
        return {
            "tokens": self.tokens,
            "wall_s": round(self.wall_s, 3),
            "tok_s": round(self.tokens / self.wall_s, 1) if self.wall_s else 0.0,
            "ttft_ms": _pcts(self.ttft_s),
            "itl_ms": _pcts(self.itl_s),
            "errors": self.errors,
            **({"first_error": self.first_error} if self.first_error else {}),
        }


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100) of ``values`` (0.0 when empty)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[k]


def _pcts(values_s: list[float]) -> dict[str, float]:
    return {
        "p50": round(percentile(values_s, 50) * 1000, 2),
        "p99": round(percentile(values_s, 99) * 1000, 2),
    }


def bench_specs(rooms: int) -> list[StorySpec]:
    """The story of each bench room (the room config's default style)."""
    from fablecast.server.config import RoomConfig

    style = RoomConfig(name="x").style
    return [
        story_spec(f"{t} {i}", p, style)
        for i, (t, p) in ((i, _SETTINGS[i % len(_SETTINGS)]) for i in range(rooms))
    ]


def bench_requests(rooms: int, max_tokens: int, tag: str) -> list[GenerationRequest]:
    """One opening-beat request per room, exactly as the node's rooms build it."""
    out = []
    for i, spec in enumerate(bench_specs(rooms)):
        ctx = NarrationContext(
            room=f"room{i}",
            beat=1,
            spec=spec,
            max_tokens=max_tokens,
        )
        # Greedy: both paths generate the same tokens (vLLM on CPU ignores request seeds).
        out.append(replace(narration_request(ctx, f"bench-{tag}-{i}"), temperature=0.0))
    return out


StreamFn = Callable[[GenerationRequest], AsyncIterator[GenerationDelta]]


async def _one(stream: StreamFn, request: GenerationRequest, stats: PassStats) -> None:
    loop = asyncio.get_running_loop()
    start = loop.time()
    prev: float | None = None
    try:
        async for delta in stream(request):
            now = loop.time()
            if delta.tokens <= 0:
                continue
            if prev is None:
                stats.ttft_s.append(now - start)
            else:
                gap = (now - prev) / delta.tokens
                stats.itl_s.extend([gap] * delta.tokens)
            prev = now
            stats.tokens += delta.tokens
    except Exception as exc:
        stats.errors += 1
        stats.first_error = stats.first_error or f"{type(exc).__name__}: {exc}"


async def run_pass(stream: StreamFn, requests: list[GenerationRequest], stats: PassStats) -> None:
    """All ``requests`` at once through ``stream``; adds to ``stats``."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    await asyncio.gather(*(_one(stream, r, stats) for r in requests))
    stats.wall_s += loop.time() - start


def bare_stream(engine: EngineClient) -> StreamFn:
    """The bare engine: ``AsyncLLM.generate`` for vLLM, else the backend itself."""
    llm = getattr(engine, "llm", None)
    if engine.name != "vllm" or llm is None:
        return engine.generate
    vllm_engine: Any = engine

    async def stream(request: GenerationRequest) -> AsyncIterator[GenerationDelta]:
        prompt = await vllm_engine._prompt(request)
        params = vllm_engine._sampling(request)
        async for out in llm.generate(prompt, params, request.request_id):
            c = out.outputs[0]
            yield GenerationDelta(c.text, len(c.token_ids), finished=out.finished)

    return stream


async def bench_engine(
    *,
    kind: str = "vllm",
    model: str | None = None,
    options: Mapping[str, Any] | None = None,
    rooms: int = 32,
    max_tokens: int = 128,
    passes: int = 2,
    engine: EngineClient | None = None,
) -> dict[str, Any]:
    """Run the benchmark and return its JSON-ready result."""
    opts = dict(options or {})
    if kind == "vllm":
        opts.setdefault("max_num_seqs", max(rooms, 1))
    own = engine is None
    eng = engine or create_engine(kind, model, opts)
    t0 = time.monotonic()
    await eng.start()
    start_s = time.monotonic() - t0
    try:
        from fablecast.bench.served import served_pass

        bare = bare_stream(eng)
        specs = bench_specs(rooms)
        # Warm-up: both paths at full concurrency (vLLM compiles per batch shape on first use).
        await run_pass(bare, bench_requests(rooms, 16, "warm"), PassStats())
        await served_pass(eng, specs, 16, PassStats())
        engine_stats, served_stats = PassStats(), PassStats()
        for p in range(passes):
            await run_pass(bare, bench_requests(rooms, max_tokens, f"e{p}"), engine_stats)
            await served_pass(eng, specs, max_tokens, served_stats)
    finally:
        if own:
            await eng.close()
    e, s = engine_stats.summary(), served_stats.summary()
    return {
        "bench": "engine",
        "engine": eng.name,
        "model": eng.model,
        "rooms": rooms,
        "max_tokens": max_tokens,
        "passes": passes,
        "engine_start_s": round(start_s, 1),
        "engine_tok_s": e["tok_s"],
        "served_tok_s": s["tok_s"],
        "overhead_ratio": round(s["tok_s"] / e["tok_s"], 3) if e["tok_s"] else None,
        "ttft_ms": {"engine": e["ttft_ms"], "served": s["ttft_ms"]},
        "itl_ms": {"engine": e["itl_ms"], "served": s["itl_ms"]},
        "engine_path": e,
        "served_path": s,
    }
