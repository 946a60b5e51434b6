"""server/auth.py: tokens verify only when they must; admission and the role table."""

from __future__ import annotations

import base64
import json

import jwt
import pytest

from fablecast.protocol.codes import ErrorCode
from fablecast.protocol.errors import ProtocolError
from fablecast.server.auth import (
    ALL_ROOMS,
    ANONYMOUS_TTL_S,
    KEYS_ENV,
    PERMISSIONS,
    ROLES,
    Action,
    Admission,
    Authenticator,
    KeyRing,
    Principal,
    authorize,
    origin_allowed,
)

NOW = 1_800_000_000.0
K1 = b"k1-secret-k1-secret-k1-secret-k1-secret"
K2 = b"k2-secret-k2-secret-k2-secret-k2-secret"


@pytest.fixture
def auth() -> Authenticator:
    return Authenticator(KeyRing({"k1": K1}, "k1"))


def _refusal(auth: Authenticator, token: str, now: float = NOW) -> str:
    with pytest.raises(ProtocolError) as info:
        auth.verify(token, now)
    assert info.value.code is ErrorCode.UNAUTHORIZED
    return info.value.message


def _b64(obj: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


def test_issue_then_verify_round_trips(auth: Authenticator) -> None:
    token = auth.issue("mod-1", "moderator", "demo", 3600, NOW)
    assert jwt.get_unverified_header(token) == {"alg": "HS256", "kid": "k1", "typ": "JWT"}
    assert auth.verify(token, NOW + 10) == Principal(
        "mod-1", "moderator", "demo", False, NOW + 3600
    )


def test_expired_and_future_tokens_are_refused(auth: Authenticator) -> None:
    token = auth.issue("v", "viewer", "demo", 60, NOW)
    assert auth.verify(token, NOW + 59).subject == "v"
    assert "expired" in _refusal(auth, token, NOW + 60)
    assert "future" in _refusal(auth, auth.issue("v", "viewer", "demo", 600, NOW + 120), NOW)


def test_forged_tokens_are_refused(auth: Authenticator) -> None:
    token = auth.issue("v", "viewer", "demo", 60, NOW)
    head, body, sig = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=="))
    promoted = _b64({**claims, "role": "host"})
    assert "signature" in _refusal(auth, f"{head}.{promoted}.{sig}")
    other = Authenticator(KeyRing({"k1": K2}, "k1")).issue("v", "host", "demo", 60, NOW)
    assert "signature" in _refusal(auth, other)
    unsigned = f"{_b64({'alg': 'none', 'kid': 'k1'})}.{promoted}."
    assert _refusal(auth, unsigned)
    assert "unknown key" in _refusal(auth, jwt.encode(claims, K1, "HS256", {"kid": "k9"}))
    assert "unknown key" in _refusal(auth, jwt.encode(claims, K1, "HS256"))  # no kid
    assert "not a signed token" in _refusal(auth, "hello")
    assert _refusal(auth, jwt.encode(claims, K1 + K1, "HS512", {"kid": "k1"}))  # other alg


@pytest.mark.parametrize(
    "change",
    [
        {"sub": "has space"},
        {"sub": ""},
        {"sub": 7},
        {"role": "admin"},
        {"room": "bad room"},
        {"room": None},
        {"iss": "someone"},
        {"exp": "soon"},
        {"exp": True},
        {"anon": "yes"},
        {"anon": True, "role": "host"},
        {"anon": True, "room": "demo"},
    ],
)
def test_malformed_claims_are_refused(auth: Authenticator, change: dict[str, object]) -> None:
    claims = {"iss": "fablecast", "sub": "v", "role": "viewer", "room": "*", "iat": NOW}
    claims |= {"exp": NOW + 60, **change}
    assert _refusal(auth, jwt.encode(claims, K1, "HS256", {"kid": "k1"}))


@pytest.mark.parametrize("missing", ["iss", "sub", "role", "room", "iat", "exp"])
def test_every_claim_is_required(auth: Authenticator, missing: str) -> None:
    claims = {"iss": "fablecast", "sub": "v", "role": "viewer", "room": "*", "iat": NOW}
    claims["exp"] = NOW + 60
    del claims[missing]
    assert _refusal(auth, jwt.encode(claims, K1, "HS256", {"kid": "k1"}))


def test_rotation_signs_with_current_and_verifies_with_all() -> None:
    old = Authenticator(KeyRing({"k1": K1}, "k1")).issue("v", "viewer", "demo", 60, NOW)
    rotated = Authenticator(KeyRing({"k2": K2, "k1": K1}, "k2"))
    assert rotated.verify(old, NOW).subject == "v"
    new = rotated.issue("w", "viewer", "demo", 60, NOW)
    assert jwt.get_unverified_header(new)["kid"] == "k2"
    retired = Authenticator(KeyRing({"k2": K2}, "k2"))
    assert retired.verify(new, NOW).subject == "w"
    assert "unknown key" in _refusal(retired, old)


def test_key_ring_sources() -> None:
    env = {KEYS_ENV: f"k2:{K2.decode()}, k1:{K1.decode()}"}
    ring = KeyRing.from_config({"k1": K1.decode()}, None, env)
    assert ring is not None and ring.current == "k2" and set(ring.keys) == {"k1", "k2"}
    ring = KeyRing.from_config({"k1": K1.decode(), "k2": K2.decode()}, "k2", {})
    assert ring is not None and ring.current == "k2"
    assert KeyRing.from_config({}, None, {}) is None
    with pytest.raises(ValueError, match="shorter"):
        KeyRing({"k1": b"short"}, "k1")
    with pytest.raises(ValueError, match="not in the ring"):
        KeyRing({"k1": K1}, "k2")
    with pytest.raises(ValueError, match="pairs"):
        KeyRing.parse("no-colon")
    assert KeyRing.ephemeral().current.startswith("ephemeral-")


def test_issue_refuses_bad_claims(auth: Authenticator) -> None:
    for subject, role, room, ttl in [
        ("a b", "viewer", "demo", 60),
        ("a", "admin", "demo", 60),
        ("a", "viewer", "a/b", 60),
        ("a", "viewer", "demo", 0),
    ]:
        with pytest.raises(ValueError):
            auth.issue(subject, role, room, ttl, NOW)  # type: ignore[arg-type]


# ---------------------------------------------------------------- admission


def test_no_token_gets_a_fresh_anonymous_identity(auth: Authenticator) -> None:
    a = auth.admit(None, "demo", allow_anonymous=True, now=NOW)
    b = auth.admit(None, "demo", allow_anonymous=True, now=NOW)
    assert isinstance(a, Admission) and isinstance(b, Admission)
    assert a.identity is not None and a.principal.subject.startswith("anon-")
    assert a.principal.subject != b.principal.subject
    assert a.principal == Principal(
        a.principal.subject, "viewer", ALL_ROOMS, True, NOW + ANONYMOUS_TTL_S
    )


def test_anonymous_identity_survives_reconnects_and_rooms(auth: Authenticator) -> None:
    first = auth.admit(None, "demo", allow_anonymous=True, now=NOW)
    assert isinstance(first, Admission) and first.identity is not None
    again = auth.admit(first.identity, "other", allow_anonymous=True, now=NOW + 3600)
    assert isinstance(again, Admission)
    assert again.principal.subject == first.principal.subject
    assert again.identity == first.identity  # fresh enough: handed back as is


def test_anonymous_identity_is_refreshed_past_half_its_life(auth: Authenticator) -> None:
    first = auth.admit(None, "demo", allow_anonymous=True, now=NOW)
    assert isinstance(first, Admission) and first.identity is not None
    later = NOW + ANONYMOUS_TTL_S * 0.75
    again = auth.admit(first.identity, "demo", allow_anonymous=True, now=later)
    assert isinstance(again, Admission) and again.identity != first.identity
    assert again.principal.subject == first.principal.subject
    assert again.principal.expires_at == int(later + ANONYMOUS_TTL_S)


def test_rooms_without_anonymous_viewers(auth: Authenticator) -> None:
    refused = auth.admit(None, "vip", allow_anonymous=False, now=NOW)
    assert isinstance(refused, ProtocolError) and refused.code is ErrorCode.UNAUTHORIZED
    anon = auth.issue_anonymous(NOW)
    refused = auth.admit(anon, "vip", allow_anonymous=False, now=NOW)
    assert isinstance(refused, ProtocolError) and "anonymous" in refused.message
    token = auth.issue("ada", "viewer", "vip", 60, NOW)
    admitted = auth.admit(token, "vip", allow_anonymous=False, now=NOW)
    assert isinstance(admitted, Admission) and admitted.identity is None
    assert admitted.principal.subject == "ada"


def test_wrong_room_tokens_are_refused(auth: Authenticator) -> None:
    token = auth.issue("m", "moderator", "demo", 60, NOW)
    refused = auth.admit(token, "other", allow_anonymous=True, now=NOW)
    assert isinstance(refused, ProtocolError) and refused.code is ErrorCode.UNAUTHORIZED
    everywhere = auth.issue("h", "host", ALL_ROOMS, 60, NOW)
    assert isinstance(auth.admit(everywhere, "other", allow_anonymous=False, now=NOW), Admission)


def test_bad_token_is_refused_even_where_anonymous_is_allowed(auth: Authenticator) -> None:
    refused = auth.admit("garbage", "demo", allow_anonymous=True, now=NOW)
    assert isinstance(refused, ProtocolError) and refused.code is ErrorCode.UNAUTHORIZED


# ---------------------------------------------------------------- authorization


def test_role_table() -> None:
    assert set(PERMISSIONS) == set(ROLES)
    expected = {
        "viewer": {"watch", "ping", "vote", "react"},
        "overlay": {"watch", "ping"},
        "moderator": {"watch", "ping", "vote", "react", "moderate"},
        "host": {"watch", "ping", "vote", "react", "moderate", "host"},
    }
    assert {role: {a.value for a in actions} for role, actions in PERMISSIONS.items()} == expected


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("action", list(Action))
def test_authorize(role: str, action: Action) -> None:
    principal = Principal("s", role, "demo", False, NOW + 60)  # type: ignore[arg-type]
    error = authorize(principal, action, "demo")
    if action in PERMISSIONS[principal.role]:
        assert error is None
    else:
        assert error is not None and error.code is ErrorCode.FORBIDDEN
        assert role in error.message and action.value in error.message
    elsewhere = authorize(principal, action, "other")
    assert elsewhere is not None and elsewhere.code is ErrorCode.FORBIDDEN


@pytest.mark.parametrize(
    ("origin", "host", "allowed", "ok"),
    [
        (None, "node:8765", [], True),  # non-browser client
        ("http://node:8765", "node:8765", [], True),  # a page of the node itself
        ("https://node:8765", "node:8765", [], True),
        ("HTTP://Node:8765/", "node:8765", [], True),
        ("https://node", "node:443", [], True),
        ("http://node:80", "node", [], True),
        ("http://evil.example", "node:8765", [], False),
        ("http://node:9999", "node:8765", [], False),
        ("http://node:8765.evil.example", "node:8765", [], False),
        ("null", "node:8765", [], False),
        ("file://", "node:8765", [], False),
        ("ws://node:8765", "node:8765", [], False),
        ("http://node:8765", None, [], False),
        ("https://stream.example", "node:8765", ["https://stream.example"], True),
        ("https://stream.example", "node:8765", ["https://STREAM.example/"], True),
        ("http://stream.example", "node:8765", ["https://stream.example"], False),
        ("null", "node:8765", ["null"], True),
    ],
)
def test_origin_allowed(origin: str | None, host: str | None, allowed: list[str], ok: bool) -> None:
    assert origin_allowed(origin, host, allowed) is ok
