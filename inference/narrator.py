"""The narrator service: story contexts in, streamed narration and parsed ballots out.

It is the one place that talks to an ``EngineClient`` on behalf of rooms: it
builds requests (``prompts``), enforces the stall timeout (no delta within
``stall_timeout_s`` -> ``EngineStalled`` and the request is aborted), and turns
a choices answer into a validated list of options.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator

from fablecast.inference.engine import EngineClient, close_stream
from fablecast.inference.prompts import (
    NarrationContext,
    choices_request,
    narration_request,
    parse_choices,
)
from fablecast.inference.types import EngineError, EngineStalled, GenerationDelta, GenerationRequest


class Narrator:
    """Runs narration and ballot requests for rooms on one engine (or scheduler)."""

    def __init__(self, engine: EngineClient, *, stall_timeout_s: float = 10.0) -> None:
        self.engine = engine
        self.stall_timeout_s = stall_timeout_s
        self._ids = itertools.count(1)

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

    def narrate(self, ctx: NarrationContext) -> AsyncIterator[GenerationDelta]:
        """Stream the narration of ``ctx.beat``."""
        return self.stream(narration_request(ctx, self._request_id(ctx, "narrate")))

    async def choices(self, ctx: NarrationContext, beat_text: str) -> list[str]:
        """The ballot options after ``beat_text``; one retry on an unreadable answer."""
        last: ValueError | None = None
        for _attempt in range(2):
            request = choices_request(ctx, beat_text, self._request_id(ctx, "choices"))
            parts = [delta.text async for delta in self.stream(request)]
            try:
                return parse_choices("".join(parts), ctx.n_choices)
            except ValueError as exc:
                last = exc
        raise EngineError(f"unreadable choices: {last}")
