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


def unframe(data: bytes) -> tuple[bytes, bool]:
    """Parse one whole server WebSocket frame with websockets' own parser.

    Returns ``(payload, is_text)``; fails unless ``data`` is exactly one
    unmasked, final text or binary frame.
    """
    from websockets.frames import Frame, Opcode
    from websockets.streams import StreamReader

    reader = StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    parser = Frame.parse(reader.read_exact, mask=False)
    try:
        next(parser)
    except StopIteration as done:
        frame: Frame = done.value
    else:
        raise AssertionError("incomplete WebSocket frame")
    assert frame.fin and frame.opcode in (Opcode.TEXT, Opcode.BINARY), frame
    assert not reader.buffer, "bytes left after one frame"
    return bytes(frame.data), frame.opcode is Opcode.TEXT
