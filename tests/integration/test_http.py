"""HTTP on the WebSocket port: health, readiness, metrics."""

from __future__ import annotations

import asyncio
import json
import urllib.request

import pytest

from fablecast.inference.backends.scripted import ScriptedEngine
from fablecast.protocol import messages as m
from fablecast.server.node import Node
from tests.integration.ws_harness import connect, make_config
from tests.support import wait_for

pytestmark = pytest.mark.integration


async def get(port: int, path: str) -> tuple[int, str, str]:
    def fetch() -> tuple[int, str, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
                return r.status, r.headers.get("Content-Type", ""), r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.headers.get("Content-Type", ""), e.read().decode()

    return await asyncio.to_thread(fetch)


async def test_healthz_readyz_metrics(node: Node) -> None:
    status, _, body = await get(node.port, "/healthz")
    assert status == 200 and body.strip() == "ok"
    assert await wait_for(lambda: node.ready, timeout=5)
    status, kind, body = await get(node.port, "/readyz")
    assert status == 200 and kind == "application/json"
    assert json.loads(body) == {"ready": True, "engine": "scripted", "model": "scripted-v1"}

    c = await connect(node)
    await c.until(lambda f: isinstance(f, m.Token))
    status, kind, body = await get(node.port, "/metrics")
    assert status == 200 and kind.startswith("text/plain")
    for name in (
        "fablecast_connections 1.0",
        "fablecast_rooms 1.0",
        "fablecast_frames_sent_total",
        "fablecast_slow_clients_dropped_total 0.0",
        "fablecast_token_latency_seconds_bucket",
        "fablecast_event_loop_lag_seconds_bucket",
    ):
        assert name in body
    await c.ws.close()
    status, _, _ = await get(node.port, "/nope")
    assert status == 404
    status, _, body = await get(node.port, "/")
    assert status == 200 and "/rooms/demo" in body


class SlowStart(ScriptedEngine):
    """An engine that takes a while to warm up."""

    def __init__(self) -> None:
        super().__init__()
        self.go = asyncio.Event()

    async def start(self) -> None:
        await self.go.wait()
        await super().start()


async def test_readyz_is_503_until_the_engine_is_warm() -> None:
    engine = SlowStart()
    node = Node(make_config(), engine=engine)
    await node.start()
    try:
        status, _, body = await get(node.port, "/readyz")
        assert status == 503 and json.loads(body)["ready"] is False
        assert (await get(node.port, "/healthz"))[0] == 200
        engine.go.set()
        assert await wait_for(lambda: node.ready, timeout=5)
        status, _, body = await get(node.port, "/readyz")
        assert status == 200 and json.loads(body)["engine"] == "scripted"
    finally:
        await node.stop()
