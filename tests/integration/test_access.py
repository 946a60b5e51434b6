"""The auth matrix from outside: token faults x rooms, roles x actions, Origins.

A real node on port 0 with a signing key, an anonymous room (``demo``) and a
token-only room (``vip``). Every case that must be refused is refused with its
documented error or status, and a refusal changes no state: no viewer, no
vote, no mood sample, no connection left counted.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator

import jwt
import pytest
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from fablecast.inference.backends.scripted import ScriptedEngine
from fablecast.protocol import messages as m
from fablecast.protocol.codes import ErrorCode
from fablecast.server.auth import PERMISSIONS, ROLES, Action
from fablecast.server.config import AuthConfig, Config, EngineConfig, RoomConfig, ServerConfig
from fablecast.server.node import Node
from fablecast.server.room import effects as fx
from tests.integration.ws_harness import FAST_ROOM, Client, connect
from tests.support import scaled, wait_for

pytestmark = pytest.mark.integration

#: Events that clients' messages cause (timers and the engine cause the others).
CLIENT_EVENTS = (fx.VoteCast, fx.ReactionSent, fx.ViewerJoined, fx.ViewerLeft)
SECRET = "matrix-secret-matrix-secret-0123456789"
ALLOWED = "https://stream.example"


@pytest.fixture
async def node() -> AsyncIterator[Node]:
    room = {**FAST_ROOM, "vote_s": 60.0}  # one long window for the whole matrix
    config = Config(
        server=ServerConfig(port=0, tick_ms=20),
        engine=EngineConfig(kind="scripted", stall_timeout_s=0.5),
        auth=AuthConfig(keys={"k1": SECRET}, allowed_origins=[ALLOWED]),
        rooms=[RoomConfig(name="demo", **room), RoomConfig(name="vip", anonymous=False, **room)],
    )
    n = Node(config, engine=ScriptedEngine(tokens_per_s=400, first_token_s=0.01))
    await n.start()
    n.events = _events(n)  # type: ignore[attr-defined]
    yield n
    await n.stop()


def _events(node: Node) -> list[object]:
    """Every event clients' messages brought to the rooms (a spy on ``dispatch``)."""
    seen: list[object] = []
    for runner in node.rooms.values():
        original = runner.dispatch

        def spy(event: object, origin: object = None, _original: object = original) -> None:
            if isinstance(event, CLIENT_EVENTS):
                seen.append(event)
            _original(event, origin)  # type: ignore[operator]

        runner.dispatch = spy  # type: ignore[method-assign]
    return seen


def _state(node: Node) -> dict[str, object]:
    """Everything a refused attempt must leave as it was."""
    out: dict[str, object] = {}
    for name in ("demo", "vip"):
        room = node.rooms[name].room
        window = room.window
        out[name] = (dict(room.viewers), {} if window is None else dict(window.votes))
    out["connections"] = node.admission.addresses.connections("127.0.0.1")
    out["events"] = len(node.events)  # type: ignore[attr-defined]
    return out


async def _settled(node: Node) -> dict[str, object]:
    """The state once the connections of earlier cases are gone."""
    assert await wait_for(lambda: node.admission.addresses.connections("127.0.0.1") == 0, 2)
    assert await wait_for(lambda: not any(r.room.viewers for r in node.rooms.values()), 2)
    return _state(node)


def _tokens(node: Node) -> dict[str, tuple[str | None, dict[str, bool]]]:
    """Token faults: name -> (hello.token, {room: admitted?})."""
    auth = node.admission.authenticator
    now = time.time()
    viewer = auth.issue("ada", "viewer", "demo", 600, now)
    head, body, sig = viewer.split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=="))
    promoted = base64.urlsafe_b64encode(json.dumps({**claims, "role": "host"}).encode())
    forged = f"{head}.{promoted.rstrip(b'=').decode()}.{sig}"
    none_alg = base64.urlsafe_b64encode(b'{"alg":"none","kid":"k1"}').rstrip(b"=").decode()
    both = {"demo": True, "vip": True}
    neither = {"demo": False, "vip": False}
    return {
        "none": (None, {"demo": True, "vip": False}),
        "anonymous": (auth.issue_anonymous(now), {"demo": True, "vip": False}),
        "viewer-demo": (viewer, {"demo": True, "vip": False}),
        "viewer-vip": (auth.issue("bo", "viewer", "vip", 600, now), {"demo": False, "vip": True}),
        "host-all": (auth.issue("h", "host", "*", 600, now), both),
        "expired": (auth.issue("ada", "viewer", "*", 60, now - 120), neither),
        "future": (auth.issue("ada", "viewer", "*", 600, now + 3600), neither),
        "forged": (forged, neither),
        "alg-none": (f"{none_alg}.{promoted.rstrip(b'=').decode()}.", neither),
        "unknown-key": (
            jwt.encode({**claims, "room": "*"}, SECRET, "HS256", {"kid": "k9"}),
            neither,
        ),
        "other-key": (
            jwt.encode({**claims, "room": "*"}, SECRET[::-1], "HS256", {"kid": "k1"}),
            neither,
        ),
        "garbage": ("not-a-token", neither),
    }


async def _hello(
    node: Node, room: str, token: str | None
) -> tuple[bool, m.ServerMessage, int | None]:
    """(admitted, first message, close code when refused)."""
    c = await connect(node, room=room, hello=m.Hello(token=token, participant="claimed-id"))
    first = await c.recv()
    if isinstance(first, m.Welcome):
        await c.ws.close()
        return True, first, None
    try:
        await c.recv()
    except ConnectionClosed as exc:
        return False, first, exc.rcvd.code if exc.rcvd else None
    raise AssertionError("a refused hello must be closed")


async def test_token_faults_by_room(node: Node) -> None:
    cases = refused = 0
    tokens = _tokens(node)
    for name, (token, expected) in tokens.items():
        for room, admitted in expected.items():
            before = await _settled(node)
            ok, first, code = await _hello(node, room, token)
            cases += 1
            assert ok is admitted, (name, room, first)
            if ok:
                assert isinstance(first, m.Welcome) and first.participant != "claimed-id"
                continue
            refused += 1
            assert isinstance(first, m.Error), (name, room)
            assert (first.code, first.ref, code) == (ErrorCode.UNAUTHORIZED, "hello", 4401)
            assert await wait_for(lambda b=before: _state(node) == b, 2), (
                name,
                room,
                before,
                _state(node),
            )
    print(f"\ntoken faults: {cases} cases, {refused} refused as they must be, no state changed")
    assert refused == sum(not ok for _, rooms in tokens.values() for ok in rooms.values()) == 18


async def _joined(node: Node, role: str) -> Client:
    token = node.admission.authenticator.issue(f"{role}-1", role, "demo", 600, time.time())  # type: ignore[arg-type]
    c = await connect(node, hello=m.Hello(token=token))
    welcome = await c.recv()
    assert isinstance(welcome, m.Welcome) and welcome.role == role and welcome.identity is None
    return c


async def test_roles_by_action(node: Node) -> None:
    watcher = await connect(node)
    ballot = await watcher.until(lambda f: isinstance(f, m.Ballot))
    assert isinstance(ballot, m.Ballot)
    messages: dict[Action, m.ClientMessage] = {
        Action.VOTE: m.Vote(window=ballot.window, option=0),
        Action.REACT: m.React(reaction="fear"),
        Action.PING: m.Ping(nonce=7),
    }
    answers = {Action.VOTE: m.VoteAck, Action.REACT: None, Action.PING: m.Pong}
    cases = refused = 0
    for role in ROLES:
        c = await _joined(node, role)
        for action, msg in messages.items():
            cases += 1
            before = _state(node)
            await c.send(msg)
            if action in PERMISSIONS[role]:
                if answers[action] is not None:
                    await c.until(lambda f, t=answers[action]: isinstance(f, t))  # type: ignore[misc]
                continue
            refused += 1
            err = await c.until(lambda f: isinstance(f, m.Error))
            assert isinstance(err, m.Error) and err.code is ErrorCode.FORBIDDEN, (role, action)
            assert err.ref == action.value
            assert _state(node) == before, (role, action)
        await c.ws.close()
    await watcher.ws.close()
    print(f"\nroles x actions: {cases} cases, {refused} refused as they must be, no state changed")
    assert refused == 2  # the overlay's vote and reaction


async def test_origins(node: Node) -> None:
    url = f"ws://127.0.0.1:{node.port}/rooms/demo"
    own = f"http://127.0.0.1:{node.port}"
    cases = {None: True, own: True, ALLOWED: True, "https://evil.example": False, "null": False}
    cases[f"http://127.0.0.1:{node.port + 1}"] = False
    for origin, allowed in cases.items():
        before = await _settled(node)
        headers = {} if origin is None else {"Origin": origin}
        if allowed:
            async with websockets.connect(url, additional_headers=headers) as ws:
                await ws.send(json.dumps({"type": "hello"}))
                assert json.loads(await ws.recv())["type"] == "welcome"
            continue
        with pytest.raises(InvalidStatus) as info:
            await websockets.connect(url, additional_headers=headers, open_timeout=scaled(5))
        assert info.value.response.status_code == 403, origin
        assert _state(node) == before
    print(f"\norigins: {len(cases)} cases, {sum(not a for a in cases.values())} refused with 403")
