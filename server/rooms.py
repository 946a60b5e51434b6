"""The node's room registry: open, close, look up and describe rooms.

Each open room is a ``RoomRunner`` (``fablecast.server.room.runner``) with its
stream and local fan-out. The registry is also where the scheduler's per-room
narrator status and the rooms' audience sizes meet: the scheduler reports to
``narrator_status``, sessions report joins and leaves through ``audience_changed``.

The event log (``fablecast.server.store``) opens rooms with ``start=False``,
restores them, then starts them; ``journal`` is its writer, handed to every
runner so rooms append what they commit. Where later parts plug in: a broker
makes a room owned by one node of several.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator

from fablecast.inference.narrator import Narrator
from fablecast.inference.prompts import StorySpec, story_spec
from fablecast.inference.scheduled import ScheduledEngine
from fablecast.inference.story.spec import load_spec
from fablecast.protocol import messages as m
from fablecast.server.config import RoomConfig, ServerConfig
from fablecast.server.fanout import Fanout
from fablecast.server.history import History
from fablecast.server.metrics import Metrics
from fablecast.server.room import effects as fx
from fablecast.server.room.runner import RoomRunner
from fablecast.server.room.state import Room
from fablecast.server.store.writer import StoreWriter
from fablecast.server.stream import RoomStream


class RoomError(ValueError):
    """A room cannot be opened (name taken, node full)."""


class RoomRegistry:
    """The open rooms of a node, by name (a read-only mapping to their runners)."""

    def __init__(
        self,
        config: ServerConfig,
        engine: ScheduledEngine,
        narrator: Narrator,
        metrics: Metrics,
        clock: Callable[[], float],
    ) -> None:
        self.config = config
        self.engine = engine
        self.narrator = narrator
        self.metrics = metrics
        self.clock = clock
        #: Whether the engine is warm: rooms opened before wait to start.
        self.engine_ready = False
        self._rooms: dict[str, RoomRunner] = {}
        self._configs: dict[str, RoomConfig] = {}
        #: The event log's writer: rooms append what they commit (None: no log).
        self.journal: StoreWriter | None = None

    # ------------------------------------------------------------------ mapping

    def __getitem__(self, name: str) -> RoomRunner:
        return self._rooms[name]

    def __contains__(self, name: object) -> bool:
        return name in self._rooms

    def __iter__(self) -> Iterator[str]:
        return iter(self._rooms)

    def __len__(self) -> int:
        return len(self._rooms)

    def get(self, name: str) -> RoomRunner | None:
        """The open room ``name``, or None."""
        return self._rooms.get(name)

    def values(self) -> list[RoomRunner]:
        """The open rooms (a copy)."""
        return list(self._rooms.values())

    def config_of(self, name: str) -> RoomConfig:
        """The config room ``name`` was opened with."""
        return self._configs[name]

    # ------------------------------------------------------------------ lifecycle

    def open(self, rc: RoomConfig, *, start: bool = True) -> RoomRunner:
        """Create and start a room from its config; ``RoomError`` if it cannot be.

        ``start=False`` leaves it unstarted (the event log restores it first,
        then ``runner.start()``; ``discard`` if that fails).
        """
        if rc.name in self._rooms:
            raise RoomError(f"room {rc.name!r} already exists")
        if len(self._rooms) >= self.config.max_rooms:
            raise RoomError("max_rooms reached")
        s = self.config
        room = Room(rc.name, rc.settings())
        clock = self.clock
        stream = RoomStream(
            rc.name,
            state=lambda kind: room.state_frame(kind, clock()),
            metrics=self.metrics,
            history=History(s.history_frames, s.history_bytes),
        )
        fanout = Fanout(self.metrics, outbox_max_bytes=s.outbox_max_bytes)
        runner = RoomRunner(
            room,
            stream=stream,
            fanout=fanout,
            narrator=self.narrator,
            spec=_spec(rc),
            metrics=self.metrics,
            clock=clock,
            journal=self.journal,
        )
        self._rooms[rc.name] = runner
        self._configs[rc.name] = rc
        self.metrics.rooms.set(len(self._rooms))
        if start:
            runner.start(engine_ready=self.engine_ready)
        return runner

    def discard(self, name: str) -> None:
        """Forget a room that never started (its restore failed)."""
        self._rooms.pop(name, None)
        self._configs.pop(name, None)
        self.metrics.rooms.set(len(self._rooms))

    async def close_all(self) -> None:
        """Stop every room's timers and engine requests (a failure in one stops no other)."""
        runners = self.values()
        await asyncio.gather(*(r.close() for r in runners), return_exceptions=True)
        for runner in runners:
            with contextlib.suppress(Exception):
                await self.engine.cancel_room(runner.name)

    # ------------------------------------------------------------------ the tick

    def flush(self) -> list[tuple[str, Exception]]:
        """Flush every room; returns the rooms whose flush failed (the others went on)."""
        failed: list[tuple[str, Exception]] = []
        for runner in self._rooms.values():
            try:
                runner.flush()
            except Exception as exc:
                failed.append((runner.name, exc))
        return failed

    # ------------------------------------------------------------------ signals in

    def narrator_status(self, room: str, state: m.NarratorState, message: str = "") -> None:
        """The scheduler's callback: the room (sole owner of narrator state) decides."""
        runner = self._rooms.get(room)
        if runner is not None:
            runner.dispatch(fx.NarratorStatus(state, message))

    def set_engine_ready(self) -> None:
        """The engine is warm: every room waiting to start begins."""
        self.engine_ready = True
        for runner in self.values():
            runner.dispatch(fx.EngineReady())

    def audience_changed(self, runner: RoomRunner) -> None:
        """A viewer joined or left ``runner``'s room: the scheduler weighs rooms by audience."""
        self.engine.set_audience(runner.name, runner.viewer_count)


def _spec(rc: RoomConfig) -> StorySpec:
    """The room's story spec: its ``story`` (validated at config load), else title and premise."""
    return load_spec(rc.story) if rc.story else story_spec(rc.title, rc.premise, rc.style)
