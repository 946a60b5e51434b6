"""``fablecast screenshots``: PNGs of every page at desktop and phone sizes (docs/img/).

Starts a node in-process (scripted engine, a long vote window so the ballot is
on screen), lets a beat be told, votes and reacts once from the audience page,
then captures the home, audience, overlay and VR pages with Debian's Chromium.
The overlay is captured with a transparent background, as OBS composites it.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

SIZES = {"desktop": (1280, 800), "phone": (390, 844)}
PAGES = {
    "home": "/",
    "watch": "/watch/demo",
    "overlay": "/overlay/demo?show=text,ballot,tally,mood",
    "vr": "/vr/demo",
}


def register(sub: Any) -> None:
    """Add ``screenshots`` to the ``fablecast`` command."""
    p = sub.add_parser("screenshots", help="PNGs of every page at desktop and phone sizes")
    p.add_argument("--out", default="docs/img", help="output folder (default docs/img)")
    p.set_defaults(func=run)


def _config() -> Any:
    from fablecast.server.config import Config, EngineConfig, RoomConfig, ServerConfig

    return Config(
        server=ServerConfig(port=0, tick_ms=50, uvloop=False),
        engine=EngineConfig(kind="scripted"),
        rooms=[
            RoomConfig(name="demo", title="The Lantern Market", vote_s=120, narration_tokens=60),
            RoomConfig(name="orchard", title="The Glass Orchard"),
        ],
    )


def capture(out: Path) -> list[Path]:
    """Write the PNGs into ``out``; returns their paths."""
    from playwright.sync_api import sync_playwright

    from fablecast.browser import CHROMIUM_ARGS, NodeThread, ensure_chromium
    from fablecast.inference.backends.scripted import ScriptedEngine

    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    node = NodeThread(_config(), ScriptedEngine(tokens_per_s=120, first_token_s=0.05))
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=ensure_chromium(), args=CHROMIUM_ARGS)
            viewer = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
            viewer.goto(f"{node.base}/watch/demo")
            viewer.wait_for_selector("#options button.option", timeout=60_000)
            viewer.click("#options button.option[data-index='1']")
            for reaction in ("joy", "surprise", "joy"):
                viewer.click(f"button[aria-label='React: {reaction}']")
            time.sleep(1.0)
            for size, (width, height) in SIZES.items():
                ctx = browser.new_context(viewport={"width": width, "height": height})
                page = ctx.new_page()
                for name, path in PAGES.items():
                    page.goto(f"{node.base}{path}")
                    page.wait_for_load_state("networkidle")
                    time.sleep(1.0)  # text streams in, the VR scene draws its frames
                    target = out / f"page-{name}-{size}.png"
                    page.screenshot(path=str(target), omit_background=name == "overlay")
                    written.append(target)
                ctx.close()
            browser.close()
    finally:
        node.stop()
    return written


def run(args: argparse.Namespace) -> int:
    """Entry point of ``fablecast screenshots``."""
    try:
        for path in capture(Path(args.out)):
            print(path)
    except Exception as exc:  # a missing browser or package: one clear line, no traceback
        print(f"fablecast screenshots: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0
