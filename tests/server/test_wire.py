"""server/wire.py: frames made once are the bytes websockets' own connection would send."""

from __future__ import annotations

import pytest
from websockets.protocol import State
from websockets.server import ServerProtocol

from fablecast.server.wire import ws_frame
from tests.support import unframe


def _websockets_frame(payload: bytes, *, text: bool) -> bytes:
    """What a websockets server connection writes for one message."""
    protocol = ServerProtocol()
    protocol.state = State.OPEN  # skip the handshake: only framing is compared
    if text:
        protocol.send_text(payload)
    else:
        protocol.send_binary(payload)
    return b"".join(protocol.data_to_send())


# Lengths across the three header forms: 7-bit, 16-bit (126..65535), 64-bit.
@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, 200_000])
@pytest.mark.parametrize("text", [True, False])
def test_same_bytes_as_websockets(size: int, text: bool) -> None:
    payload = b"x" * size
    framed = ws_frame(payload, text=text)
    assert framed == _websockets_frame(payload, text=text)
    assert unframe(framed) == (payload, text)


def test_utf8_text_round_trips() -> None:
    payload = '{"text":"ünïcödé ✓"}'.encode()
    assert unframe(ws_frame(payload, text=True)) == (payload, True)
