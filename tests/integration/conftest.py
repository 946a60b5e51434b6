"""A real Fablecast node on port 0 with the scripted engine."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from fablecast.inference.backends.scripted import ScriptedEngine
from fablecast.server.node import Node
from tests.integration.ws_harness import make_config


@pytest.fixture
async def node() -> AsyncIterator[Node]:
    n = Node(make_config(), engine=ScriptedEngine(tokens_per_s=200, first_token_s=0.01))
    await n.start()
    yield n
    await n.stop()
