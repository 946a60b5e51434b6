"""server/keepalive.py: one sweep pings every connection and times out unanswered pings."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest
from websockets.exceptions import ConnectionClosedError
from websockets.protocol import State

from fablecast.server.keepalive import KeepAlive


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class FakeTransport:
    def __init__(self) -> None:
        self.buffered = 0

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return (16, 65536)


class FakeConn:
    def __init__(self) -> None:
        self.protocol = SimpleNamespace(state=State.OPEN)
        self.transport = FakeTransport()
        self.pings: list[asyncio.Future[float]] = []
        self.closed_error = False

    async def ping(self) -> asyncio.Future[float]:
        if self.closed_error:
            raise ConnectionClosedError(None, None)
        fut: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self.pings.append(fut)
        return fut

    def pong(self) -> None:
        self.pings[-1].set_result(0.001)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def timed_out() -> list[FakeConn]:
    return []


@pytest.fixture
def ka(clock: Clock, timed_out: list[FakeConn]) -> KeepAlive[FakeConn]:
    return KeepAlive(20.0, 10.0, timed_out.append, clock=clock)


async def test_first_ping_after_interval_then_every_interval(
    ka: KeepAlive[FakeConn], clock: Clock
) -> None:
    conn = FakeConn()
    ka.add(conn)
    clock.t += 19.9
    await ka.sweep()
    assert conn.pings == []
    clock.t += 0.1
    await ka.sweep()
    assert len(conn.pings) == 1
    conn.pong()
    clock.t += 19.9
    await ka.sweep()
    assert len(conn.pings) == 1
    clock.t += 0.1
    await ka.sweep()
    assert len(conn.pings) == 2


async def test_answered_pings_never_time_out(
    ka: KeepAlive[FakeConn], clock: Clock, timed_out: list[FakeConn]
) -> None:
    conn = FakeConn()
    ka.add(conn)
    for _ in range(10):
        clock.t += 20.0
        await ka.sweep()
        clock.t += 9.0
        conn.pong()
        await ka.sweep()
    assert len(conn.pings) == 10 and timed_out == [] and ka.timeouts == 0


async def test_unanswered_ping_times_out_once(
    ka: KeepAlive[FakeConn], clock: Clock, timed_out: list[FakeConn]
) -> None:
    quiet, lively = FakeConn(), FakeConn()
    ka.add(quiet)
    ka.add(lively)
    clock.t += 20.0
    await ka.sweep()
    lively.pong()
    clock.t += 9.9
    await ka.sweep()
    assert timed_out == []
    clock.t += 0.1
    await ka.sweep()
    assert timed_out == [quiet] and ka.timeouts == 1
    # No second ping while waiting, and no second timeout for the same ping.
    assert len(quiet.pings) == 1
    await ka.sweep()
    assert timed_out == [quiet]


async def test_no_ping_while_the_write_buffer_is_over_its_low_water_mark(
    ka: KeepAlive[FakeConn], clock: Clock
) -> None:
    # Writing may still be paused between the marks: ping() would wait in drain().
    conn = FakeConn()
    conn.transport.buffered = 17
    ka.add(conn)
    clock.t += 25.0
    await ka.sweep()
    assert conn.pings == []
    conn.transport.buffered = 16
    await ka.sweep()
    assert len(conn.pings) == 1


async def test_closing_and_discarded_connections_are_left_alone(
    ka: KeepAlive[FakeConn], clock: Clock, timed_out: list[FakeConn]
) -> None:
    closing, gone, closed = FakeConn(), FakeConn(), FakeConn()
    closing.protocol.state = State.CLOSING
    closed.closed_error = True
    for conn in (closing, gone, closed):
        ka.add(conn)
    ka.discard(gone)
    ka.discard(gone)
    assert len(ka) == 2
    clock.t += 40.0
    await ka.sweep()
    clock.t += 40.0
    await ka.sweep()
    assert closing.pings == gone.pings == closed.pings == [] and timed_out == []


def test_sweep_period_follows_the_shortest_setting() -> None:
    assert KeepAlive(20.0, 20.0, print).step_s == 1.0
    assert KeepAlive(0.4, 2.0, print).step_s == pytest.approx(0.1)
    assert KeepAlive(2.0, 0.2, print).step_s == pytest.approx(0.05)
