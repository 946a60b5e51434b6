"""``fablecast bench holdback``: the latency the safety filter's holdback adds, end to end.

Two sides in one run, same engine pace, same viewers, same node config except
the filter: ``off`` (``filter = false``) and ``on`` (the default family list and
holdback). Latency of a token = engine yield -> viewer decode (the bench engine
stamps each word with its yield time, ``bench/engine.py``). The holdback keeps
the last ``hold_chars`` characters of a beat unreleased and releases at word
ends, so a word waits until about ``hold_chars`` more characters were yielded:
at ``tokens_per_s`` words of ``w`` characters that is roughly
``hold_chars / w`` token intervals, plus up to one tick.

Also measured: the filter's CPU cost per delta in the room core (the pure
``Holdback.feed`` on the same words), in microseconds.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import websockets

from fablecast.bench.engine import StampEngine, stamps_ns
from fablecast.bench.nodeconfig import bench_config
from fablecast.bench.stats import Histogram
from fablecast.protocol import messages as m
from fablecast.protocol.codec import JSON
from fablecast.server.moderation.filter import SafetyFilter
from fablecast.server.moderation.holdback import Holdback
from fablecast.server.node import Node


async def _side(
    *,
    filter_on: bool,
    tokens_per_s: float,
    viewers: int,
    warm_s: float,
    measure_s: float,
    tick_ms: int,
) -> dict[str, Any]:
    engine = StampEngine(tokens_per_s=tokens_per_s)
    opts = {
        "rooms": 1,
        "tick_ms": tick_ms,
        "beat_tokens": 100_000,
        "room": {"filter": filter_on},
    }
    node = Node(bench_config(opts), engine=engine)
    await node.start()
    hist = Histogram()
    measuring = False

    async def viewer(i: int) -> None:
        async with websockets.connect(
            f"ws://127.0.0.1:{node.port}/rooms/bench0",
            subprotocols=[JSON.subprotocol],  # type: ignore[list-item]
        ) as ws:
            await ws.send(JSON.encode(m.Hello(participant=f"v{i}")).decode())
            async for data in ws:
                now = time.time_ns()
                msg = JSON.decode_server(data)
                if measuring and isinstance(msg, m.Token):
                    for stamp in stamps_ns(msg.text):
                        hist.add_ns(now - stamp)

    tasks = [asyncio.create_task(viewer(i)) for i in range(viewers)]
    try:
        await asyncio.sleep(warm_s)
        measuring = True
        await asyncio.sleep(measure_s)
        measuring = False
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await node.stop()
    hold = node.rooms["bench0"].room.mod.hold_chars if filter_on else 0
    return {
        "filter": filter_on,
        "hold_chars": hold,
        "samples": hist.total,
        "latency_ms": hist.summary(0.5, 0.99),
    }


def _feed_cost_us(n: int = 20_000) -> float:
    words = [f"{time.time_ns()} " for _ in range(64)]
    hb = Holdback(SafetyFilter.for_room("family"))
    t0 = time.perf_counter()
    for i in range(n):
        hb.feed(words[i % 64])
    return (time.perf_counter() - t0) / n * 1e6


def run_holdback(
    *,
    rates: tuple[float, ...] = (20.0, 50.0),
    viewers: int = 4,
    warm_s: float = 1.0,
    measure_s: float = 5.0,
    tick_ms: int = 50,
) -> dict[str, Any]:
    """Both sides at each engine pace; the added p50/p99 is ``on`` minus ``off``."""
    steps = []
    for rate in rates:
        sides = {}
        for filter_on in (False, True):
            sides["on" if filter_on else "off"] = asyncio.run(
                _side(
                    filter_on=filter_on,
                    tokens_per_s=rate,
                    viewers=viewers,
                    warm_s=warm_s,
                    measure_s=measure_s,
                    tick_ms=tick_ms,
                )
            )
        added = {
            q: round(sides["on"]["latency_ms"][q] - sides["off"]["latency_ms"][q], 2)
            if sides["on"]["latency_ms"][q] is not None
            and sides["off"]["latency_ms"][q] is not None
            else None
            for q in ("p50", "p99")
        }
        steps.append({"tokens_per_s": rate, "added_ms": added, **sides})
    return {
        "bench": "holdback",
        "word_chars": len(f"{time.time_ns()} "),
        "tick_ms": tick_ms,
        "viewers": viewers,
        "feed_cost_us": round(_feed_cost_us(), 2),
        "steps": steps,
    }
