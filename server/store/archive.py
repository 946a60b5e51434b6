"""The node's side of the event log: open it, restore rooms, save streams, rewind and fork.

Lifecycle (``Node.start`` / ``Node.stop``):

1. ``open``: open the log (a corrupt, foreign or newer database, or an
   unreachable PostgreSQL, stops the start with a ``StoreError`` before any
   room opens), forget rooms past the retention, start the writer task.
2. ``prepare`` (each room, before it starts): append ``created`` for a new
   room; else restore the core at its last committed beat (``story.fold``) and
   the stream (``adopt_stream``).
3. ``close``: wait for the queued events, publish what rooms held for the log,
   save every stream as *clean* with its history, close the log.

Seq across restarts (``adopt_stream``): a stream checkpoint saved at a clean
stop carries the epoch, the last seq and the history, and the restarted room
goes on in the same epoch, so resuming viewers are replayed what they missed
(``recovered: true``). The checkpoint is marked not clean, durably, before the
room opens: after a crash there is no clean checkpoint, the room starts a new
epoch, and viewers resync from a snapshot. Frames are not logged one by one
(the hot path stays free of the disk); the cost is that a crash always
resyncs. A frame sent before a crash can never come back with another seq in
the same epoch, because that epoch is never continued.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable, Iterable
from typing import Any

import msgspec

from fablecast.protocol import messages as m
from fablecast.protocol.codec import JSON
from fablecast.server.config import RoomConfig, StoreConfig
from fablecast.server.history import Entry
from fablecast.server.room import effects as fx
from fablecast.server.room import moderation
from fablecast.server.room.runner import RoomRunner
from fablecast.server.room.state import CommittedBeat
from fablecast.server.room.votes import WindowResult
from fablecast.server.store import EventLog, StoreError, StoreWriter, StreamState, log_for_url
from fablecast.server.store.story import StoryImage, fold

log = logging.getLogger(__name__)

#: Seconds ``close`` waits for queued events before giving up (the store is down).
DRAIN_TIMEOUT_S = 5.0
#: Seconds a rewind or fork waits for the room's queued events.
SETTLE_TIMEOUT_S = 5.0


class BadBeat(ValueError):
    """A rewind or fork names a beat the room has not committed (``unknown_beat``)."""


class UnknownRoom(LookupError):
    """The log has no such room."""


class Archive:
    """The node's event log, its writer, and what rooms need of them."""

    def __init__(self, config: StoreConfig, log_: EventLog | None = None) -> None:
        self.config = config
        self.log = log_ or log_for_url(config.url, config.data_dir, synchronous=config.synchronous)
        self.writer: StoreWriter | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False

    # ------------------------------------------------------------------ lifecycle

    async def open(self, on_status: Callable[[str | None], None] | None = None) -> None:
        """Open and check the log, apply retention, start the writer; ``StoreError`` if not."""
        await self.log.open()
        await self._retention()
        c = self.config
        self.writer = StoreWriter(
            self.log, max_queue=c.queue_max, max_batch=c.batch_max, on_status=on_status
        )
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self.writer.run(), name="store-writer")]
        if c.retention_days > 0:
            self._tasks.append(loop.create_task(self._retention_loop(), name="store-retention"))

    async def close(self, runners: Iterable[RoomRunner]) -> None:
        """Drain the writer, save every room's stream as clean, close the log (once)."""
        if self._closed:
            return
        self._closed = True
        clean = True
        if self.writer is not None:
            try:
                await asyncio.wait_for(self.writer.drain(), DRAIN_TIMEOUT_S)
            except TimeoutError:
                clean = False
                log.error("event log: %d events not written at stop", self.writer.backlog)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if clean:
            for runner in runners:
                with contextlib.suppress(StoreError):
                    await self.log.save_stream(runner.name, _final_stream(runner))
        await self.log.close()

    async def _retention(self) -> None:
        days = self.config.retention_days
        if days > 0:
            gone = await self.log.forget_rooms_idle_since(time.time() - days * 86400)
            if gone:
                log.info("retention: forgot %d idle rooms: %s", len(gone), ", ".join(gone[:10]))

    async def _retention_loop(self) -> None:
        while True:
            await asyncio.sleep(86400)
            try:
                await self._retention()
            except StoreError as exc:
                log.warning("retention pass failed: %s", exc)

    # ------------------------------------------------------------------ other parts' events

    def record(self, room: str, kind: str, data: dict[str, Any]) -> asyncio.Future[int]:
        """Log an event of another part (moderation: ``kind="moderation"``), without awaiting.

        The future gets the event's id once it is durable (await it to be sure).
        Raises ``StoreBacklog`` when the write queue is full, ``StoreError`` when
        the log is not open: the caller reports it, nothing is dropped silently.
        ``data`` must be JSON-serialisable; it comes back as is in ``story.fold``
        (moderation events: ``StoryImage.moderation``) and in the log.
        """
        if self.writer is None or self._closed:
            raise StoreError("the event log is not open")
        return self.writer.append(room, kind, data)

    # ------------------------------------------------------------------ reading

    async def image(self, room: str) -> StoryImage:
        """The room as its log tells it (empty ``StoryImage`` if unknown)."""
        return fold(room, await self.log.events(room))

    async def rooms(self) -> list[str]:
        """Every room the log holds."""
        return await self.log.rooms()

    async def forks(self) -> list[str]:
        """Rooms made at run time (forks): reopened at start, unlike rooms a config
        named and no longer names (the config decides those)."""
        out = []
        for name in await self.log.rooms():
            img = await self.image(name)
            if img.origin == "fork":
                out.append(name)
        return out

    async def stored_config(self, room: str) -> RoomConfig:
        """The config a logged room was created with (forks are opened from it)."""
        img = await self.image(room)
        if not img.exists:
            raise UnknownRoom(room)
        return _room_config(room, img)

    # ------------------------------------------------------------------ opening a room

    async def prepare(self, runner: RoomRunner, rc: RoomConfig) -> None:
        """Before ``runner`` starts: log a new room, or restore it and its stream."""
        img = await self.image(runner.name)
        if not img.exists:
            await self._append(runner.name, "created", _created(rc))
        else:
            _restore_core(runner, img)
        await self.adopt_stream(runner)

    async def adopt_stream(self, runner: RoomRunner) -> bool:
        """Continue the stream of a clean stop (True), or start a new epoch; see the module."""
        stream = runner.stream
        state = await self.log.stream(runner.name)
        resumed = False
        if state is not None and state.clean and _contiguous(state):
            stream.epoch, stream.seq = state.epoch, state.seq
            for seq, data in state.frames:
                stream.history.append(Entry(seq, None, text=data, size=len(data)))
            resumed = True
        # Durable before the room sends anything: a crash from now on starts a new epoch.
        await self.log.save_stream(runner.name, StreamState(stream.epoch, stream.seq, False))
        return resumed

    # ------------------------------------------------------------------ rewind and fork

    async def rewind(self, runner: RoomRunner, beat: int) -> dict[str, Any]:
        """Rewind ``runner``'s room to ``beat``: logged, then shown to every viewer at once."""
        await self._settle()
        img = await self.image(runner.name)
        if not 0 <= beat <= img.beats_told:
            raise BadBeat(
                f"room {runner.name!r} has beats 0..{img.beats_told}; cannot rewind to {beat}"
            )
        branch = len(img.branches) + 1
        if beat == img.beats_told:
            branch = 0  # nothing set aside: a fresh ballot for the same beat
        await self._append(runner.name, "rewind", {"beat": beat, "branch": branch})
        story = tuple(_beats(img.beats[:beat]))
        runner.dispatch(fx.Rewound(story, beat, branch))
        return {"room": runner.name, "beat": beat, "branch": branch}

    async def fork(
        self, source: str, beat: int, name: str | None, taken: Callable[[str], bool]
    ) -> RoomConfig:
        """Log a new room that starts as ``source`` did up to ``beat``; its config to open."""
        await self._settle()
        img = await self.image(source)
        if not img.exists:
            raise UnknownRoom(source)
        if not 0 <= beat <= img.beats_told:
            raise BadBeat(f"room {source!r} has beats 0..{img.beats_told}; cannot fork at {beat}")
        new = name or f"{source[:48]}-{beat}-{secrets.token_hex(3)}"
        if taken(new) or (await self.image(new)).exists:
            raise ValueError(f"room {new!r} already exists")
        rc = msgspec.structs.replace(_room_config(source, img), name=new)
        created = _created(rc, origin="fork")
        created["parent"] = {"room": source, "beat": beat}
        now = time.time()
        assert self.writer is not None
        futs = [self.writer.append(new, "created", created, now)]
        futs += [self.writer.append(new, "beat", b, now) for b in img.beats[:beat]]
        await asyncio.gather(*futs)
        return rc

    async def _append(self, room: str, kind: str, data: dict[str, Any]) -> int:
        assert self.writer is not None, "open() first"
        return await self.writer.append(room, kind, data)

    async def _settle(self) -> None:
        assert self.writer is not None
        try:
            await asyncio.wait_for(self.writer.drain(), SETTLE_TIMEOUT_S)
        except TimeoutError:
            raise StoreError(f"event log busy or down: {self.writer.down or 'backlog'}") from None


# --------------------------------------------------------------------------- helpers


def _created(rc: RoomConfig, origin: str = "config") -> dict[str, Any]:
    return {
        "spec": {"title": rc.title, "premise": rc.premise, "style": rc.style},
        "settings": msgspec.to_builtins(rc),
        "origin": origin,
    }


def _room_config(room: str, img: StoryImage) -> RoomConfig:
    settings = {**img.settings, **{k: v for k, v in img.spec.items() if v is not None}}
    settings["name"] = room
    try:
        return msgspec.convert(settings, RoomConfig)
    except msgspec.ValidationError:  # settings of another version: keep what the spec says
        spec = {k: v for k, v in img.spec.items() if k in ("title", "premise", "style")}
        return msgspec.convert({**spec, "name": room}, RoomConfig)


def _beats(beats: list[dict[str, Any]]) -> list[CommittedBeat]:
    return [
        CommittedBeat(
            int(b["beat"]),
            str(b["text"]),
            b.get("choice"),
            b["state"] if isinstance(b.get("state"), dict) else None,
        )
        for b in beats
    ]


def _restore_core(runner: RoomRunner, img: StoryImage) -> None:
    options = tuple(str(o) for o in (img.ballot or {}).get("options", ()))
    runner.room.restore(
        _beats(img.beats),
        img.beats_told,
        choice=img.choice,
        resume=img.resume,
        options=options,
        windows=img.last_window,
        result=_result(img.result),
        result_options=tuple(img.result_options),
    )
    moderation.restore(runner.room, img.moderation)  # mutes, bans, approval outlive a restart


def _result(data: dict[str, Any] | None) -> WindowResult | None:
    """The logged result as the core's value (None if absent or malformed)."""
    if data is None:
        return None
    try:
        return WindowResult(
            int(data["winner"]),
            tuple(int(c) for c in data.get("counts", ())),
            int(data.get("voters", 0)),
            data.get("tie_break"),
        )
    except (KeyError, TypeError, ValueError):
        return None


def _contiguous(state: StreamState) -> bool:
    seqs = [seq for seq, _ in state.frames]
    if not seqs:
        return True
    return seqs == list(range(seqs[0], seqs[0] + len(seqs))) and seqs[-1] == state.seq


def _final_stream(runner: RoomRunner) -> StreamState:
    """The room's stream at a clean stop: held story frames shown, a running beat aborted."""
    runner.release_held()
    room, stream = runner.room, runner.stream
    if room.beat > room.beats_told:  # a beat was being told: it will be retold after restart
        stream.publish(m.BeatAbort(beat=room.beat, reason="the node restarted; retold"))
    stream.flush(())
    first = stream.history.first_seq
    entries = stream.history.since(first - 1, stream.seq) if first is not None else None
    frames = [(e.seq, e.data(JSON)) for e in entries or ()]
    return StreamState(stream.epoch, stream.seq, True, frames)
