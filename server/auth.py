"""Identities, roles and tokens: who a connection is and what it may do.

Pure: no sockets, no clock (every check takes ``now``, seconds since the
epoch), no environment except in ``KeyRing.from_config``.

Token format (docs/security.md): a JWT (RFC 7519), compact serialization,
signed with HMAC-SHA256 (``alg: HS256``, the only algorithm accepted, so
``alg: none`` and key-confusion tricks cannot pass) under a key named by the
header's ``kid``. Claims, all required:

- ``iss``: ``"fablecast"``;
- ``sub``: the subject votes count under, 1-64 of ``A-Z a-z 0-9 _ . : -``;
- ``role``: ``viewer`` | ``moderator`` | ``overlay`` | ``host``;
- ``room``: a room name, or ``"*"`` for every room of the node;
- ``iat``, ``exp``: issue and expiry times (seconds since the epoch);
- ``anon``: true for identities the server issued to anonymous viewers
  (always role ``viewer``, room ``"*"``).

Rules:
1. A token verifies when its ``kid`` names a key of the ring, its signature
   checks under that key, its claims have the shapes above, ``iat`` is not
   more than ``CLOCK_SKEW_S`` in the future and ``exp`` is after ``now``.
2. Admission to a room (``Authenticator.admit``): a verified token whose
   ``room`` is the room or ``"*"``; an anonymous token only where the room
   allows anonymous viewers. No token: a fresh anonymous identity where the
   room allows it, else refused. Every refusal is ``unauthorized`` (close 4401).
3. Authorization (``authorize``): a role may do what ``PERMISSIONS`` lists,
   in the rooms its token covers; everything else is ``forbidden``.
4. Key rotation: the ring signs with its current key and verifies with every
   key it holds; dropping a key from the ring revokes every token it signed.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Final, get_args

import jwt

from fablecast.protocol.codes import ErrorCode
from fablecast.protocol.errors import ProtocolError
from fablecast.protocol.messages import Role

ISSUER: Final = "fablecast"
ALGORITHM: Final = "HS256"
#: Every room of the node (a token's ``room`` claim).
ALL_ROOMS: Final = "*"
#: How far in the future ``iat`` may be (clocks of issuer and node differ a little).
CLOCK_SKEW_S: Final = 60.0
#: Shortest accepted secret, in bytes (RFC 7518 3.2: at least the hash size).
MIN_KEY_BYTES: Final = 32
#: Default lifetime of a server-issued anonymous identity (30 days).
ANONYMOUS_TTL_S: Final = 30 * 86400.0
#: Environment variable holding keys: ``kid:secret`` pairs, comma-separated; the first signs.
KEYS_ENV: Final = "FABLECAST_AUTH_KEYS"

ROLES: Final[tuple[Role, ...]] = get_args(Role)
_SUBJECT = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_ROOM = re.compile(r"[A-Za-z0-9_-]{1,64}")
_KID = re.compile(r"[A-Za-z0-9_.-]{1,32}")


class Action(StrEnum):
    """What a connection can ask for; ``authorize`` checks it against the role."""

    #: Join a room and receive its frames.
    WATCH = "watch"
    PING = "ping"
    VOTE = "vote"
    REACT = "react"
    #: Moderator commands (hold, approve, veto, edit, mute...).
    MODERATE = "moderate"
    #: Host commands (open, close, configure a room).
    HOST = "host"


_AUDIENCE: Final = frozenset({Action.WATCH, Action.PING, Action.VOTE, Action.REACT})

#: The role table (docs/protocol.md and docs/security.md show the same table).
PERMISSIONS: Final[Mapping[Role, frozenset[Action]]] = {
    "viewer": _AUDIENCE,
    "overlay": frozenset({Action.WATCH, Action.PING}),
    "moderator": _AUDIENCE | {Action.MODERATE},
    "host": _AUDIENCE | {Action.MODERATE, Action.HOST},
}


@dataclass(frozen=True, slots=True)
class Principal:
    """A verified identity: what a session holds once its ``hello`` was admitted."""

    subject: str
    role: Role
    #: The room the token is for, or ``ALL_ROOMS``.
    room: str
    #: Issued by the server to an anonymous viewer (free to make: per-address caps apply).
    anonymous: bool
    expires_at: float

    def covers(self, room: str) -> bool:
        """Whether the token is valid in ``room``."""
        return self.room in (ALL_ROOMS, room)


def authorize(principal: Principal, action: Action, room: str) -> ProtocolError | None:
    """None when ``principal`` may do ``action`` in ``room``; else the ``forbidden`` error.

    Changes nothing: a caller that gets an error applies nothing and sends it.
    """
    if not principal.covers(room):
        return ProtocolError(
            ErrorCode.FORBIDDEN, f"this token is for room {principal.room!r}, not {room!r}"
        )
    if action not in PERMISSIONS[principal.role]:
        return ProtocolError(
            ErrorCode.FORBIDDEN, f"role {principal.role!r} may not {action.value} here"
        )
    return None


def _unauthorized(message: str) -> ProtocolError:
    return ProtocolError(ErrorCode.UNAUTHORIZED, message)


@dataclass(frozen=True, slots=True)
class KeyRing:
    """Signing keys by key id: ``current`` signs, all of them verify."""

    keys: Mapping[str, bytes]
    current: str

    def __post_init__(self) -> None:
        if self.current not in self.keys:
            raise ValueError(f"current key {self.current!r} is not in the ring")
        for kid, secret in self.keys.items():
            if not _KID.fullmatch(kid):
                raise ValueError(f"key id {kid!r} must be 1-32 of A-Z a-z 0-9 _ . -")
            if len(secret) < MIN_KEY_BYTES:
                raise ValueError(f"key {kid!r} is shorter than {MIN_KEY_BYTES} bytes")

    @classmethod
    def ephemeral(cls) -> KeyRing:
        """A random key that lives as long as the process (no key configured)."""
        kid = f"ephemeral-{secrets.token_hex(4)}"
        return cls({kid: secrets.token_bytes(32)}, kid)

    @classmethod
    def parse(cls, spec: str) -> KeyRing:
        """``kid:secret[,kid:secret...]`` (the ``FABLECAST_AUTH_KEYS`` format); the first signs."""
        pairs = [item.strip().split(":", 1) for item in spec.split(",") if item.strip()]
        if not pairs or any(len(p) != 2 for p in pairs):
            raise ValueError(f"{KEYS_ENV} must be kid:secret pairs separated by commas")
        return cls({kid: secret.encode() for kid, secret in pairs}, pairs[0][0])

    @classmethod
    def from_config(
        cls,
        keys: Mapping[str, str],
        current: str | None,
        environ: Mapping[str, str] | None = None,
    ) -> KeyRing | None:
        """Keys from ``environ[FABLECAST_AUTH_KEYS]`` if set, else from the config; None if neither.

        The environment wins so a secret need not be written into a config file.
        """
        env = (os.environ if environ is None else environ).get(KEYS_ENV, "").strip()
        if env:
            return cls.parse(env)
        if not keys:
            return None
        return cls({kid: s.encode() for kid, s in keys.items()}, current or next(iter(keys)))


@dataclass(frozen=True, slots=True)
class Admission:
    """A ``hello`` admitted: who, and the anonymous identity to hand back (or None)."""

    principal: Principal
    #: For anonymous principals: the token the client stores (``welcome.identity``).
    identity: str | None


class Authenticator:
    """Issues and verifies tokens with one key ring; admits ``hello``s to rooms."""

    def __init__(self, ring: KeyRing, *, anonymous_ttl_s: float = ANONYMOUS_TTL_S) -> None:
        self.ring = ring
        self.anonymous_ttl_s = anonymous_ttl_s

    def issue(
        self,
        subject: str,
        role: Role,
        room: str,
        ttl_s: float,
        now: float,
        *,
        anonymous: bool = False,
    ) -> str:
        """A signed token (rules in the module docstring); ValueError on a bad claim."""
        if not _SUBJECT.fullmatch(subject):
            raise ValueError("subject must be 1-64 of A-Z a-z 0-9 _ . : -")
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}")
        if room != ALL_ROOMS and not _ROOM.fullmatch(room):
            raise ValueError("room must be a room name (1-64 of A-Z a-z 0-9 _ -) or '*'")
        if ttl_s <= 0:
            raise ValueError("ttl must be positive")
        claims = {
            "iss": ISSUER,
            "sub": subject,
            "role": role,
            "room": room,
            "anon": anonymous,
            "iat": int(now),
            "exp": int(now + ttl_s),
        }
        kid = self.ring.current
        return jwt.encode(claims, self.ring.keys[kid], ALGORITHM, headers={"kid": kid})

    def issue_anonymous(self, now: float) -> str:
        """A fresh anonymous identity: role viewer, every room, ``anonymous_ttl_s``."""
        subject = f"anon-{secrets.token_hex(8)}"
        return self.issue(subject, "viewer", ALL_ROOMS, self.anonymous_ttl_s, now, anonymous=True)

    def verify(self, token: str, now: float) -> Principal:
        """The principal of a valid token; ProtocolError ``unauthorized`` saying why not."""
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.PyJWTError:
            raise _unauthorized("token is not a signed token (JWT)") from None
        key = self.ring.keys.get(kid) if isinstance(kid, str) else None
        if key is None:
            raise _unauthorized("token is signed with an unknown key")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                issuer=ISSUER,
                # Expiry is checked against ``now`` below (pure, testable).
                options={
                    "verify_exp": False,
                    "verify_iat": False,
                    "require": ["iss", "sub", "role", "room", "iat", "exp"],
                },
            )
        except jwt.InvalidSignatureError:
            raise _unauthorized("token signature does not verify") from None
        except jwt.PyJWTError as exc:
            raise _unauthorized(f"token is invalid: {exc}") from None
        sub, role, room = claims["sub"], claims["role"], claims["room"]
        iat, exp, anon = claims["iat"], claims["exp"], claims.get("anon", False)
        if not (isinstance(sub, str) and _SUBJECT.fullmatch(sub)):
            raise _unauthorized("token subject is malformed")
        if role not in ROLES:
            raise _unauthorized("token role is unknown")
        if not (isinstance(room, str) and (room == ALL_ROOMS or _ROOM.fullmatch(room))):
            raise _unauthorized("token room is malformed")
        if not all(isinstance(t, int | float) and not isinstance(t, bool) for t in (iat, exp)):
            raise _unauthorized("token times are malformed")
        if not isinstance(anon, bool) or (anon and (role != "viewer" or room != ALL_ROOMS)):
            raise _unauthorized("token is malformed")
        if iat > now + CLOCK_SKEW_S:
            raise _unauthorized("token is issued in the future")
        if exp <= now:
            raise _unauthorized("token has expired")
        return Principal(sub, role, room, anon, float(exp))

    def admit(
        self, token: str | None, room: str, *, allow_anonymous: bool, now: float
    ) -> Admission | ProtocolError:
        """Admit a ``hello`` to ``room`` (rule 2), or the ``unauthorized`` error to send."""
        if token is None:
            if not allow_anonymous:
                return _unauthorized(f"room {room!r} needs a token")
            identity = self.issue_anonymous(now)
            return Admission(self.verify(identity, now), identity)
        try:
            principal = self.verify(token, now)
        except ProtocolError as exc:
            return exc
        if not principal.covers(room):
            return _unauthorized(f"token is for room {principal.room!r}, not {room!r}")
        if not principal.anonymous:
            return Admission(principal, None)
        if not allow_anonymous:
            return _unauthorized(f"room {room!r} does not admit anonymous viewers")
        if principal.expires_at - now < self.anonymous_ttl_s / 2:  # refresh: same subject
            token = self.issue(
                principal.subject, "viewer", ALL_ROOMS, self.anonymous_ttl_s, now, anonymous=True
            )
            principal = self.verify(token, now)
        return Admission(principal, token)


def origin_allowed(origin: str | None, host: str | None, allowed: Collection[str]) -> bool:
    """Whether a handshake's ``Origin`` may open a connection (docs/protocol.md, Handshake).

    - No ``Origin``: a non-browser client, which could send any Origin it
      liked: allowed (tokens and per-address limits protect the node).
    - The node's own origin: ``http``/``https`` with the host and port of the
      request's ``Host`` (a page served by this node): allowed.
    - An origin listed in ``allowed`` (exact ``scheme://host[:port]``, case-insensitive).
    - Anything else, ``null`` (sandboxed frames, files) included: refused.
    """
    if origin is None:
        return True
    normalized = origin.strip().lower().rstrip("/")
    if normalized in {a.strip().lower().rstrip("/") for a in allowed}:
        return True
    scheme, sep, authority = normalized.partition("://")
    if not sep or scheme not in ("http", "https") or host is None:
        return False
    default_port = {"http": ":80", "https": ":443"}[scheme]
    return _with_port(authority, default_port) == _with_port(host.strip().lower(), default_port)


def _with_port(authority: str, default_port: str) -> str:
    """``host[:port]`` with the scheme's default port made explicit (IPv6 in brackets)."""
    return authority if ":" in authority.rsplit("]", 1)[-1] else authority + default_port
