"""Protocol version and the WebSocket subprotocols that select an encoding."""

from typing import Final

PROTOCOL_VERSION: Final = 1

#: JSON in WebSocket text frames.
SUBPROTOCOL_JSON: Final = "fablecast.v1.json"
#: MessagePack in WebSocket binary frames.
SUBPROTOCOL_MSGPACK: Final = "fablecast.v1.msgpack"

#: In order of server preference when a client offers both.
SUBPROTOCOLS: Final = (SUBPROTOCOL_MSGPACK, SUBPROTOCOL_JSON)
