"""Fablecast wire protocol v1: typed messages, codes and the two encodings.

Nothing in this package does I/O: it turns bytes into typed messages and back.
"""

from fablecast.protocol.codec import CODECS, Codec, codec_for_subprotocol
from fablecast.protocol.codes import CloseCode, ErrorCode
from fablecast.protocol.errors import ProtocolError
from fablecast.protocol.version import (
    PROTOCOL_VERSION,
    SUBPROTOCOL_JSON,
    SUBPROTOCOL_MSGPACK,
    SUBPROTOCOLS,
)

__all__ = [
    "CODECS",
    "PROTOCOL_VERSION",
    "SUBPROTOCOLS",
    "SUBPROTOCOL_JSON",
    "SUBPROTOCOL_MSGPACK",
    "CloseCode",
    "Codec",
    "ErrorCode",
    "ProtocolError",
    "codec_for_subprotocol",
]
