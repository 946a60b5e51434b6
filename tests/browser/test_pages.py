"""The pages in a real browser: watch, overlay, VR and home, against a real node."""

from __future__ import annotations

import asyncio
import io
import re
import threading
from typing import Any

import pytest

from fablecast.inference.backends.scripted import ScriptedEngine
from fablecast.protocol import messages as m
from tests.browser.conftest import AXE, NodeThread, browser_config
from tests.support import scaled

pytestmark = pytest.mark.browser


def beat_texts(page: Any) -> dict[int, str]:
    """The page's text of every beat, by beat number."""
    items = page.eval_on_selector_all(
        "#beats article",
        "els => els.map(e => [Number(e.dataset.beat), e.querySelector('.text').textContent])",
    )
    return {int(b): t for b, t in items}


def count_is(option: int, text: str) -> str:
    """A JS expression: option ``option``'s tally reads ``text``."""
    sel = f"#options button[data-index='{option}'] .opt-count"
    return f'document.querySelector("{sel}")?.textContent === "{text}"'


def luminance(color: str) -> float:
    """Relative brightness of ``#rrggbb`` (0..255)."""
    r, g, b = (int(color[i : i + 2], 16) for i in (1, 3, 5))
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def client_state(page: Any, expr: str) -> Any:
    return page.evaluate(f"() => globalThis.fablecast && {expr}")


def test_text_grows_and_a_vote_reaches_another_viewer(web_node: NodeThread, new_page: Any) -> None:
    alice = new_page(f"{web_node.base}/watch/demo")
    bob = new_page(f"{web_node.base}/watch/demo?codec=msgpack")  # the other codec
    alice.wait_for_function("() => document.querySelector('#beats').textContent.length > 0")
    first = len(alice.text_content("#beats") or "")
    alice.wait_for_function(f"() => document.querySelector('#beats').textContent.length > {first}")

    # A click in one context changes the tally another context sees.
    alice.wait_for_selector("#options button.option:not([disabled])")
    window = client_state(alice, "fablecast.state.ballot.window")
    alice.click("#options button.option[data-index='1']")
    alice.wait_for_selector("#options button.option[data-index='1'][aria-pressed='true']")
    # The server's vote_ack confirms it (written with the next tick's frames).
    alice.wait_for_function("() => fablecast.state.myVote === 1")
    bob.wait_for_function(
        f"() => fablecast.state.ballot?.window === {window} && " + count_is(1, "1 vote")
    )
    assert client_state(bob, "fablecast.client.codec") == "msgpack"
    # Keyboard only: the digit keys vote too.
    bob.keyboard.press("1")
    alice.wait_for_function("() => " + count_is(0, "1 vote"))


def test_a_dropped_socket_resumes_with_the_same_text(web_node: NodeThread, new_page: Any) -> None:
    steady = new_page(f"{web_node.base}/watch/demo")
    dropped = new_page(f"{web_node.base}/watch/demo")
    dropped.wait_for_function("() => fablecast.state.partial?.text.length > 0")
    dropped.evaluate(
        """() => { window.welcomes = [];
        fablecast.client.addEventListener('welcome', e => welcomes.push(e.detail.recovered));
        fablecast.client.drop(); }"""
    )
    dropped.wait_for_function("() => welcomes.length === 1")
    assert dropped.evaluate("() => welcomes") == [True]
    beat = client_state(dropped, "fablecast.state.beat")
    dropped.wait_for_function(f"() => fablecast.state.story.some(b => b.beat >= {beat + 1})")
    a, b = beat_texts(steady), beat_texts(dropped)
    done = {n for n in a.keys() & b.keys() if n <= beat + 1}
    assert beat in done and beat + 1 in done
    for n in sorted(done):
        assert a[n] == b[n], f"beat {n} differs after the reconnect"
        assert len(a[n]) > 20


def test_overlay_is_transparent_outside_the_text(web_node: NodeThread, new_page: Any) -> None:
    from PIL import Image

    page = new_page(
        f"{web_node.base}/overlay/demo?show=text", viewport={"width": 960, "height": 540}
    )
    page.wait_for_function("() => document.querySelector('#ov-text').textContent.length > 40")
    shot = Image.open(io.BytesIO(page.screenshot(omit_background=True))).convert("RGBA")
    box = page.eval_on_selector(
        "#ov-text",
        "e => { const r = e.getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom]; }",
    )
    left, top, right, bottom = (round(v) for v in box)
    alpha = shot.getchannel("A")
    # Nothing is painted above the text box, nor in the corners.
    assert alpha.crop((0, 0, shot.width, max(1, top - 4))).getextrema() == (0, 0)
    assert alpha.getpixel((shot.width - 1, shot.height - 1)) == 0
    # The text itself is painted (opaque pixels inside its box).
    assert alpha.crop((left, top, right, bottom)).getextrema()[1] == 255
    assert page.evaluate("() => document.documentElement.scrollHeight <= innerHeight")


def test_vr_renders_a_ballot_panel_and_a_cue_changes_the_sky(
    web_node: NodeThread, new_page: Any
) -> None:
    page = new_page(f"{web_node.base}/vr/demo")
    page.wait_for_function(
        "() => Number(document.querySelector('#scene').dataset.panels) >= 2", timeout=30_000
    )
    assert page.get_attribute("#scene", "data-webgl") == "1"
    assert page.locator("#scene canvas").count() == 1
    runner = web_node.node.rooms["demo"]

    def show(**scene: str) -> tuple[str, str]:
        """Publish a cue of ``scene`` and wait until the page's sky took it."""
        cue = m.Cue(
            beat=runner.room.beat,
            location="the docks",
            music="tense strings",
            characters=["Mira"],
            image_prompt="a pier",
            **scene,
        )
        before = page.get_attribute("body", "data-cue-seq")
        web_node.soon(lambda: runner.stream.publish(cue))
        page.wait_for_function(
            "(before) => document.body.dataset.cue === 'yes'"
            " && document.body.dataset.sky && document.body.dataset.cueSeq !== before",
            arg=before,
        )
        sky = page.get_attribute("body", "data-sky") or ""
        assert re.fullmatch(r"#[0-9a-f]{6}", sky)
        return sky, page.get_attribute("body", "data-horizon") or ""

    # The room may have sent a cue of its own already: compare two known scenes.
    day, day_horizon = show(time_of_day="noon", weather="clear", lighting="sunlight")
    night, night_horizon = show(time_of_day="night", weather="storm", lighting="lanterns")
    # A stormy night is darker than a clear noon, at the zenith and at the horizon.
    assert luminance(night) < luminance(day)
    assert luminance(night_horizon) < luminance(day_horizon) / 2


def test_home_lists_the_rooms(web_node: NodeThread, new_page: Any) -> None:
    page = new_page(f"{web_node.base}/")
    page.wait_for_selector("li.room[data-room='second']")
    names = page.eval_on_selector_all("li.room", "els => els.map(e => e.dataset.room)")
    assert names == ["demo", "second"]
    assert "The Glass Orchard" in (page.text_content("li.room[data-room='second']") or "")
    page.click("li.room[data-room='demo'] a.primary")
    page.wait_for_url(re.compile(r"/watch/demo$"))


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/watch/demo",
        "/overlay/demo?show=text,ballot,tally,mood,cues",
        "/vr/demo",
        "/dashboard?room=demo",
    ],
)
def test_accessibility(web_node: NodeThread, new_page: Any, path: str) -> None:
    # axe is injected by the test (the pages' CSP would refuse it: bypass_csp).
    page = new_page(f"{web_node.base}{path}", bypass_csp=True)
    page.wait_for_function("() => document.readyState === 'complete'")
    if path.startswith("/watch"):
        page.wait_for_selector("#options button.option", timeout=30_000)
    page.add_script_tag(path=str(AXE))
    result = page.evaluate(
        "async () => (await axe.run(document, {resultTypes: ['violations']})).violations"
        ".map(v => ({id: v.id, impact: v.impact,"
        " nodes: v.nodes.map(n => n.target.join(' ')).slice(0, 3)}))"
    )
    serious = [v for v in result if v["impact"] in ("serious", "critical")]
    assert serious == [], serious


class WarmingEngine(ScriptedEngine):
    """A scripted engine that is not ready until ``go`` is set (a model still loading)."""

    def __init__(self) -> None:
        super().__init__(tokens_per_s=60, first_token_s=0.05)
        self.go = threading.Event()

    async def start(self) -> None:
        await asyncio.to_thread(self.go.wait)  # set by the test (from its thread)
        await super().start()


def test_a_newcomer_sees_the_narrator_warming_up_not_failures(browser: Any) -> None:
    engine = WarmingEngine()
    node = NodeThread(browser_config(), engine, timeout=scaled(30))
    ctx = browser.new_context()
    try:
        page = ctx.new_page()
        page.goto(f"{node.base}/watch/demo")
        page.wait_for_function("() => fablecast.state.phaseReason === 'starting'")
        # The room asks nothing of the engine until it is warm: the notice stays "warming up".
        notices = set()
        for _ in range(10):
            notices.add(page.text_content("#notice"))
            assert page.is_visible("#notice")
            page.wait_for_timeout(100)
        assert notices == {"The narrator is warming up. The story will begin shortly."}
        engine.go.set()
        page.wait_for_function("() => document.querySelector('#beats').textContent.length > 20")
        page.wait_for_function("() => document.querySelector('#notice').hidden")
    finally:
        engine.go.set()
        ctx.close()
        node.stop()
