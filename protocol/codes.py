"""Error codes (sent in ``error`` messages) and WebSocket close codes.

Both lists are part of the public protocol: ``docs/protocol.md`` documents each
one, and a test checks that every code here is documented there.
"""

from enum import IntEnum, StrEnum


class ErrorCode(StrEnum):
    """Codes of ``error`` messages. The connection stays open after each."""

    #: The frame could not be decoded at all (not JSON / MessagePack, wrong frame type).
    BAD_MESSAGE = "bad_message"
    #: The ``type`` field names no client message of this protocol version.
    UNKNOWN_TYPE = "unknown_type"
    #: The message decoded but a field is missing, of the wrong type or out of range.
    INVALID_MESSAGE = "invalid_message"
    #: The message is larger than the documented limit.
    TOO_LARGE = "too_large"
    #: More messages per second than the documented limit; the message was dropped.
    RATE_LIMITED = "rate_limited"
    #: A message other than ``hello`` arrived before ``hello``.
    NOT_JOINED = "not_joined"
    #: A second ``hello`` on the same connection.
    ALREADY_JOINED = "already_joined"
    #: The message is valid but the room's current phase does not accept it.
    NOT_IN_PHASE = "not_in_phase"
    #: A vote names a window that is not the open one (closed, or never opened).
    WINDOW_CLOSED = "window_closed"
    #: A vote names an option that is not on the ballot.
    UNKNOWN_OPTION = "unknown_option"
    #: A field was well-formed but not acceptable (e.g. a participant id with bad characters).
    REJECTED = "rejected"
    #: ``hello.token`` is missing where the room needs one, or malformed, forged, expired,
    #: signed with an unknown key, or scoped to another room. Followed by close 4401.
    UNAUTHORIZED = "unauthorized"
    #: The connection's role may not send this message in this room (e.g. an overlay voting,
    #: a viewer sending a moderator command). Nothing was applied; the connection stays open.
    FORBIDDEN = "forbidden"
    #: A moderator named a held beat that is no longer held (approved, edited, rejected,
    #: or dropped by a pause, kill or retell). Nothing was applied.
    NOT_HELD = "not_held"
    #: A moderator's text is over its limit (edit, inject) or an action would break a
    #: room rule (e.g. vetoing the last option left). Nothing was applied.
    OVER_LIMIT = "over_limit"
    #: A moderator muted this participant in this room: its votes and reactions are dropped.
    MUTED = "muted"
    #: The server failed while handling the message; nothing was applied.
    INTERNAL = "internal"
    #: A rewind or fork names a beat the room has not committed (HTTP API, docs/store.md).
    UNKNOWN_BEAT = "unknown_beat"


class CloseCode(IntEnum):
    """WebSocket close codes the server uses. 4000-4999 are Fablecast's own."""

    #: Standard: the server is shutting down or draining; reconnect (elsewhere) with resume.
    GOING_AWAY = 1001
    #: Standard: a frame exceeded ``max_message_bytes`` (enforced by the WebSocket layer).
    MESSAGE_TOO_BIG = 1009
    #: Standard: unexpected server failure.
    INTERNAL_ERROR = 1011
    #: Too many consecutive malformed or invalid messages.
    PROTOCOL_ERROR = 4001
    #: No ``hello`` within ``hello_timeout_s`` of the handshake.
    HELLO_TIMEOUT = 4002
    #: The URL path is not ``/rooms/<room>``.
    BAD_PATH = 4003
    #: No room by that name on this node.
    ROOM_NOT_FOUND = 4004
    #: The client fell behind: its outbox exceeded ``outbox_max_bytes``. Reconnect and resume.
    SLOW_CONSUMER = 4008
    #: The client kept sending past the rate limit.
    RATE_LIMIT_EXCEEDED = 4009
    #: The room was closed by its host or the node.
    ROOM_CLOSED = 4011
    #: The room already holds ``max_viewers_per_room`` connections.
    ROOM_FULL = 4029
    #: ``hello`` was refused: no valid token for this room (an ``unauthorized`` error says why).
    UNAUTHORIZED = 4401
    #: A moderator banned this identity from the room: its connections are closed and
    #: refused afterwards.
    BANNED = 4403
