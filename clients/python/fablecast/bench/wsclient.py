"""A minimal, fast WebSocket client (RFC 6455) for load generation.

Why not ``websockets``' client: a load generator must cost much less per frame
than the server it measures, and one ``asyncio.Protocol`` with an inline frame
parser costs a fraction of a full ``Connection`` (no reader task, no queue, no
per-message future). It supports exactly what the benches need: the opening
handshake with a subprotocol, unfragmented and fragmented data frames, ping ->
pong, close, masked client frames, and pausing reads (to play a stalled client).
Used against servers on 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import base64
import os
import struct
from collections.abc import Callable
from typing import cast

_OP_CONT = 0x0
_OP_TEXT = 0x1
_OP_BINARY = 0x2
_OP_CLOSE = 0x8
_OP_PING = 0x9
_OP_PONG = 0xA


def _mask(payload: bytes, key: bytes) -> bytes:
    n = len(payload)
    if n == 0:
        return payload
    full = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(full, "big")).to_bytes(n, "big")


def encode_frame(opcode: int, payload: bytes) -> bytes:
    """One final, masked client frame."""
    n = len(payload)
    head = bytes([0x80 | opcode])
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + struct.pack("!H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", n)
    key = os.urandom(4)
    return head + key + _mask(payload, key)


#: Called with (client, payload, is_text) for every complete data message.
OnMessage = Callable[["WsClient", bytes, bool], None]
#: Called with (client, close code or None) once the connection is gone.
OnClose = Callable[["WsClient", "int | None"], None]


class WsClient(asyncio.Protocol):
    """One WebSocket client connection, driven by callbacks (no tasks)."""

    __slots__ = (
        "_buf",
        "_frag",
        "_frag_text",
        "_handshaken",
        "_key",
        "_on_close",
        "_on_message",
        "_opened",
        "close_code",
        "closed",
        "host",
        "local_close",
        "path",
        "port",
        "subprotocol",
        "tag",
        "transport",
    )

    def __init__(
        self,
        host: str,
        port: int,
        path: str,
        *,
        subprotocol: str | None,
        on_message: OnMessage,
        on_close: OnClose,
        tag: object = None,
    ) -> None:
        self.host = host
        self.port = port
        self.path = path
        self.subprotocol = subprotocol
        self._on_message = on_message
        self._on_close = on_close
        #: Free slot for the owner (its per-client state).
        self.tag = tag
        self.transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._handshaken = False
        self._key = base64.b64encode(os.urandom(16)).decode()
        self._frag: bytearray | None = None
        self._frag_text = False
        self._opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed = False
        #: Set when this side closed or dropped the connection.
        self.local_close = False
        self.close_code: int | None = None

    # ------------------------------------------------------------------ asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Send the opening handshake."""
        # uvloop's transports are not asyncio.Transport subclasses, but quack the same.
        self.transport = cast(asyncio.Transport, transport)
        lines = [
            f"GET {self.path} HTTP/1.1",
            f"Host: {self.host}:{self.port}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {self._key}",
            "Sec-WebSocket-Version: 13",
        ]
        if self.subprotocol:
            lines.append(f"Sec-WebSocket-Protocol: {self.subprotocol}")
        self.transport.write(("\r\n".join(lines) + "\r\n\r\n").encode())

    def data_received(self, data: bytes) -> None:
        """Parse frames; dispatch complete messages."""
        buf = self._buf
        buf += data
        if not self._handshaken:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buf[:end]).decode("latin-1")
            del buf[: end + 4]
            if not head.startswith("HTTP/1.1 101"):
                if not self._opened.done():
                    self._opened.set_exception(ConnectionError(head.split("\r\n", 1)[0]))
                self._abort()
                return
            self._handshaken = True
            if not self._opened.done():
                self._opened.set_result(None)
        pos = 0
        n = len(buf)
        on_message = self._on_message
        while n - pos >= 2:
            b0 = buf[pos]
            b1 = buf[pos + 1]
            length = b1 & 0x7F
            hdr = 2
            if length == 126:
                if n - pos < 4:
                    break
                length = (buf[pos + 2] << 8) | buf[pos + 3]
                hdr = 4
            elif length == 127:
                if n - pos < 10:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                hdr = 10
            masked = b1 & 0x80
            if masked:
                hdr += 4
            if n - pos < hdr + length:
                break
            payload = bytes(buf[pos + hdr : pos + hdr + length])
            if masked:  # servers must not mask, but be lenient
                payload = _mask(payload, bytes(buf[pos + hdr - 4 : pos + hdr]))
            pos += hdr + length
            opcode = b0 & 0x0F
            fin = b0 & 0x80
            if opcode in (_OP_TEXT, _OP_BINARY):
                if fin:
                    on_message(self, payload, opcode == _OP_TEXT)
                else:
                    self._frag = bytearray(payload)
                    self._frag_text = opcode == _OP_TEXT
            elif opcode == _OP_CONT:
                if self._frag is not None:
                    self._frag += payload
                    if fin:
                        whole = bytes(self._frag)
                        self._frag = None
                        on_message(self, whole, self._frag_text)
            elif opcode == _OP_PING:
                self._write(_OP_PONG, payload)
            elif opcode == _OP_CLOSE:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                self.close_code = code
                self._write(_OP_CLOSE, payload[:2])
                self._abort()
                return
            # pong and unknown opcodes: ignored
            if self.closed:
                return
        if pos:
            del buf[:pos]

    def connection_lost(self, exc: Exception | None) -> None:
        """Report the end of the connection once."""
        if not self._opened.done():
            self._opened.set_exception(exc or ConnectionError("closed before handshake"))
        if not self.closed:
            self.closed = True
        self._on_close(self, self.close_code)

    # ------------------------------------------------------------------ API

    async def opened(self) -> None:
        """Wait for the handshake to complete (raises if it failed)."""
        await self._opened

    def _write(self, opcode: int, payload: bytes) -> None:
        t = self.transport
        if t is not None and not self.closed and not t.is_closing():
            t.write(encode_frame(opcode, payload))

    def send(self, payload: bytes, *, text: bool = True) -> None:
        """Send one data message (text or binary frame)."""
        self._write(_OP_TEXT if text else _OP_BINARY, payload)

    def close(self, code: int = 1000) -> None:
        """Start the closing handshake (and drop the connection shortly after)."""
        if self.closed or self.transport is None:
            return
        self._write(_OP_CLOSE, struct.pack("!H", code))
        self.closed = True
        self.local_close = True
        loop = asyncio.get_running_loop()
        loop.call_later(1.0, self._abort)

    def abort(self) -> None:
        """Drop the connection at once, without a closing handshake (a network failure)."""
        self.closed = True
        self.local_close = True
        if self.transport is not None:
            self.transport.abort()

    def _abort(self) -> None:
        self.closed = True
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def pause(self) -> None:
        """Stop reading from the socket (a stalled client)."""
        if self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()

    def resume(self) -> None:
        """Read again."""
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()


async def connect(
    host: str,
    port: int,
    path: str,
    *,
    subprotocol: str | None,
    on_message: OnMessage,
    on_close: OnClose,
    tag: object = None,
    timeout_s: float = 30.0,
) -> WsClient:
    """Open one connection and complete the handshake."""
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(timeout_s):
        _t, proto = await loop.create_connection(
            lambda: WsClient(
                host,
                port,
                path,
                subprotocol=subprotocol,
                on_message=on_message,
                on_close=on_close,
                tag=tag,
            ),
            host,
            port,
        )
        await proto.opened()
    return proto
