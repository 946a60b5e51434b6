"""The SDK and the CLI against a real Fablecast node (scripted engine) on port 0."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

pytest.importorskip("fablecast.server.node")

from fablecast.client.connection import Backoff, ConnectError, FablecastClient, FablecastClosed
from fablecast.protocol.messages import ROOM_FRAME_TYPES, ServerMessage, Snapshot, Welcome
from fablecast.server.config import Config, EngineConfig, RoomConfig, ServerConfig, StoreConfig
from fablecast.server.node import Node
from tests.clients.sdk_support import timeout
from tests.clients.test_fablecast_commands import finish, read_json_until, start_cli

pytestmark = pytest.mark.integration

ROOM = "itest"
FAST = Backoff(base=0.02, maximum=0.2)


def config(port: int = 0, vote_s: float = 0.3) -> Config:
    """A fast room: quick narration, short votes."""
    return Config(
        server=ServerConfig(port=port, tick_ms=20),
        engine=EngineConfig(
            kind="scripted", options={"tokens_per_s": 200.0, "first_token_s": 0.01}
        ),
        rooms=[RoomConfig(name=ROOM, vote_s=vote_s, reveal_s=0.1, narration_tokens=20)],
        # No event log: a restart is a new epoch (the log's restarts: tests/integration).
        store=StoreConfig(enabled=False),
    )


@pytest.fixture
async def node() -> AsyncIterator[Node]:
    n = Node(config())
    await n.start()
    try:
        yield n
    finally:
        await n.stop()


def room_seqs(messages: list[ServerMessage]) -> list[int]:
    return [m.seq for m in messages if isinstance(m, ROOM_FRAME_TYPES)]


async def test_watch_json_shows_tokens_with_contiguous_seq(node: Node) -> None:
    proc = await start_cli("watch", node.url(ROOM), "--json")
    tokens: list[dict[str, Any]] = []

    def enough(msg: dict[str, Any]) -> bool:
        if msg["type"] == "token":
            tokens.append(msg)
        return len(tokens) >= 12

    lines = await read_json_until(proc, enough, seconds=40)
    code, err = await finish(proc)
    assert code == 0, err
    assert lines[0]["type"] == "welcome" and lines[1]["type"] == "snapshot"
    frames = [m for m in lines if "seq" in m and m["type"] not in ("welcome", "snapshot")]
    seqs = [m["seq"] for m in frames]
    assert seqs == list(range(lines[1]["seq"] + 1, lines[1]["seq"] + 1 + len(seqs)))
    # Tokens are room frames: their seqs are part of that contiguous run, and increase.
    token_seqs = [t["seq"] for t in tokens]
    assert token_seqs == sorted(token_seqs) and len(set(token_seqs)) == len(token_seqs)
    assert all(t["epoch"] == lines[0]["epoch"] for t in tokens)


async def test_sdk_resumes_after_its_connection_is_killed(node: Node) -> None:
    """A killed connection resumes; the consumer sees each room frame once, in order,
    and exactly the frames of a viewer who stayed connected."""
    reference: list[ServerMessage] = []
    resumed: list[ServerMessage] = []
    target: list[int] = []  # the last seq the reference must reach
    reached = asyncio.Event()

    async def watch_reference(client: FablecastClient) -> None:
        async for msg in client:
            reference.append(msg)
            if target and isinstance(msg, ROOM_FRAME_TYPES) and msg.seq >= target[0]:
                reached.set()
                return

    async with (
        FablecastClient(node.url(ROOM), reconnect=False) as ref,
        FablecastClient(node.url(ROOM), backoff=FAST) as client,
    ):
        ref_task = asyncio.create_task(watch_reference(ref))
        kills = 0
        async with asyncio.timeout(timeout(20)):
            async for msg in client:
                resumed.append(msg)
                n_frames = len(room_seqs(resumed))
                if n_frames in (5, 25) and isinstance(msg, ROOM_FRAME_TYPES) and kills < 2:
                    kills += 1
                    assert client._ws is not None
                    client._ws.transport.abort()  # the connection dies (1006)
                if n_frames >= 45:
                    break
            target.append(room_seqs(resumed)[-1])
            if not room_seqs(reference) or room_seqs(reference)[-1] < target[0]:
                await reached.wait()
        ref_task.cancel()

    welcomes = [m for m in resumed if isinstance(m, Welcome)]
    assert len(welcomes) == 3
    assert welcomes[1].recovered is True and welcomes[2].recovered is True
    assert sum(isinstance(m, Snapshot) for m in resumed) == 1
    assert client.connections == 3
    seqs = room_seqs(resumed)
    snap = next(m for m in resumed if isinstance(m, Snapshot))
    assert seqs == list(range(snap.seq + 1, snap.seq + 1 + len(seqs)))
    # Identical to the frames of the viewer who never disconnected.
    ref_snap = next(m for m in reference if isinstance(m, Snapshot))
    ref_frames = {m.seq: m for m in reference if isinstance(m, ROOM_FRAME_TYPES)}
    compared = [m for m in resumed if isinstance(m, ROOM_FRAME_TYPES) and m.seq > ref_snap.seq]
    assert len(compared) >= 40
    assert all(m == ref_frames[m.seq] for m in compared)


async def test_sdk_resyncs_from_a_snapshot_when_the_node_restarts() -> None:
    first = Node(config())
    await first.start()
    port = first.port
    got: list[ServerMessage] = []
    second: Node | None = None
    try:
        async with FablecastClient(first.url(ROOM), backoff=FAST, codec="msgpack") as client:
            async with asyncio.timeout(timeout(20)):
                async for msg in client:
                    got.append(msg)
                    if len(room_seqs(got)) == 5 and second is None:
                        await first.stop()  # clients get 1001 and retry
                        second = Node(config(port))
                        await second.start()
                    resynced = sum(isinstance(m, Snapshot) for m in got) == 2
                    if resynced and isinstance(msg, ROOM_FRAME_TYPES):
                        break
    finally:
        await first.stop()
        if second is not None:
            await second.stop()
    welcomes = [m for m in got if isinstance(m, Welcome)]
    assert welcomes[-1].recovered is False  # a new epoch: history cannot bridge it
    snaps = [m for m in got if isinstance(m, Snapshot)]
    assert snaps[0].epoch != snaps[1].epoch
    assert client.epoch == snaps[1].epoch


async def test_play_votes_from_piped_stdin_and_gets_a_vote_ack() -> None:
    node = Node(config(vote_s=3.0 * timeout(1)))  # time to answer the ballot
    await node.start()
    proc = await start_cli("play", node.url(ROOM), "--json", stdin=True)
    try:
        await read_json_until(proc, lambda m: m["type"] == "ballot", seconds=40)
        assert proc.stdin is not None
        proc.stdin.write(b"1\n")
        await proc.stdin.drain()
        lines = await read_json_until(proc, lambda m: m["type"] in ("vote_ack", "error"))
        assert lines[-1]["type"] == "vote_ack", lines[-1]
        assert lines[-1]["option"] == 0 and lines[-1]["status"] == "counted"
        proc.stdin.write(b"q\n")
        await proc.stdin.drain()
        async with asyncio.timeout(timeout(30)):
            _, err = await proc.communicate()
        assert proc.returncode == 0, err
    finally:
        if proc.returncode is None:
            await finish(proc)
        await node.stop()


@pytest.mark.parametrize(("path", "code"), [("/rooms/nope", 4004), ("/rooms/bad.name", 4003)])
async def test_sdk_reports_fatal_close_codes_of_the_node(node: Node, path: str, code: int) -> None:
    url = f"ws://127.0.0.1:{node.port}{path}"
    with pytest.raises(FablecastClosed) as info:
        async with FablecastClient(url, backoff=FAST) as client, asyncio.timeout(timeout(5)):
            async for _ in client:
                pass
    assert info.value.code == code


async def test_sdk_reports_an_http_refusal_at_connect(node: Node) -> None:
    with pytest.raises(ConnectError, match="404"):
        async with FablecastClient(f"ws://127.0.0.1:{node.port}/elsewhere"):
            pass


async def test_watch_of_a_missing_room_exits_1(node: Node) -> None:
    proc = await start_cli("watch", node.url("nope"))
    async with asyncio.timeout(timeout(30)):
        _, err = await proc.communicate()
    assert proc.returncode == 1
    assert "4004" in err.decode() and "Traceback" not in err.decode()
