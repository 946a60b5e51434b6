"""The bench engine: the scripted engine, but each narration token is its yield time.

Latency of a token is measured from the engine yielding it to a client decoding
it (GUIDE section 5). Client and server run on the same machine, so one wall
clock (``time.time_ns``) serves both: every narration token this engine yields
is the word ``<time_ns> ``, taken right before the ``yield``. Coalescing joins
words, so a client splits a token frame's text and gets one sample per token.
Ballot requests (``kind=choices``) are answered exactly like the scripted
engine, so the server's rooms still run whole beats.

``tokens_per_s`` may be changed while streams run; the next token follows the
new pace (the benches step the rate up without reconnecting anyone).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from fablecast.inference.backends.scripted import ScriptedEngine
from fablecast.inference.types import EngineError, GenerationDelta, GenerationRequest


class StampEngine(ScriptedEngine):
    """``ScriptedEngine`` whose narration words carry their own yield timestamps."""

    def __init__(self, *, tokens_per_s: float = 20.0, first_token_s: float = 0.0, **kw: object):
        super().__init__(tokens_per_s=tokens_per_s, first_token_s=first_token_s, **kw)  # type: ignore[arg-type]
        #: Narration tokens yielded, and seconds spent narrating summed over streams
        #: (the benches zero both at the start of a measurement window).
        self.tokens_yielded = 0
        self.narrating_s = 0.0

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationDelta]:
        """Stream ``max_tokens`` stamped words at ``tokens_per_s`` (choices: as scripted)."""
        if request.kind == "choices":
            async for delta in super().generate(request):
                yield delta
            return
        if not self._ready:
            raise EngineError("bench engine not started")
        self.requests_started += 1
        loop = asyncio.get_running_loop()
        await asyncio.sleep(self.first_token_s)
        prev = loop.time()
        mark = prev
        n = request.max_tokens
        for i in range(n):
            if request.request_id in self._aborted:
                self._aborted.discard(request.request_id)
                yield GenerationDelta("", 0, finished=True, finish_reason="abort")
                return
            last = i == n - 1
            self.tokens_yielded += 1
            yield GenerationDelta(
                f"{time.time_ns()} ", 1, finished=last, finish_reason="length" if last else None
            )
            # Pace against an absolute schedule so the rate holds under load (no burst
            # to catch up more than a second), re-reading the rate at least every 50 ms
            # so a change (pause/unpause) applies at once.
            while True:
                due = prev + 1.0 / self.tokens_per_s
                now = loop.time()
                if due <= now:
                    break
                await asyncio.sleep(min(due - now, 0.05))
            prev = max(due, now - 1.0)
            await asyncio.sleep(0)
            now = loop.time()
            self.narrating_s += now - mark
            mark = now


def stamps_ns(text: str) -> list[int]:
    """The yield timestamps in a token frame's text (words that are not stamps are skipped)."""
    out: list[int] = []
    for word in text.split():
        if word.isdigit():
            out.append(int(word))
    return out
