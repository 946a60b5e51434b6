"""Who acts, and the record of what they did: plain values shared by the core and the node.

The core needs only an ``Actor``: a subject, a role, and whether its token
covers a room. ``server.auth.Principal`` (signed tokens) is one; ``Principal``
below is the plain one for tests and nodes without token keys.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal, Protocol

Role = Literal["viewer", "moderator", "overlay", "host"]
#: Roles that may send ``moderate``.
MODERATOR_ROLES: Final[frozenset[str]] = frozenset({"moderator", "host"})


class Actor(Protocol):
    """Who sent a moderator message, as the core needs to know it."""

    @property
    def subject(self) -> str:
        """The identity actions are audited under."""
        ...

    @property
    def role(self) -> str:
        """viewer | moderator | overlay | host."""
        ...

    def covers(self, room: str) -> bool:
        """Whether the token is valid in ``room``."""
        ...


@dataclass(frozen=True, slots=True)
class Principal:
    """A plain identity: ``room`` is the room the token is for, or ``"*"`` for every room."""

    subject: str
    role: Role = "viewer"
    room: str = "*"

    def covers(self, room: str) -> bool:
        """Whether the token is valid in ``room``."""
        return self.room in ("*", room)


def may_moderate(actor: Actor, room: str) -> bool:
    """A moderator or host whose token covers ``room``."""
    return actor.role in MODERATOR_ROLES and actor.covers(room)


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One moderator action, applied (``outcome == "ok"``) or refused (the error code)."""

    t: float
    room: str
    subject: str
    role: str
    action: str
    outcome: str
    detail: str = ""
    #: The identity a mute, unmute, ban or unban named (restored from the event log).
    participant: str | None = None
    #: What an ``approval`` action set.
    on: bool | None = None
