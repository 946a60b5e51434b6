"""The served path of ``fablecast bench engine``: real rooms of a real node, one watcher each.

Each pass starts a ``server.node.Node`` on port 0 over the already started
engine, with one room per request and one WebSocket client per room. The
clients' ``hello`` (sent together) starts every room's first beat; the pass ends
when every client has decoded its room's ``beat_end``. Measured at the clients:
TTFT = hello sent -> first ``token`` frame decoded; ITL = gap between
consecutive ``token`` frames of a beat divided by the tokens behind the frame
(the node's tick is 5 ms here, well under the engine's inter-token time, so a
frame normally carries one engine delta). Tokens = what the rooms' runners
received from the engine (``fablecast_engine_tokens_total``).

So that both paths decode the same tokens, the node's engine is wrapped to
decode greedily, and the ballot request that follows each beat is held (it
would compete with the next pass); the prompts are the ones rooms send,
rebuilt identically by ``fablecast.bench.enginebench.bench_requests``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from typing import Any

import websockets

from fablecast.inference.engine import EngineClient
from fablecast.inference.prompts import StorySpec
from fablecast.inference.types import EngineHealth, GenerationDelta, GenerationRequest
from fablecast.protocol import messages as m
from fablecast.protocol.codec import JSON
from fablecast.server.config import Config, EngineConfig, RoomConfig, ServerConfig, StoreConfig
from fablecast.server.node import Node


class GreedyNarration:
    """An EngineClient over ``inner``: greedy narration, ballot requests held until closed."""

    def __init__(self, inner: EngineClient) -> None:
        self.inner = inner

    @property
    def name(self) -> str:
        """The inner engine's name."""
        return self.inner.name

    @property
    def model(self) -> str:
        """The inner engine's model."""
        return self.inner.model

    @property
    def max_concurrency(self) -> int:
        """The inner engine's concurrency."""
        return self.inner.max_concurrency

    async def start(self) -> None:
        """Start the inner engine (a no-op when it runs already)."""
        if not self.inner.health().ready:
            await self.inner.start()

    async def close(self) -> None:
        """Leave the inner engine running: the bench owns it."""

    def health(self) -> EngineHealth:
        """The inner engine's health."""
        return self.inner.health()

    async def abort(self, request_id: str) -> None:
        """Abort in the inner engine."""
        await self.inner.abort(request_id)

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationDelta]:
        """Greedy narration; a ballot request waits until cancelled."""
        if request.kind == "choices":
            await asyncio.Event().wait()
        async for delta in self.inner.generate(replace(request, temperature=0.0)):
            yield delta


def room_configs(specs: Sequence[StorySpec], max_tokens: int) -> list[RoomConfig]:
    """One room per story spec, narrating ``max_tokens`` per beat."""
    return [
        RoomConfig(
            name=f"room{i}",
            title=spec.title,
            premise=spec.premise,
            style=spec.style.tone,
            narration_tokens=max_tokens,
            # The pipe's own cost is measured token by token, as the bare path is:
            # the safety holdback has its own bench (``bench holdback``).
            filter=False,
        )
        for i, spec in enumerate(specs)
    ]


async def served_pass(
    engine: EngineClient, specs: Sequence[StorySpec], max_tokens: int, stats: Any
) -> None:
    """One pass: a node with a room per spec and a watching client per room."""
    loop = asyncio.get_running_loop()
    config = Config(
        server=ServerConfig(port=0, tick_ms=5),
        store=StoreConfig(enabled=False),
        engine=EngineConfig(
            kind="scripted",  # unused: the engine is passed in
            stall_timeout_s=120.0,
            # Token by token, not a sentence at a time (that latency is in
            # ``fablecast eval``'s first-sentence figures).
            sentence_guard=False,
            scheduler={"max_running": max(1, len(specs)), "max_tokens_cap": max_tokens},
        ),
        rooms=room_configs(specs, max_tokens),
    )
    node = Node(config, engine=GreedyNarration(engine))
    await node.start()
    try:
        clients = [
            await websockets.connect(
                f"ws://127.0.0.1:{node.port}/rooms/room{i}",
                subprotocols=[JSON.subprotocol],  # type: ignore[list-item]
                max_size=None,
            )
            for i in range(len(specs))
        ]
        tokens_before = node.metrics.engine_tokens._value.get()
        start = loop.time()

        async def watch(ws: Any) -> None:
            sent = loop.time()
            await ws.send(JSON.encode(m.Hello()).decode())
            prev: float | None = None
            while True:
                msg = JSON.decode_server(await ws.recv())
                now = loop.time()
                if isinstance(msg, m.Token):
                    if prev is None:
                        stats.ttft_s.append(now - sent)
                    else:
                        stats.itl_s.append(now - prev)
                    prev = now
                elif isinstance(msg, m.BeatEnd):
                    return
                elif isinstance(msg, m.BeatAbort):
                    stats.errors += 1
                    stats.first_error = stats.first_error or msg.reason

        await asyncio.gather(*(watch(ws) for ws in clients))
        stats.wall_s += loop.time() - start
        stats.tokens += int(node.metrics.engine_tokens._value.get() - tokens_before)
        for ws in clients:
            await ws.close()
    finally:
        await node.stop()
