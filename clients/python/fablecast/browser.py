"""A real node and Debian's Chromium for the page tests, screenshots and the page bench.

- ``ensure_chromium()``: /usr/bin/chromium (Debian's package), installed with
  apt-get when missing and running as root; never a browser downloaded by
  Playwright.
- ``CHROMIUM_ARGS``: headless, no sandbox, no GPU, no background network;
  WebGL through SwiftShader so the VR scene renders.
- ``NodeThread``: a ``Node`` on port 0 with its own event loop in a daemon
  thread, so synchronous Playwright code can drive pages against it.

Needs the ``playwright`` package (the ``dev`` extra) for the callers' browsers.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import threading
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

from fablecast.inference.engine import EngineClient
from fablecast.server.config import Config
from fablecast.server.node import Node

CHROMIUM = os.environ.get("FABLECAST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--use-angle=swiftshader",
    "--enable-unsafe-swiftshader",
]
T = TypeVar("T")


class ChromiumMissing(RuntimeError):
    """Chromium is not installed and could not be installed here."""


def ensure_chromium() -> str:
    """The Chromium binary; installs Debian's ``chromium`` when missing and root."""
    if Path(CHROMIUM).exists():
        return CHROMIUM
    if os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-q"], check=False, env=env)
        subprocess.run(["apt-get", "install", "-y", "-q", "chromium"], check=True, env=env)
        if Path(CHROMIUM).exists():
            return CHROMIUM
    raise ChromiumMissing(f"{CHROMIUM} missing: run `make chromium` (apt-get install chromium)")


class NodeThread:
    """A ``Node`` on its own event loop in a daemon thread (started on creation)."""

    def __init__(self, config: Config, engine: EngineClient, timeout: float = 30.0) -> None:
        self.timeout = timeout
        self.loop = asyncio.new_event_loop()
        self.node = Node(config, engine=engine)
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.call(self.node.start())

    def call(self, coro: Any) -> Any:
        """Run ``coro`` on the node's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(self.timeout)

    def soon(self, fn: Callable[[], T]) -> T:
        """Run ``fn()`` on the node's loop (the node's only thread) and return its result."""
        done: Future[T] = Future()

        def run() -> None:
            try:
                done.set_result(fn())
            except Exception as exc:
                done.set_exception(exc)

        self.loop.call_soon_threadsafe(run)
        return done.result(self.timeout)

    @property
    def base(self) -> str:
        """The node's http:// base URL."""
        return f"http://127.0.0.1:{self.node.port}"

    def stop(self) -> None:
        """Drain the node, stop its loop and thread."""
        try:
            self.call(self.node.stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(self.timeout)
            self.loop.close()
