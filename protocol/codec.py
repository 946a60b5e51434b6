"""The only place protocol bytes are made and read.

Two codecs, negotiated by WebSocket subprotocol: JSON in text frames and
MessagePack in binary frames. Both are msgspec (one typed schema, validation on
decode, and the fastest encoder of either format for Python); the wire formats
are plain JSON and plain MessagePack, readable by orjson/msgpack/any client.
"""

from __future__ import annotations

import re
from typing import Any, Final

import msgspec

from fablecast.protocol.codes import ErrorCode
from fablecast.protocol.errors import ProtocolError
from fablecast.protocol.messages import ClientMessage, ServerMessage
from fablecast.protocol.version import SUBPROTOCOL_JSON, SUBPROTOCOL_MSGPACK

#: Default largest accepted client message, in bytes (64 KiB).
DEFAULT_MAX_MESSAGE_BYTES: Final = 64 * 1024
#: Deepest nesting of arrays and maps a decoded message may have (the message
#: itself is level 1). No client message of v1 nests at all; 32 leaves room for
#: future fields. Deeper frames get ``invalid_message`` before the decoder sees
#: them: a 2 KB frame 1,000 levels deep would otherwise exhaust the decoder's
#: recursion limit (``RecursionError``, a traceback per frame).
MAX_DEPTH: Final = 32

_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_JSON_NOT_BRACKET = re.compile(r"[^\[\]{}]+")


def json_depth(text: str) -> int:
    """The deepest nesting of ``[``/``{`` in JSON ``text`` (strings skipped).

    Malformed text gives some number; the decoder reports the malformation.
    """
    brackets = _JSON_NOT_BRACKET.sub("", _JSON_STRING.sub("", text))
    depth = deepest = 0
    for ch in brackets:
        if ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def _msgpack_width(data: bytes, i: int) -> tuple[int, int]:
    """(bytes this MessagePack object's header and scalar body take, items it contains)."""
    b = data[i]
    if b <= 0x7F or b >= 0xE0 or b in (0xC0, 0xC2, 0xC3):
        return 1, 0
    if 0x80 <= b <= 0x8F:
        return 1, 2 * (b & 0x0F)
    if 0x90 <= b <= 0x9F:
        return 1, b & 0x0F
    if 0xA0 <= b <= 0xBF:
        return 1 + (b & 0x1F), 0
    if b in _MP_LEN:  # str/bin/ext with a length field
        size, extra = _MP_LEN[b]
        n = int.from_bytes(data[i + 1 : i + 1 + size], "big")
        return 1 + size + extra + n, 0
    if b in _MP_FIXED:
        return 1 + _MP_FIXED[b], 0
    if b in _MP_CONTAINER:
        size, per = _MP_CONTAINER[b]
        return 1 + size, per * int.from_bytes(data[i + 1 : i + 1 + size], "big")
    raise ValueError(f"byte 0x{b:02x} starts no MessagePack object")


_MP_LEN: Final = {  # type byte: (bytes of the length field, bytes before the body)
    **{0xC4: (1, 0), 0xC5: (2, 0), 0xC6: (4, 0), 0xD9: (1, 0), 0xDA: (2, 0), 0xDB: (4, 0)},
    **{0xC7: (1, 1), 0xC8: (2, 1), 0xC9: (4, 1)},  # ext: one type byte
}
_MP_FIXED: Final = {  # type byte: body bytes (fixext includes its type byte)
    **{0xCA: 4, 0xCB: 8, 0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8, 0xD0: 1, 0xD1: 2, 0xD2: 4},
    **{0xD3: 8, 0xD4: 2, 0xD5: 3, 0xD6: 5, 0xD7: 9, 0xD8: 17},
}
_MP_CONTAINER: Final = {0xDC: (2, 1), 0xDD: (4, 1), 0xDE: (2, 2), 0xDF: (4, 2)}


def msgpack_depth(data: bytes) -> int:
    """The deepest nesting of arrays/maps in the first MessagePack object of ``data``.

    Walks headers only (strings and binaries are skipped by length), so it
    costs one step per object. Truncated or malformed data ends the walk; the
    decoder then reports it.
    """
    pending: list[int] = []  # items still to read in each open container
    deepest = 0
    i = 0
    try:
        while i < len(data):
            width, items = _msgpack_width(data, i)
            i += width
            if items:
                pending.append(items)
                deepest = max(deepest, len(pending))
                continue
            while pending:  # a scalar (or empty container) completes one item
                pending[-1] -= 1
                if pending[-1]:
                    break
                pending.pop()
            if not pending:
                break
    except (ValueError, IndexError):
        pass
    return deepest


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
        if isinstance(data, str):
            # Fast path: a frame with few brackets cannot nest deeply.
            brackets = data.count("[") + data.count("{")
            too_deep = brackets > MAX_DEPTH and json_depth(data) > MAX_DEPTH
        else:
            too_deep = len(data) > MAX_DEPTH and msgpack_depth(data) > MAX_DEPTH
        if too_deep:
            raise ProtocolError(ErrorCode.INVALID_MESSAGE, f"nested deeper than {MAX_DEPTH} levels")
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
        except RecursionError:  # a backstop: MAX_DEPTH should keep it from happening
            raise ProtocolError(ErrorCode.INVALID_MESSAGE, "nested too deeply") from None
        return msg

    def decode_server(self, data: bytes | str) -> ServerMessage:
        """Decode one server message (used by clients and tests)."""
        try:
            msg: ServerMessage = self._dec_server.decode(data)
        except msgspec.MsgspecError as exc:
            raise _classify(exc) from None
        except RecursionError:
            raise ProtocolError(ErrorCode.INVALID_MESSAGE, "nested too deeply") from None
        return msg


JSON: Final = Codec("json", SUBPROTOCOL_JSON, is_text=True)
MSGPACK: Final = Codec("msgpack", SUBPROTOCOL_MSGPACK, is_text=False)
CODECS: Final = {JSON.subprotocol: JSON, MSGPACK.subprotocol: MSGPACK}


def codec_for_subprotocol(subprotocol: str | None) -> Codec:
    """The codec of a negotiated subprotocol; JSON when the client offered none."""
    if subprotocol is None:
        return JSON
    return CODECS[subprotocol]
