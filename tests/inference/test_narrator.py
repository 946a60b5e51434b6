"""The Narrator over the scripted engine: streaming, stall timeout, ballots."""

from __future__ import annotations

import pytest

from fablecast.inference.backends.scripted import ScriptedEngine
from fablecast.inference.narrator import Narrator
from fablecast.inference.prompts import NarrationContext, StorySpec
from fablecast.inference.types import EngineError, EngineStalled

CTX = NarrationContext("r", 1, StorySpec("T", "P"), (), max_tokens=12, seed=1)


async def engine() -> ScriptedEngine:
    e = ScriptedEngine(tokens_per_s=1000, first_token_s=0)
    await e.start()
    return e


async def test_narrate_streams_to_finish() -> None:
    n = Narrator(await engine(), stall_timeout_s=1)
    deltas = [d async for d in n.narrate(CTX)]
    assert deltas[-1].finished and "".join(d.text for d in deltas).strip()


async def test_stall_raises_and_aborts() -> None:
    e = await engine()
    e.stall_next = 1
    n = Narrator(e, stall_timeout_s=0.05)
    with pytest.raises(EngineStalled):
        async for _d in n.narrate(CTX):
            pass


async def test_engine_failure_propagates() -> None:
    e = await engine()
    e.fail_next = 1
    with pytest.raises(EngineError):
        async for _d in Narrator(e).narrate(CTX):
            pass


async def test_choices_parsed() -> None:
    n = Narrator(await engine())
    choices = await n.choices(CTX, "A door opened.")
    assert len(choices) == 3


async def test_request_ids_unique() -> None:
    n = Narrator(await engine())
    assert n._request_id(CTX, "narrate") != n._request_id(CTX, "narrate")
