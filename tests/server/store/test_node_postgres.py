"""A node on PostgreSQL: the clean-restart round trip of tests/integration/test_store.py."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from fablecast.protocol import messages as m
from fablecast.server.config import StoreConfig
from tests.integration.test_store import beat_ends, http, seqs, started
from tests.integration.ws_harness import connect, make_config

pytestmark = pytest.mark.integration


async def test_a_node_on_postgres_restores_and_resumes(pg_url: str, tmp_path: Path) -> None:
    from tests.server.store.conftest import fresh_pg

    config = make_config()
    config.store = StoreConfig(url=await fresh_pg(pg_url))
    node = await started(config)
    viewer = await connect(node)
    told = await beat_ends(viewer, 2)
    epoch = next(f for f in viewer.seen if isinstance(f, m.Welcome)).epoch
    last = seqs(viewer.seen)[-1]
    await viewer.ws.close()
    await node.stop()

    node = await started(config)
    try:
        again = await connect(node, hello=m.Hello(epoch=epoch, since=last))
        welcome = await again.recv()
        assert isinstance(welcome, m.Welcome) and welcome.recovered is True
        status, body = await asyncio.to_thread(http, node, "/api/rooms/demo/transcript?format=json")
        assert status == 200
        logged = {b["beat"]: b["text"] for b in json.loads(body)["beats"]}
        assert {b.beat: b.text for b in told}.items() <= logged.items()
    finally:
        await node.stop()
