"""Browser tests: Debian's Chromium driven by Python Playwright, against a real node.

One node (scripted engine, port 0, fast beats) runs in a thread of its own,
and one Chromium is shared by every test of the module; each test opens its
own contexts. Chromium is Debian's (/usr/bin/chromium): installed here with
apt-get when missing and running as root (the Makefile's ``chromium`` target does
the same), never downloaded by Playwright.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fablecast.browser import CHROMIUM_ARGS, ChromiumMissing, NodeThread, ensure_chromium
from fablecast.inference.backends.scripted import ScriptedEngine
from fablecast.server.config import Config, EngineConfig, RoomConfig, ServerConfig, StoreConfig
from tests.support import scaled

__all__ = ["AXE", "NodeThread"]

REPO = Path(__file__).resolve().parents[2]
AXE = REPO / "clients" / "js" / "node_modules" / "axe-core" / "axe.min.js"


def browser_config(vote_s: float = 6.0) -> Config:
    """Fast beats, a vote window long enough to click in, port 0."""
    return Config(
        server=ServerConfig(port=0, tick_ms=20, uvloop=False),
        engine=EngineConfig(kind="scripted", stall_timeout_s=2.0),
        rooms=[
            RoomConfig(
                name="demo",
                title="The Lantern Market",
                vote_s=vote_s,
                reveal_s=0.2,
                retry_s=0.2,
                narration_tokens=30,
            ),
            RoomConfig(name="second", title="The Glass Orchard", pause_when_empty=True),
        ],
        store=StoreConfig(enabled=False),  # fresh rooms every run (no event log)
    )


@pytest.fixture(scope="module")
def web_node() -> Iterator[NodeThread]:
    n = NodeThread(
        browser_config(), ScriptedEngine(tokens_per_s=60, first_token_s=0.05), timeout=scaled(30)
    )
    yield n
    n.stop()


# Module scope, not session: while Playwright's sync API is open, its event loop is
# the thread's running loop, and the asyncio tests that follow could not run theirs.
@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    try:
        exe = ensure_chromium()
    except ChromiumMissing as exc:
        pytest.skip(str(exc))
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def new_page(browser: Any) -> Iterator[Callable[..., Any]]:
    """Open pages in fresh contexts; every context is closed after the test."""
    contexts: list[Any] = []

    def open_page(url: str, **context_options: Any) -> Any:
        ctx = browser.new_context(**context_options)
        contexts.append(ctx)
        page = ctx.new_page()
        page.set_default_timeout(scaled(15) * 1000)
        page.goto(url)
        return page

    yield open_page
    for ctx in contexts:
        ctx.close()
