"""Fablecast Python SDK: an async client with reconnect and resume, and the terminal viewer.

- ``FablecastClient``: connect to a room, iterate its messages (room frames exactly
  once, in order, across reconnects), ``vote``, ``react``, ``ping``.
- ``StoryView``: the room's state (story, ballot, tally, mood, ...) built from messages.
- ``fablecast watch`` / ``fablecast play``: the terminal viewer (``fablecast.client.commands``).
"""

from fablecast.client.connection import (
    DEFAULT_RETRY_CLOSE_CODES,
    Backoff,
    ConnectError,
    FablecastClient,
    FablecastClosed,
    FablecastError,
    NotConnectedError,
    ReconnectFailed,
    SeqGapError,
    new_participant_id,
)
from fablecast.client.view import BallotView, StoryView

__all__ = [
    "DEFAULT_RETRY_CLOSE_CODES",
    "Backoff",
    "BallotView",
    "ConnectError",
    "FablecastClient",
    "FablecastClosed",
    "FablecastError",
    "NotConnectedError",
    "ReconnectFailed",
    "SeqGapError",
    "StoryView",
    "new_participant_id",
]
