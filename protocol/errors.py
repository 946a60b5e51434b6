"""Protocol errors say whose fault and what the client gets."""

from __future__ import annotations

from fablecast.protocol.codes import ErrorCode


class ProtocolError(Exception):
    """A client sent something this protocol does not accept.

    ``code`` is the error code the client receives in an ``error`` message; the
    connection stays open unless the session's policy escalates to a close.
    """

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __repr__(self) -> str:
        return f"ProtocolError({self.code.value!r}, {self.message!r})"
