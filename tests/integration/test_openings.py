"""Best-of-n openings on a node: sampled at vote close, shown in the why record."""

from __future__ import annotations

import pytest

from fablecast.inference.backends.scripted import ScriptedEngine
from fablecast.inference.story.embed import LexicalEmbedder
from fablecast.protocol import messages as m
from fablecast.server.node import Node
from tests.integration.ws_harness import connect, make_config

pytestmark = pytest.mark.integration


async def test_a_beat_after_a_vote_records_its_scored_openings() -> None:
    engine = ScriptedEngine(tokens_per_s=400, first_token_s=0.01)
    node = Node(make_config(narration_tokens=60), engine=engine)
    await node.start()
    # The scripted engine keeps one opening; switch best-of-n on as a real engine would.
    node.narrator.openings = 3
    node.narrator.embedder = LexicalEmbedder()
    try:
        c = await connect(node)
        first = await c.until(lambda f: isinstance(f, m.Why) and f.beat == 1)
        assert isinstance(first, m.Why) and first.openings == [] and first.opening is None
        why = await c.until(lambda f: isinstance(f, m.Why) and f.beat == 2, timeout=20)
        assert isinstance(why, m.Why) and why.choice
        assert len(why.openings) == 3 and why.opening is not None
        best = max(o.score for o in why.openings)
        assert why.openings[why.opening].score == best
        end = next(f for f in c.seen if isinstance(f, m.BeatEnd) and f.beat == 2)
        assert isinstance(end, m.BeatEnd)
        # The chosen opening is what the beat says after the winning option.
        assert why.openings[why.opening].text.split(".")[0].strip(" ,") in end.text
        await c.ws.close()
    finally:
        await node.stop()
