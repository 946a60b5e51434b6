"""FablecastClient against a scripted fake server: resume, gaps, duplicates, close codes."""

from __future__ import annotations

import asyncio
import random
import re

import msgspec
import pytest

from fablecast.client.connection import (
    Backoff,
    ConnectError,
    FablecastClient,
    FablecastClosed,
    NotConnectedError,
    ReconnectFailed,
    SeqGapError,
    new_participant_id,
)
from fablecast.protocol.codec import MSGPACK
from fablecast.protocol.messages import (
    Ping,
    Pong,
    React,
    ServerMessage,
    Snapshot,
    Token,
    Vote,
    VoteAck,
    Welcome,
)
from tests.clients.sdk_support import Conn, FakeServer, snapshot, timeout, token, welcome

FAST = Backoff(base=0.01, maximum=0.05)


async def collect(client: FablecastClient, n: int) -> list[ServerMessage]:
    """The next ``n`` messages of ``client`` (bounded in time)."""
    out: list[ServerMessage] = []
    async with asyncio.timeout(timeout(5)):
        async for msg in client:
            out.append(msg)
            if len(out) == n:
                break
    return out


def seqs(messages: list[ServerMessage]) -> list[int]:
    """The seqs of the room frames among ``messages``."""
    return [m.seq for m in messages if isinstance(m, Token)]


# --------------------------------------------------------------------------- backoff


def test_backoff_grows_exponentially_up_to_the_maximum() -> None:
    b = Backoff(base=0.5, maximum=4.0, factor=2.0, jitter=0.0)
    assert [b.delay(n) for n in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]


def test_backoff_jitter_stays_within_bounds_and_varies() -> None:
    b = Backoff(base=1.0, maximum=8.0, jitter=0.5)
    rng = random.Random(7)
    delays = [b.delay(2, rng) for _ in range(200)]
    assert all(2.0 <= d <= 4.0 for d in delays)
    assert len(set(delays)) > 100
    full = Backoff(base=1.0, maximum=8.0, jitter=1.0)
    assert all(0.0 <= full.delay(0, rng) <= 1.0 for _ in range(100))


def test_backoff_is_deterministic_with_a_seeded_rng() -> None:
    b = Backoff()
    assert [b.delay(n, random.Random(1)) for n in range(5)] == [
        b.delay(n, random.Random(1)) for n in range(5)
    ]


def test_backoff_survives_huge_attempt_numbers() -> None:
    assert Backoff(base=0.1, maximum=30.0, jitter=0.0).delay(10**6) == 30.0


@pytest.mark.parametrize(
    "kwargs",
    [{"base": -1.0}, {"factor": 0.5}, {"jitter": 1.5}, {"max_attempts": 0}, {"maximum": -1.0}],
)
def test_backoff_rejects_nonsense(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Backoff(**kwargs)  # type: ignore[arg-type]


def test_new_participant_ids_are_valid_and_distinct() -> None:
    ids = {new_participant_id() for _ in range(100)}
    assert len(ids) == 100
    assert all(re.fullmatch(r"[A-Za-z0-9_.:-]{1,64}", i) for i in ids)


def test_client_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        FablecastClient("ws://x/rooms/a", codec="xml")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        FablecastClient("ws://x/rooms/a", since=-1)


# --------------------------------------------------------------------------- streaming


async def test_fresh_join_yields_welcome_snapshot_and_frames_in_order() -> None:
    async def script(conn: Conn) -> None:
        await conn.send(welcome(seq=3, participant=conn.hello.participant), snapshot(seq=3))
        await conn.send(token(4), token(5))
        await conn.hold()

    async with FakeServer(script) as server, FablecastClient(server.url, reconnect=False) as c:
        msgs = await collect(c, 4)
        assert isinstance(msgs[0], Welcome)
        assert isinstance(msgs[1], Snapshot)
        assert seqs(msgs) == [4, 5]
        assert c.last_seq == 5
        assert c.epoch == "e1"
        hello = server.hellos[0]
        assert hello.since is None and hello.epoch is None
        assert hello.participant == c.participant
        assert hello.participant is not None and hello.participant.startswith("py-")


async def test_participant_given_by_the_caller_is_sent_and_server_choice_is_adopted() -> None:
    async def script(conn: Conn) -> None:
        await conn.send(welcome(participant="srv-7"), snapshot())
        await conn.hold()

    async with FakeServer(script) as server, FablecastClient(server.url, participant="me") as c:
        await collect(c, 2)
        assert server.hellos[0].participant == "me"
        assert c.participant == "srv-7"


async def test_duplicate_frames_are_dropped() -> None:
    async def script(conn: Conn) -> None:
        await conn.send(welcome(seq=2), snapshot(seq=2), token(1), token(2), token(3), token(3))
        await conn.send(token(2), token(4))
        await conn.hold()

    async with FakeServer(script) as server, FablecastClient(server.url, reconnect=False) as c:
        msgs = await collect(c, 4)
        assert seqs(msgs) == [3, 4]


async def test_frames_before_the_snapshot_are_held_and_reconciled() -> None:
    async def script(conn: Conn) -> None:
        # Out of spec, but harmless: live frames that overtook the snapshot.
        await conn.send(welcome(seq=5), token(5), token(6), snapshot(seq=5), token(7))
        await conn.hold()

    async with FakeServer(script) as server, FablecastClient(server.url, reconnect=False) as c:
        msgs = await collect(c, 4)
        assert [type(m).__name__ for m in msgs] == ["Welcome", "Snapshot", "Token", "Token"]
        assert seqs(msgs) == [6, 7]


async def test_seq_gap_reconnects_with_resume_and_yields_each_frame_once() -> None:
    async def script(conn: Conn) -> None:
        if conn.index == 0:
            await conn.send(welcome(seq=5, participant=conn.hello.participant))
            await conn.send(snapshot(seq=5), token(6), token(8))
        else:
            await conn.send(welcome(seq=9, recovered=True, participant=conn.hello.participant))
            await conn.send(token(7), token(8), token(9))
        await conn.hold()

    async with FakeServer(script) as server:
        async with FablecastClient(server.url, backoff=FAST, name="n") as c:
            msgs = await collect(c, 7)
            assert seqs(msgs) == [6, 7, 8, 9]
            assert isinstance(msgs[3], Welcome) and msgs[3].recovered
            assert c.last_seq == 9
        first, second = server.hellos
        assert (second.epoch, second.since) == ("e1", 6)
        assert second.participant == first.participant
        assert second.name == "n"


async def test_server_issued_identity_is_sent_back_on_every_reconnect() -> None:
    async def script(conn: Conn) -> None:
        if conn.index == 0:
            await conn.send(welcome(seq=5, participant="anon-1", identity="tok-anon-1"))
            await conn.send(snapshot(seq=5), token(6), token(8))
        else:
            await conn.send(welcome(seq=9, recovered=True, participant="anon-1", identity=None))
            await conn.send(token(7), token(8), token(9))
        await conn.hold()

    async with FakeServer(script) as server:
        async with FablecastClient(server.url, backoff=FAST) as c:
            await collect(c, 7)
            assert c.token == "tok-anon-1" and c.participant == "anon-1"
        first, second = server.hellos
        assert first.token is None and second.token == "tok-anon-1"


async def test_a_refused_anonymous_identity_is_dropped_and_a_new_one_taken() -> None:
    async def script(conn: Conn) -> None:
        if conn.index == 0:
            await conn.send(welcome(seq=5, participant="anon-1", identity="tok-1"), snapshot(seq=5))
            await conn.close(1011)  # e.g. the node restarted
        elif conn.index == 1:
            await conn.close(4401, "unauthorized")  # with new keys: tok-1 no longer verifies
        else:
            await conn.send(welcome(seq=0, participant="anon-2", identity="tok-2"), snapshot())
            await conn.hold()

    async with FakeServer(script) as server:
        async with FablecastClient(server.url, backoff=FAST) as c:
            await collect(c, 4)
            assert c.token == "tok-2" and c.participant == "anon-2"
        assert [h.token for h in server.hellos] == [None, "tok-1", None]


async def test_a_given_token_is_sent() -> None:
    async def script(conn: Conn) -> None:
        await conn.send(welcome(role="moderator"), snapshot())
        await conn.hold()

    async with FakeServer(script) as server, FablecastClient(server.url, token="op-tok") as c:
        await collect(c, 2)
        assert server.hellos[0].token == "op-tok" and c.token == "op-tok"


async def test_seq_gap_without_reconnect_raises() -> None:
    async def script(conn: Conn) -> None:
        await conn.send(welcome(seq=1), snapshot(seq=1), token(2), token(4))
        await conn.hold()

    async with FakeServer(script) as server, FablecastClient(server.url, reconnect=False) as c:
        got: list[ServerMessage] = []
        with pytest.raises(SeqGapError) as info:
            async with asyncio.timeout(timeout(5)):
                async for msg in c:
                    got.append(msg)
        assert seqs(got) == [2]
        assert (info.value.expected, info.value.got) == (3, 4)


async def test_epoch_change_mid_stream_resyncs_from_a_snapshot() -> None:
    async def script(conn: Conn) -> None:
        if conn.index == 0:
            await conn.send(welcome(seq=1), snapshot(seq=1), token(2), token(1, epoch="e2"))
        else:
            assert (conn.hello.epoch, conn.hello.since) == ("e1", 2)
            await conn.send(welcome(epoch="e2", seq=1, recovered=False))
            await conn.send(snapshot(epoch="e2", seq=1), token(2, epoch="e2"))
        await conn.hold()

    async with FakeServer(script) as server, FablecastClient(server.url, backoff=FAST) as c:
        msgs = await collect(c, 6)
        assert [type(m).__name__ for m in msgs] == [
            "Welcome", "Snapshot", "Token", "Welcome", "Snapshot", "Token",
        ]  # fmt: skip
        assert c.epoch == "e2" and c.last_seq == 2


@pytest.mark.parametrize("code", [1001, 1011, 4008])
async def test_retryable_close_codes_resume(code: int) -> None:
    async def script(conn: Conn) -> None:
        if conn.index == 0:
            await conn.send(welcome(seq=0), snapshot(seq=0), token(1), token(2))
            await conn.close(code, "bye")
            return
        await conn.send(welcome(seq=3, recovered=True), token(2), token(3))
        await conn.hold()

    async with FakeServer(script) as server, FablecastClient(server.url, backoff=FAST) as c:
        msgs = await collect(c, 6)
        assert seqs(msgs) == [1, 2, 3]
        assert server.hellos[1].since == 2
        assert c.connections == 2


async def test_abrupt_connection_loss_resumes() -> None:
    async def script(conn: Conn) -> None:
        if conn.index == 0:
            await conn.send(welcome(), snapshot(), token(1))
            await asyncio.sleep(0.05)
            conn.abort()
            return
        await conn.send(welcome(recovered=True), token(2))
        await conn.hold()

    async with FakeServer(script) as server, FablecastClient(server.url, backoff=FAST) as c:
        msgs = await collect(c, 5)
        assert seqs(msgs) == [1, 2]
        assert server.hellos[1].since == 1


@pytest.mark.parametrize("code", [4001, 4003, 4004, 4009, 4029, 4401])
async def test_fatal_close_codes_raise_with_the_code(code: int) -> None:
    async def script(conn: Conn) -> None:
        await conn.send(welcome(), snapshot())
        await conn.close(code, "nope")

    async with FakeServer(script) as server, FablecastClient(server.url, backoff=FAST) as c:
        with pytest.raises(FablecastClosed) as info:
            await collect(c, 10)
        assert info.value.code == code
        assert info.value.reason == "nope"
        assert str(code) in str(info.value)
        assert len(server.hellos) == 1


async def test_close_before_hello_is_reported_with_its_code() -> None:
    async with FakeServer(lambda conn: conn.hold()) as server:
        server.close_before_hello = (4004, "no room 'test'")
        async with FablecastClient(server.url, backoff=FAST) as c:
            with pytest.raises(FablecastClosed) as info:
                await collect(c, 1)
        assert info.value.code == 4004 and "ROOM_NOT_FOUND" in str(info.value)


async def test_normal_close_ends_iteration() -> None:
    async def script(conn: Conn) -> None:
        await conn.send(welcome(), snapshot(), token(1))
        await conn.close(1000)

    async with FakeServer(script) as server, FablecastClient(server.url, backoff=FAST) as c:
        got = [m async for m in c]
        assert seqs(got) == [1]


async def test_reconnect_gives_up_after_max_attempts() -> None:
    async def script(conn: Conn) -> None:
        await conn.send(welcome(), snapshot())
        await conn.close(1011)

    server = FakeServer(script)
    async with server:
        client = FablecastClient(server.url, backoff=Backoff(base=0.01, max_attempts=3))
        await client.connect()
    # The server is gone: every reconnect is refused.
    with pytest.raises(ReconnectFailed) as info:
        async with asyncio.timeout(timeout(5)):
            async for _ in client:
                pass
    assert info.value.attempts == 3
    await client.aclose()


async def test_first_connection_failure_raises_connect_error() -> None:
    server = FakeServer(lambda conn: conn.hold())
    async with server:
        url = server.url
    with pytest.raises(ConnectError):
        async with FablecastClient(url):
            pass


async def test_missing_welcome_counts_as_a_lost_connection() -> None:
    async def script(conn: Conn) -> None:
        if conn.index == 0:
            await conn.hold()  # never answers
            return
        await conn.send(welcome(), snapshot(), token(1))
        await conn.hold()

    async with (
        FakeServer(script) as server,
        FablecastClient(server.url, backoff=FAST, welcome_timeout=timeout(0.2)) as c,
    ):
        msgs = await collect(c, 3)
        assert seqs(msgs) == [1]
        assert len(server.hellos) == 2


async def test_unknown_message_types_are_skipped_but_keep_seq_accounting() -> None:
    async def script(conn: Conn) -> None:
        await conn.send(welcome(), snapshot(), token(1))
        await conn.send_raw(b'{"type":"fireworks","epoch":"e1","seq":2,"color":"red"}')
        await conn.send_raw(b'{"type":"confetti"}')
        await conn.send_raw(b"not json at all")
        await conn.send(token(3))
        await conn.hold()

    async with FakeServer(script) as server, FablecastClient(server.url, reconnect=False) as c:
        msgs = await collect(c, 4)
        assert seqs(msgs) == [1, 3]


async def test_resume_from_a_known_position_on_first_connect() -> None:
    async def script(conn: Conn) -> None:
        await conn.send(welcome(epoch="old", seq=12, recovered=True), token(11, epoch="old"))
        await conn.send(token(12, epoch="old"))
        await conn.hold()

    async with (
        FakeServer(script) as server,
        FablecastClient(server.url, since=10, epoch="old", reconnect=False) as c,
    ):
        msgs = await collect(c, 3)
        assert seqs(msgs) == [11, 12]
        assert (server.hellos[0].epoch, server.hellos[0].since) == ("old", 10)


# --------------------------------------------------------------------------- sending


async def test_vote_react_ping_are_sent_and_answers_yielded() -> None:
    received: list[object] = []

    async def script(conn: Conn) -> None:
        await conn.send(welcome(), snapshot())
        for _ in range(3):
            msg = await conn.recv()
            received.append(msg)
            if isinstance(msg, Vote):
                await conn.send(VoteAck(window=msg.window, option=msg.option, status="counted"))
            elif isinstance(msg, Ping):
                await conn.send(Pong(nonce=msg.nonce, server_time_ms=1))
        await conn.hold()

    async with FakeServer(script) as server, FablecastClient(server.url, reconnect=False) as c:
        with pytest.raises(NotConnectedError):
            await c.vote(1, 0)  # no welcome yet
        await collect(c, 2)
        await c.vote(3, 1)
        await c.react("joy", valence=0.5)
        nonce = await c.ping()
        answers = await collect(c, 2)
        assert answers == [
            VoteAck(window=3, option=1, status="counted"),
            Pong(nonce=nonce, server_time_ms=1),
        ]
        assert received == [
            Vote(window=3, option=1),
            React(reaction="joy", valence=0.5),
            Ping(nonce=nonce),
        ]
        with pytest.raises(ValueError):
            await c.react()
    with pytest.raises(NotConnectedError):
        await c.vote(3, 1)


async def test_msgpack_codec_uses_binary_frames() -> None:
    async def script(conn: Conn) -> None:
        await conn.send(welcome(), snapshot(), token(1))
        msg = await conn.recv()
        assert isinstance(msg, Vote)
        await conn.send(VoteAck(window=msg.window, option=msg.option, status="counted"))
        await conn.hold()

    async with (
        FakeServer(script, codec=MSGPACK) as server,
        FablecastClient(server.url, codec="msgpack", reconnect=False) as c,
    ):
        msgs = await collect(c, 3)
        assert seqs(msgs) == [1]
        await c.vote(1, 0)
        (ack,) = await collect(c, 1)
        assert isinstance(ack, VoteAck)
        assert msgspec.msgpack.decode(MSGPACK.encode(ack))["type"] == "vote_ack"
