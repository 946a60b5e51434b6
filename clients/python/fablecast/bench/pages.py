"""``fablecast bench pages``: token latency from engine yield to the audience page's DOM.

A node runs in-process (``NodeThread``) with the scripted engine, wrapped so
that every narration delta it yields is recorded as ``(beat, end offset in the
beat's text, wall time)``. N browser contexts of Debian's Chromium open
``/watch/<room>``; in each, a listener on the SDK's ``token`` event (which
fires after the page's own handler has appended the text to the DOM) records
``(beat, length of the beat's DOM text, wall time)``. A token's latency is the
time from its yield to the first DOM update whose text covers its end offset;
the first update of a beat in a page is skipped (it may hold text from the
join snapshot). Engine and pages share the machine's wall clock.

The figure includes the node's coalescing tick (``tick_ms``: text waits up to
one tick), the WebSocket write, the browser's decode and the DOM append; it
is measured with every context in one Chromium on this machine, so the
browser's own CPU use is part of it.
"""

from __future__ import annotations

import bisect
import statistics
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from fablecast.inference.backends.scripted import ScriptedEngine
from fablecast.inference.types import GenerationDelta, GenerationRequest

#: Page-side recorder, run in each page after it loaded (no inline script: CSP).
_RECORD = """() => {
  window.__lat = [];
  fablecast.client.addEventListener("token", (e) => {
    const el = document.querySelector(`article[data-beat="${e.detail.beat}"] .text`);
    const now = performance.timeOrigin + performance.now();
    __lat.push([e.detail.beat, el ? el.textContent.length : -1, now]);
  });
}"""


class TimedEngine(ScriptedEngine):
    """The scripted engine, recording when each narration delta is yielded."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        #: beat -> [(end offset, wall time ms)], of the latest request for that beat.
        self.yields: dict[int, list[tuple[int, float]]] = {}

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationDelta]:
        record = request.kind == "narration"
        offsets: list[tuple[int, float]] = []
        if record:
            self.yields[request.beat] = offsets
        end = 0
        async for delta in super().generate(request):
            if record and delta.text:
                end += len(delta.text)
                offsets.append((end, time.time() * 1000))
            yield delta


def latencies(
    yields: dict[int, list[tuple[int, float]]],
    page: list[tuple[int, int, float]],
    since_ms: float = 0.0,
) -> tuple[list[float], int]:
    """Per-token latencies (ms) of one page's DOM updates from ``since_ms`` (wall clock).

    Also returns how many updates that added text matched no yielded token.
    """
    out: list[float] = []
    unmatched = 0
    last: dict[int, int] = {}
    for beat, length, t in page:
        prev = last.get(beat)
        last[beat] = length
        if prev is None or length < 0 or t < since_ms:
            continue  # the beat's first update in this page may include snapshot text
        ys = yields.get(beat, [])
        ends = [e for e, _ in ys]
        lo = bisect.bisect_right(ends, prev)
        hi = bisect.bisect_right(ends, length)
        if hi == lo and length > prev:
            unmatched += 1
        out.extend(t - ys[i][1] for i in range(lo, hi))
    return out, unmatched


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return round(s[min(len(s) - 1, int(q / 100 * len(s)))], 1)


def run_pages(
    pages: int = 50,
    duration_s: float = 20.0,
    tick_ms: int = 50,
    tokens_per_s: float = 30.0,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Open ``pages`` audience pages for ``duration_s``; token latency to their DOM."""
    from playwright.sync_api import sync_playwright

    from fablecast.browser import CHROMIUM_ARGS, NodeThread, ensure_chromium
    from fablecast.server.config import (
        Config,
        EngineConfig,
        RoomConfig,
        ServerConfig,
        StoreConfig,
    )

    say = log or (lambda _line: None)
    engine = TimedEngine(tokens_per_s=tokens_per_s, first_token_s=0.05)
    config = Config(
        server=ServerConfig(port=0, tick_ms=tick_ms, uvloop=False),
        engine=EngineConfig(kind="scripted"),
        rooms=[RoomConfig(name="bench", vote_s=3.0, reveal_s=0.5, narration_tokens=120)],
        store=StoreConfig(enabled=False),  # a fresh room every run (no event log)
    )
    node = NodeThread(config, engine)
    samples: list[float] = []
    unmatched = 0
    opened = 0
    since_ms = 0.0
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=ensure_chromium(), args=CHROMIUM_ARGS)
            tabs = []
            for i in range(pages):
                ctx = browser.new_context(viewport={"width": 800, "height": 600})
                page = ctx.new_page()
                page.goto(f"{node.base}/watch/bench")
                page.wait_for_function("() => globalThis.fablecast?.client.state === 'open'")
                page.evaluate(_RECORD)
                tabs.append(page)
                opened = i + 1
                say(f"{opened} pages open")
            say(f"measuring {duration_s} s")
            since_ms = time.time() * 1000
            time.sleep(duration_s)
            per_page = [p.evaluate("() => __lat") for p in tabs]
            browser.close()
        for records in per_page:
            got, missed = latencies(engine.yields, [(b, n, t) for b, n, t in records], since_ms)
            samples.extend(got)
            unmatched += missed
    finally:
        node.stop()
    return {
        "pages": opened,
        "duration_s": duration_s,
        "tick_ms": tick_ms,
        "tokens_per_s": tokens_per_s,
        "tokens_measured": len(samples),
        "unmatched_updates": unmatched,
        "latency_ms": {
            "p50": _pct(samples, 50),
            "p90": _pct(samples, 90),
            "p99": _pct(samples, 99),
            "max": round(max(samples), 1) if samples else None,
            "mean": round(statistics.fmean(samples), 1) if samples else None,
        },
    }
