"""The only place protocol bytes are made and read.

Two codecs, negotiated by WebSocket subprotocol: JSON in text frames and
MessagePack in binary frames. Both are msgspec (one typed schema, validation on
decode, and the fastest encoder of either format for Python); the wire formats
are plain JSON and plain MessagePack, readable by orjson/msgpack/any client.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

from fablecast.protocol.codes import ErrorCode
from fablecast.protocol.errors import ProtocolError
from fablecast.protocol.messages import ClientMessage, ServerMessage
from fablecast.protocol.version import SUBPROTOCOL_JSON, SUBPROTOCOL_MSGPACK

#: Default largest accepted client message, in bytes (64 KiB).
DEFAULT_MAX_MESSAGE_BYTES: Final = 64 * 1024


def _classify(exc: msgspec.MsgspecError) -> ProtocolError:
    text = str(exc)
    if isinstance(exc, msgspec.ValidationError):
        # msgspec reports a bad tag as "Invalid value 'x' - at `$.type`" and a
        # missing tag as "Object missing required field `type`".
        if text.endswith("at `$.type`") or "missing required field `type`" in text:
            return ProtocolError(ErrorCode.UNKNOWN_TYPE, text)
        return ProtocolError(ErrorCode.INVALID_MESSAGE, text)
    return ProtocolError(ErrorCode.BAD_MESSAGE, text)


class Codec:
    """Encodes server messages and decodes client messages (and the reverse, for clients)."""

    __slots__ = (
        "_dec_client",
        "_dec_server",
        "_encode",
        "is_text",
        "max_message_bytes",
        "name",
        "subprotocol",
    )

    def __init__(self, name: str, subprotocol: str, *, is_text: bool) -> None:
        self.name = name
        self.subprotocol = subprotocol
        self.is_text = is_text
        self.max_message_bytes = DEFAULT_MAX_MESSAGE_BYTES
        mod: Any = msgspec.json if is_text else msgspec.msgpack
        self._encode = mod.Encoder().encode
        self._dec_client = mod.Decoder(ClientMessage)
        self._dec_server = mod.Decoder(ServerMessage)

    def encode(self, message: msgspec.Struct) -> bytes:
        """Encode any protocol message to the bytes of one WebSocket frame."""
        data: bytes = self._encode(message)
        return data

    def _check(self, data: bytes | str, max_bytes: int) -> bytes | str:
        if isinstance(data, str):
            if not self.is_text:
                raise ProtocolError(
                    ErrorCode.BAD_MESSAGE, f"{self.subprotocol} expects binary frames"
                )
        elif self.is_text:
            raise ProtocolError(ErrorCode.BAD_MESSAGE, f"{self.subprotocol} expects text frames")
        size = len(data)
        if isinstance(data, str) and size * 4 > max_bytes:  # only then can UTF-8 exceed it
            size = len(data.encode())
        if size > max_bytes:
            raise ProtocolError(ErrorCode.TOO_LARGE, f"message exceeds {max_bytes} bytes")
        return data

    def decode_client(self, data: bytes | str, max_bytes: int | None = None) -> ClientMessage:
        """Decode and validate one client message; raise ProtocolError with the code to send.

        ``max_bytes`` (default ``max_message_bytes``) bounds the UTF-8/binary size.
        """
        data = self._check(data, self.max_message_bytes if max_bytes is None else max_bytes)
        try:
            msg: ClientMessage = self._dec_client.decode(data)
        except msgspec.MsgspecError as exc:
            raise _classify(exc) from None
        return msg

    def decode_server(self, data: bytes | str) -> ServerMessage:
        """Decode one server message (used by clients and tests)."""
        try:
            msg: ServerMessage = self._dec_server.decode(data)
        except msgspec.MsgspecError as exc:
            raise _classify(exc) from None
        return msg


JSON: Final = Codec("json", SUBPROTOCOL_JSON, is_text=True)
MSGPACK: Final = Codec("msgpack", SUBPROTOCOL_MSGPACK, is_text=False)
CODECS: Final = {JSON.subprotocol: JSON, MSGPACK.subprotocol: MSGPACK}


def codec_for_subprotocol(subprotocol: str | None) -> Codec:
    """The codec of a negotiated subprotocol; JSON when the client offered none."""
    if subprotocol is None:
        return JSON
    return CODECS[subprotocol]
