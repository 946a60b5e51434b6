"""The load generator's WebSocket client against hand-made server bytes."""

from __future__ import annotations

import struct

from fablecast.bench.wsclient import WsClient, _mask, encode_frame


class _Transport:
    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True


def _frame(opcode: int, payload: bytes, *, fin: bool = True) -> bytes:
    head = bytes([(0x80 if fin else 0) | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([n])
    elif n < 65536:
        head += bytes([126]) + struct.pack("!H", n)
    else:
        head += bytes([127]) + struct.pack("!Q", n)
    return head + payload


def _unmask(frame: bytes) -> tuple[int, bytes]:
    n = frame[1] & 0x7F
    assert frame[1] & 0x80, "client frames must be masked"
    off = 2
    if n == 126:
        n = struct.unpack("!H", frame[2:4])[0]
        off = 4
    key = frame[off : off + 4]
    return frame[0] & 0x0F, _mask(frame[off + 4 : off + 4 + n], key)


async def test_handshake_frames_ping_close() -> None:
    got: list[tuple[bytes, bool]] = []
    closes: list[int | None] = []
    c = WsClient(
        "127.0.0.1",
        1,
        "/rooms/x",
        subprotocol="fablecast.v1.json",
        on_message=lambda _c, data, text: got.append((data, text)),
        on_close=lambda _c, code: closes.append(code),
    )
    t = _Transport()
    c.connection_made(t)  # type: ignore[arg-type]
    request = t.written.pop().decode()
    assert request.startswith("GET /rooms/x HTTP/1.1")
    assert "Sec-WebSocket-Protocol: fablecast.v1.json" in request

    big = b"x" * 300
    stream = (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n"
        + _frame(0x1, b"hello")
        + _frame(0x2, big)
        + _frame(0x1, b"par", fin=False)
        + _frame(0x0, b"ts")
        + _frame(0x9, b"p1")
    )
    for i in range(0, len(stream), 7):  # arbitrary chunking
        c.data_received(stream[i : i + 7])
    await c.opened()
    assert got == [(b"hello", True), (big, False), (b"parts", True)]
    assert _unmask(t.written.pop()) == (0xA, b"p1")  # pong

    c.send(b'{"type":"hello"}')
    assert _unmask(t.written.pop()) == (0x1, b'{"type":"hello"}')

    c.data_received(_frame(0x8, struct.pack("!H", 4008) + b"slow"))
    assert c.close_code == 4008 and c.closed and t.closed
    c.connection_lost(None)
    assert closes == [4008]


def test_encode_frame_lengths() -> None:
    for n in (0, 125, 126, 65535, 65536):
        frame = encode_frame(0x2, b"a" * n)
        if n < 126:
            assert frame[1] & 0x7F == n
        elif n < 65536:
            assert frame[1] & 0x7F == 126
        else:
            assert frame[1] & 0x7F == 127
