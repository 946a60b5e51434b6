"""WebSocket frames made once and written to many clients.

A server's frames are never masked, and Fablecast's connections use no
extension (``compression=None``), so the bytes of a frame on the wire are the
same for every client of a codec. The fan-out frames each room frame once per codec
per tick and writes the very same ``bytes`` to every subscriber, instead of
letting each connection frame it again (``websockets.broadcast`` frames per
client: one header-plus-payload copy per client per frame; framing was about
a seventh of the fan-out's CPU in the profile of docs/benchmarks.md). This is
the "prepared message" of gorilla/websocket and Centrifuge.

The framing itself is websockets' (``Frame.serialize``), so the bytes are what
the connection's own ``send_text``/``send_binary`` would have written.
"""

from __future__ import annotations

from websockets.frames import Frame, Opcode


def ws_frame(payload: bytes, *, text: bool) -> bytes:
    """One complete, unmasked WebSocket data frame carrying ``payload``.

    ``text`` frames must carry UTF-8 (the JSON codec's output is).
    """
    return Frame(Opcode.TEXT if text else Opcode.BINARY, payload).serialize(mask=False)
