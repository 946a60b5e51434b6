"""Shared test helpers (importable as ``support``: tests/ is on pythonpath)."""

from __future__ import annotations

import os

#: Multiply every time-based wait in tests by this (slow CI machines).
TIMEOUT_SCALE = float(os.environ.get("FABLECAST_TEST_TIMEOUT_SCALE", "1"))


def scaled(seconds: float) -> float:
    """A timeout scaled for this machine."""
    return seconds * TIMEOUT_SCALE


async def wait_for(predicate: object, timeout: float, step: float = 0.01) -> bool:
    """Poll ``predicate()`` until true or ``timeout`` (scaled) passes."""
    import asyncio
    import time

    deadline = time.monotonic() + scaled(timeout)
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        await asyncio.sleep(step)
    return bool(predicate())  # type: ignore[operator]
