"""Protocol errors say whose fault and what the client gets."""

from __future__ import annotations

from protocol.codes import CloseCode, ErrorCode


class ProtocolError(Exception):
    """A client sent something this protocol does not accept.

    ``code`` is the error code the client receives in an ``error`` message; the
    connection stays open unless the session's policy escalates to ``close_code``.
    """

    def __init__(
        self, code: ErrorCode, message: str, *, close_code: CloseCode | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.close_code = close_code

    def __repr__(self) -> str:
        return f"ProtocolError({self.code.value!r}, {self.message!r})"
