"""The moderator dashboard in a real browser, acting on the audience page of the same room."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from fablecast.inference.backends.scripted import ScriptedEngine
from fablecast.server.config import Config, EngineConfig, RoomConfig, ServerConfig, StoreConfig
from tests.browser.conftest import NodeThread
from tests.integration.test_moderation import TextEngine
from tests.support import scaled

pytestmark = pytest.mark.browser

SECRET = "Zanzibarquux"
CLEAN = "The courier lifts the dark lantern and it hums a forgotten song. "


def _node(room: RoomConfig, engine: ScriptedEngine) -> NodeThread:
    config = Config(
        server=ServerConfig(port=0, tick_ms=20, uvloop=False),
        engine=EngineConfig(kind="scripted", stall_timeout_s=2.0),
        rooms=[room],
        store=StoreConfig(enabled=False),  # fresh rooms every run (no event log)
    )
    return NodeThread(config, engine, timeout=scaled(30))


def token(node: NodeThread, subject: str, role: str) -> str:
    """A signed token of the node's own key ring (server/auth.py)."""
    auth = node.node.admission.authenticator
    return node.soon(lambda: auth.issue(subject, role, "demo", 600, time.time()))  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def live_node() -> Iterator[NodeThread]:
    room = RoomConfig(name="demo", vote_s=30.0, reveal_s=0.2, narration_tokens=12)
    n = _node(room, ScriptedEngine(tokens_per_s=60, first_token_s=0.05))
    yield n
    n.stop()


@pytest.fixture
def held_node() -> Iterator[NodeThread]:
    room = RoomConfig(name="demo", vote_s=30.0, reveal_s=0.2, approval=True)
    engine = TextEngine([f"{SECRET} rises from the well and speaks. ", CLEAN], tokens_per_s=200)
    n = _node(room, engine)
    yield n
    n.stop()


def dashboard(new_page: Any, node: NodeThread) -> Any:
    page = new_page(f"{node.base}/dashboard?room=demo#token={token(node, 'mia', 'moderator')}")
    page.wait_for_function(
        "() => globalThis.fablecast?.mod?.state !== null && fablecast.mod.allowed"
    )
    return page


def test_pause_and_veto_from_the_dashboard_reach_the_audience(
    live_node: NodeThread, new_page: Any
) -> None:
    audience = new_page(f"{live_node.base}/watch/demo")
    mod = dashboard(new_page, live_node)
    audience.wait_for_selector("#options button.option:not([disabled])")

    mod.wait_for_selector("#ballot button[data-option='0']")
    mod.click("#ballot button[data-option='0']")
    audience.wait_for_selector("#options button.option.vetoed[data-index='0'][disabled]")
    assert audience.text_content("#options button[data-index='0'] .opt-count") == "vetoed"
    assert "vetoed" in (mod.text_content("#answer") or "")

    mod.click("#pause")
    audience.wait_for_function(
        "() => fablecast.state.phaseReason === 'moderator'"
        " && !document.querySelector('#notice').hidden"
    )
    assert "moderator paused" in (audience.text_content("#notice") or "")
    room = live_node.soon(lambda: live_node.node.rooms["demo"].room)
    assert live_node.soon(lambda: (room.phase.value, room.reason)) == ("paused", "moderator")

    mod.click("#resume")
    audience.wait_for_function("() => fablecast.state.phase === 'voting'")
    # The veto still stands after the resume.
    audience.wait_for_selector("#options button.option.vetoed[data-index='0']")
    audit = mod.text_content("#audit") or ""
    assert "veto: ok" in audit and "pause: ok" in audit and "resume: ok" in audit


def test_a_rejected_held_beat_never_appears_on_the_audience_page(
    held_node: NodeThread, new_page: Any
) -> None:
    audience = new_page(f"{held_node.base}/watch/demo")
    audience.evaluate(
        "() => { window.seen = []; fablecast.client.addEventListener('message', "
        "e => seen.push(JSON.stringify(e.detail))); }"
    )
    mod = dashboard(new_page, held_node)
    mod.wait_for_selector("#holds li textarea")
    assert SECRET in mod.eval_on_selector("#holds li textarea", "el => el.value")
    mod.click("#holds li button[data-action='reject']")
    # The retold beat is held too (approval mode): approve that one.
    mod.wait_for_function(
        "() => [...document.querySelectorAll('#holds li textarea')].some(t => "
        "t.value.includes('The courier lifts'))"
    )
    mod.click("#holds li button[data-action='approve']")
    audience.wait_for_function("() => fablecast.state.story.length >= 1")
    text = audience.text_content("#beats") or ""
    assert "The courier lifts the dark lantern" in text
    assert SECRET not in text
    assert not any(SECRET in frame for frame in audience.evaluate("() => seen"))
    assert "reject: ok" in (mod.text_content("#audit") or "")


def test_a_viewer_token_on_the_dashboard_is_refused(live_node: NodeThread, new_page: Any) -> None:
    page = new_page(
        f"{live_node.base}/dashboard?room=demo#token={token(live_node, 'vic', 'viewer')}"
    )
    page.wait_for_selector("#denied:not([hidden])")
    assert "may not moderate" in (page.text_content("#denied") or "")
    page.click("#pause")
    page.wait_for_selector("#answer.refused")
    assert "forbidden" in (page.text_content("#answer") or "")
    room = live_node.soon(lambda: live_node.node.rooms["demo"].room)
    assert live_node.soon(lambda: room.mod.paused) is None
