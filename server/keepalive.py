"""Keepalive for every connection of a node from one periodic sweep.

websockets' own keepalive runs one task per connection, each sleeping on its
own timer: about 1.5 KiB per connection (task, coroutine frames, timer handle,
task registry entry) and a timer wake-up per connection per interval. With
thousands of viewers per room that is a tenth of what a connection costs, so
the node switches it off (``ping_interval=None``) and keeps this instead: one
small record per connection and one sweep every ``step_s``. Same rules as
websockets':

- a connection is pinged ``interval_s`` after it opened, then ``interval_s``
  after each ping (pong or not);
- a ping whose pong has not arrived ``timeout_s`` after it was sent ends the
  connection: ``on_timeout`` (the node closes it with 1011, as websockets does);
- a connection whose write buffer is above its low-water mark is not pinged
  this sweep (its writing may be paused, and websockets' keepalive would wait
  in ``drain`` too); falling behind on room frames is the fan-out's business (4008).

Pings go through ``ServerConnection.ping()``, so websockets matches pongs and
keeps ``connection.latency`` up to date as before.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

log = logging.getLogger(__name__)


class _Transport(Protocol):
    def get_write_buffer_size(self) -> int: ...
    def get_write_buffer_limits(self) -> tuple[int, int]: ...


class _Protocol(Protocol):
    @property
    def state(self) -> State: ...


class Pingable(Protocol):
    """What the sweep needs of a connection (a websockets ``ServerConnection``)."""

    @property
    def protocol(self) -> _Protocol: ...
    @property
    def transport(self) -> _Transport: ...
    async def ping(self) -> Awaitable[float]: ...


C = TypeVar("C", bound=Pingable)


@dataclass(slots=True)
class _Ping:
    next_at: float
    sent_at: float = 0.0
    waiter: asyncio.Future[float] | None = None


class KeepAlive(Generic[C]):
    """Ping every connection every ``interval_s``; time out unanswered pings."""

    def __init__(
        self,
        interval_s: float,
        timeout_s: float,
        on_timeout: Callable[[C], None],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.on_timeout = on_timeout
        #: Sweep period: fine enough that pings and timeouts are late by at most
        #: a quarter of their period, and at most a second.
        self.step_s = min(1.0, interval_s / 4, timeout_s / 4)
        self._clock = clock
        self._conns: dict[C, _Ping] = {}
        self.timeouts = 0

    def __len__(self) -> int:
        return len(self._conns)

    def add(self, conn: C) -> None:
        """Start watching ``conn`` (first ping ``interval_s`` from now)."""
        self._conns[conn] = _Ping(self._clock() + self.interval_s)

    def discard(self, conn: C) -> None:
        """Stop watching ``conn`` (idempotent)."""
        self._conns.pop(conn, None)

    async def sweep(self) -> None:
        """Ping connections that are due and end those whose pong is overdue."""
        now = self._clock()
        for conn, st in list(self._conns.items()):
            if conn.protocol.state is not State.OPEN:
                continue  # closing: its handler discards it when it is gone
            if st.waiter is not None:
                if not st.waiter.done():
                    if now - st.sent_at < self.timeout_s:
                        continue  # still waiting for its pong
                    st.waiter = None
                    st.next_at = now + self.interval_s
                    self.timeouts += 1
                    self.on_timeout(conn)
                    continue
                st.waiter = None
            if now < st.next_at:
                continue
            transport = conn.transport
            if transport.get_write_buffer_size() > transport.get_write_buffer_limits()[0]:
                # ping() could wait in websockets' drain(), holding up the whole
                # sweep: writing is paused past the high-water mark and resumes
                # only once the buffer is back under the low-water mark.
                continue  # try again next sweep
            try:
                # Does not suspend: the connection is open and its buffer is under
                # the low-water mark, so writing is not paused and drain() returns.
                # websockets hands back the pong's future (typed as an awaitable).
                st.waiter = asyncio.ensure_future(await conn.ping())
            except ConnectionClosed:
                continue
            st.sent_at, st.next_at = now, now + self.interval_s

    async def run(self) -> None:
        """Sweep every ``step_s`` until cancelled."""
        while True:
            await asyncio.sleep(self.step_s)
            try:
                await self.sweep()
            except Exception:  # pragma: no cover - a bug here must not stop keepalive
                log.exception("keepalive sweep failed")
