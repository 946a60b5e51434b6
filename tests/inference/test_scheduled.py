"""ScheduledEngine: the scheduler's policy applied to a real async engine stream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from fablecast.inference.backends.scripted import ScriptedEngine
from fablecast.inference.engine import EngineClient
from fablecast.inference.narrator import Narrator
from fablecast.inference.prompts import NarrationContext, story_spec
from fablecast.inference.scheduled import ScheduledEngine
from fablecast.inference.scheduler import SchedulerConfig
from fablecast.inference.types import (
    EngineBusy,
    EngineError,
    EngineHealth,
    GenerationDelta,
    GenerationRequest,
)

# -- the async wrapper ---------------------------------------------------------------------


def _req(rid: str, room: str, n: int = 5, beat: int = 0) -> GenerationRequest:
    return GenerationRequest(rid, (), max_tokens=n, room=room, beat=beat)


async def _collect(engine: EngineClient, req: GenerationRequest) -> list[GenerationDelta]:
    return [d async for d in engine.generate(req)]


async def test_wrapper_is_transparent() -> None:
    inner = ScriptedEngine(tokens_per_s=500, first_token_s=0)
    eng = ScheduledEngine(inner)
    await eng.start()
    assert isinstance(eng, EngineClient)
    deltas = await _collect(eng, _req("a", "r1"))
    assert deltas[-1].finished and sum(d.tokens for d in deltas) <= 5
    assert eng.health().ready and "running 0/" in eng.health().detail
    await eng.close()


async def test_wrapper_queues_and_reports_status() -> None:
    inner = ScriptedEngine(tokens_per_s=200, first_token_s=0, max_concurrency=1)
    seen: list[tuple[str, str]] = []
    eng = ScheduledEngine(
        inner,
        SchedulerConfig(max_running_per_room=1, busy_after_s=0),
        on_status=lambda r, s, m: seen.append((r, s)),
    )
    await eng.start()
    results = await asyncio.gather(*(_collect(eng, _req(f"q{i}", f"r{i}", 4)) for i in range(3)))
    assert all(r[-1].finished for r in results)
    assert ("r1", "busy") in seen and ("r1", "ok") in seen
    await eng.close()


async def test_a_short_wait_is_not_shown_busy() -> None:
    # A request admitted within busy_after_s (e.g. behind its own room's candidate
    # openings) does not flash "busy" at the audience; a longer wait does.
    inner = ScriptedEngine(tokens_per_s=200, first_token_s=0, max_concurrency=1)
    seen: list[tuple[str, str]] = []
    eng = ScheduledEngine(
        inner,
        SchedulerConfig(busy_after_s=0.5),
        on_status=lambda r, s, m: seen.append((r, s)),
    )
    await eng.start()
    await asyncio.gather(_collect(eng, _req("a", "r1", 4)), _collect(eng, _req("b", "r2", 4)))
    assert not any(s == "busy" for _r, s in seen)
    slow = ScriptedEngine(tokens_per_s=10, first_token_s=0, max_concurrency=1)
    seen.clear()
    eng2 = ScheduledEngine(
        slow, SchedulerConfig(busy_after_s=0.05), on_status=lambda r, s, m: seen.append((r, s))
    )
    await eng2.start()
    await asyncio.gather(_collect(eng2, _req("a", "r1", 4)), _collect(eng2, _req("b", "r2", 4)))
    assert ("r2", "busy") in seen
    await eng.close()
    await eng2.close()


async def test_wrapper_queue_full_raises_busy() -> None:
    inner = ScriptedEngine(tokens_per_s=50, first_token_s=0, max_concurrency=1)
    seen: list[tuple[str, str, str]] = []
    eng = ScheduledEngine(
        inner, SchedulerConfig(max_queue=1), on_status=lambda r, s, m: seen.append((r, s, m))
    )
    await eng.start()
    t1 = asyncio.create_task(_collect(eng, _req("a", "r1", 10)))
    t2 = asyncio.create_task(_collect(eng, _req("b", "r2", 10)))
    await asyncio.sleep(0.01)
    with pytest.raises(EngineBusy):
        await _collect(eng, _req("c", "r3"))
    assert any(r == "r3" and s == "busy" and "full" in m for r, s, m in seen)
    await asyncio.gather(t1, t2)
    await eng.close()


async def test_wrapper_cancel_room_aborts_running_and_queued() -> None:
    inner = ScriptedEngine(tokens_per_s=20, first_token_s=0, max_concurrency=1)
    eng = ScheduledEngine(inner, SchedulerConfig(max_running_per_room=1))
    await eng.start()
    t1 = asyncio.create_task(_collect(eng, _req("a", "room", 50)))
    t2 = asyncio.create_task(_collect(eng, _req("b", "room", 50)))
    await asyncio.sleep(0.1)
    await eng.cancel_room("room")
    r1, r2 = await asyncio.wait_for(asyncio.gather(t1, t2), 5)
    assert r1[-1].finish_reason == "abort"
    assert r2 == [GenerationDelta("", 0, finished=True, finish_reason="abort")]
    assert eng.scheduler.running == 0 and eng.scheduler.queued == 0
    await eng.close()


async def test_wrapper_stalled_status_while_queued() -> None:
    inner = ScriptedEngine(tokens_per_s=20, first_token_s=0, max_concurrency=1)
    seen: list[tuple[str, str]] = []
    eng = ScheduledEngine(
        inner,
        SchedulerConfig(stalled_after_s=0.05),
        on_status=lambda r, s, m: seen.append((r, s)),
    )
    await eng.start()
    t1 = asyncio.create_task(_collect(eng, _req("a", "r1", 6)))
    await asyncio.sleep(0.01)
    await _collect(eng, _req("b", "r2", 2))
    await t1
    assert ("r2", "stalled") in seen and seen[-1] == ("r2", "ok")
    await eng.close()


async def test_wrapper_engine_error_is_raised_not_reported() -> None:
    inner = ScriptedEngine(tokens_per_s=500, first_token_s=0)
    inner.fail_next = 1
    seen: list[tuple[str, str]] = []
    eng = ScheduledEngine(inner, on_status=lambda r, s, m: seen.append((r, s)))
    await eng.start()
    with pytest.raises(EngineError):
        await _collect(eng, _req("a", "r1"))
    # The room, the one owner of the narrator's state, learns it from the raise.
    assert ("r1", "down") not in seen
    assert eng.scheduler.running == 0
    await _collect(eng, _req("b", "r1"))
    assert seen[-1] == ("r1", "ok")
    await eng.close()


class _DownEngine(ScriptedEngine):
    def health(self) -> EngineHealth:
        return EngineHealth(False, self.name, self.model, "dead")


async def test_wrapper_refuses_when_engine_unhealthy() -> None:
    eng = ScheduledEngine(_DownEngine())
    await eng.start()
    with pytest.raises(EngineError, match="not ready"):
        await _collect(eng, _req("a", "r1"))
    assert eng.scheduler.running == 0


async def test_wrapper_abort_queued_request() -> None:
    inner = ScriptedEngine(tokens_per_s=20, first_token_s=0, max_concurrency=1)
    eng = ScheduledEngine(inner)
    await eng.start()
    t1 = asyncio.create_task(_collect(eng, _req("a", "r1", 20)))
    t2 = asyncio.create_task(_collect(eng, _req("b", "r2", 20)))
    await asyncio.sleep(0.05)
    await eng.abort("b")
    assert (await t2)[-1].finish_reason == "abort"
    await eng.abort("a")
    assert (await t1)[-1].finish_reason == "abort"
    await eng.close()


async def test_closing_stream_releases_slot() -> None:
    inner = ScriptedEngine(tokens_per_s=100, first_token_s=0, max_concurrency=1)
    eng = ScheduledEngine(inner)
    await eng.start()
    agen = eng.generate(_req("a", "r1", 50))
    assert isinstance(agen, AsyncIterator)
    await anext(agen)
    assert eng.scheduler.running == 1
    await agen.aclose()  # type: ignore[attr-defined]
    assert eng.scheduler.running == 0
    await eng.close()


async def test_narrator_over_scheduler() -> None:
    inner = ScriptedEngine(tokens_per_s=1000, first_token_s=0)
    eng = ScheduledEngine(inner)
    await eng.start()
    narrator = Narrator(eng, stall_timeout_s=2)
    ctx = NarrationContext(room="r", beat=1, spec=story_spec("T", "P"), max_tokens=30)
    text = "".join([d.text async for d in narrator.narrate(ctx)])
    assert text
    choices = await narrator.choices(ctx, text)
    assert 2 <= len(choices) <= 3
    await eng.close()
