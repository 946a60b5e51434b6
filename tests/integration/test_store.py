"""The event log end to end: a real node on port 0 with SQLite under a temp dir."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from fablecast.inference.backends.scripted import ScriptedEngine
from fablecast.protocol import messages as m
from fablecast.server.config import Config, StoreConfig
from fablecast.server.node import Node
from fablecast.server.store import NewEvent, StoreCorrupt, StoreError, StoreUnavailable
from fablecast.server.store.archive import Archive
from fablecast.server.store.sqlite import SqliteLog
from tests.integration.ws_harness import Client, connect, make_config

pytestmark = pytest.mark.integration


def stored_config(tmp_path: Path, **room: Any) -> Config:
    config = make_config(**room)
    config.store = StoreConfig(data_dir=str(tmp_path), synchronous="normal")
    return config


def engine() -> ScriptedEngine:
    return ScriptedEngine(tokens_per_s=400, first_token_s=0.005)


async def started(config: Config) -> Node:
    node = Node(config, engine=engine())
    await node.start()
    return node


def http(node: Node, path: str, method: str = "GET") -> tuple[int, bytes]:
    req = urllib.request.Request(f"http://127.0.0.1:{node.port}{path}", method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


async def beat_ends(client: Client, n: int) -> list[m.BeatEnd]:
    for _ in range(n):
        await client.until(lambda f: isinstance(f, m.BeatEnd), timeout=20)
    return [f for f in client.seen if isinstance(f, m.BeatEnd)]


def seqs(frames: Sequence[m.ServerMessage]) -> list[int]:
    return [f.seq for f in frames if isinstance(f, m.ROOM_FRAME_TYPES)]


async def test_a_clean_restart_keeps_the_story_and_replays_what_a_viewer_missed(
    tmp_path: Path,
) -> None:
    config = stored_config(tmp_path)
    node = await started(config)
    viewer = await connect(node)
    told = await beat_ends(viewer, 2)
    epoch = next(f for f in viewer.seen if isinstance(f, m.Welcome)).epoch
    last = seqs(viewer.seen)[-1]
    await viewer.ws.close()
    await asyncio.sleep(0.1)  # the room goes on a little without this viewer
    await node.stop()

    node = await started(config)
    try:
        again = await connect(node, hello=m.Hello(epoch=epoch, since=last))
        welcome = await again.recv()
        assert isinstance(welcome, m.Welcome) and welcome.recovered is True
        assert welcome.epoch == epoch and welcome.seq >= last
        await beat_ends(again, 1)
        got = seqs(again.seen)
        assert got == list(range(last + 1, last + 1 + len(got)))  # no gap, no duplicate
        # Every beat told before the stop is in the log, once, with the same text.
        status, body = await asyncio.to_thread(http, node, "/api/rooms/demo/transcript?format=json")
        assert status == 200
        beats = json.loads(body)["beats"]
        assert [b["beat"] for b in beats] == list(range(1, len(beats) + 1))
        # The engine's story state of each beat is logged with it ...
        assert "must learn the secret of" in beats[0]["state"]["goal"]
        # ... and the restored room's card has it: the next why record shows its goal.
        why = await again.until(lambda f: isinstance(f, m.Why), timeout=20)
        assert isinstance(why, m.Why) and why.state is not None
        assert why.state.goal is not None and "must learn the secret of" in why.state.goal
        assert {b.beat: b.text for b in told}.items() <= {
            b["beat"]: b["text"] for b in beats
        }.items()
        # A fresh viewer's snapshot holds the same story.
        fresh = await connect(node)
        await fresh.recv()
        snap = await fresh.recv()
        assert isinstance(snap, m.Snapshot)
        assert [(b.beat, b.text) for b in snap.story] == [(b["beat"], b["text"]) for b in beats][
            -len(snap.story) :
        ]
    finally:
        await node.stop()


async def test_transcript_rewind_and_fork_over_http(tmp_path: Path) -> None:
    node = await started(stored_config(tmp_path))
    try:
        viewer = await connect(node)
        told = await beat_ends(viewer, 3)
        status, md = await asyncio.to_thread(http, node, "/api/rooms/demo/transcript")
        assert status == 200 and md.startswith(b"# ")
        for b in told:
            assert b.text.encode() in md

        status, body = await asyncio.to_thread(http, node, "/api/rooms/demo/rewind?beat=99", "POST")
        assert status == 400 and json.loads(body)["code"] == "unknown_beat"
        status, body = await asyncio.to_thread(http, node, "/api/rooms/demo/rewind?beat=x", "POST")
        assert status == 400 and json.loads(body)["code"] == "invalid_message"
        status, body = await asyncio.to_thread(http, node, "/api/rooms/demo/rewind")
        assert status == 405

        status, body = await asyncio.to_thread(http, node, "/api/rooms/demo/rewind?beat=1", "POST")
        assert status == 200, body
        branch = json.loads(body)["branch"]
        rewind = await viewer.until(lambda f: isinstance(f, m.Rewind), timeout=10)
        assert isinstance(rewind, m.Rewind) and rewind.beat == 1
        assert [(b.beat, b.text) for b in rewind.story] == [(1, told[0].text)]
        ballot = await viewer.until(lambda f: isinstance(f, m.Ballot), timeout=10)
        assert isinstance(ballot, m.Ballot) and ballot.beat == 1
        # The next beat's prompt is built from beat 1 alone: one summary, not three.
        why = await viewer.until(lambda f: isinstance(f, m.Why) and f.beat == 2, timeout=20)
        assert isinstance(why, m.Why) and why.state is not None
        assert why.state.summary and ";" not in why.state.summary
        status, body = await asyncio.to_thread(http, node, "/api/rooms/demo/transcript?format=json")
        data = json.loads(body)
        assert data["branches"][0]["branch"] == branch
        assert [b["beat"] for b in data["branches"][0]["beats"]][:2] == [2, 3]
        assert data["beats"][0] == {**data["beats"][0], "beat": 1, "text": told[0].text}

        status, body = await asyncio.to_thread(
            http, node, "/api/rooms/demo/fork?beat=1&name=side", "POST"
        )
        assert status == 201, body
        assert json.loads(body)["url"].endswith("/rooms/side")
        status, body = await asyncio.to_thread(http, node, "/api/rooms/demo/fork?beat=50", "POST")
        assert status == 400 and json.loads(body)["code"] == "unknown_beat"
        status, body = await asyncio.to_thread(http, node, "/api/rooms/nope/fork?beat=0", "POST")
        assert status == 404
        other = await connect(node, room="side")
        await other.recv()
        snap = await other.recv()
        assert isinstance(snap, m.Snapshot)
        assert [(b.beat, b.text) for b in snap.story] == [(1, told[0].text)]
        status, body = await asyncio.to_thread(http, node, "/api/rooms/side/transcript")
        assert b"Forked from room `demo` at beat 1" in body
    finally:
        await node.stop()


async def test_a_corrupt_database_stops_the_start_and_is_left_untouched(tmp_path: Path) -> None:
    db = tmp_path / "fablecast.sqlite3"
    db.write_bytes(b"\x00garbage" * 1000)
    node = Node(stored_config(tmp_path), engine=engine())
    with pytest.raises(StoreCorrupt, match="not an SQLite database"):
        await node.start()
    assert db.read_bytes() == b"\x00garbage" * 1000


class FlakyLog(SqliteLog):
    """SQLite that fails every append while ``failing`` is set."""

    failing = False

    async def append(self, events: Sequence[NewEvent]) -> list[int]:
        if self.failing:
            raise StoreUnavailable("disk unplugged")
        return await super().append(events)


async def test_a_room_waits_visibly_while_the_log_is_down_and_loses_nothing(
    tmp_path: Path,
) -> None:
    config = stored_config(tmp_path)
    node = Node(config, engine=engine())
    flaky = FlakyLog(tmp_path / "flaky.sqlite3", synchronous="normal")
    node.archive = Archive(config.store, flaky)
    await node.start()
    try:
        viewer = await connect(node)
        await beat_ends(viewer, 1)
        flaky.failing = True
        down = await viewer.until(
            lambda f: isinstance(f, m.Narrator) and "event log unavailable" in f.message, 20
        )
        assert isinstance(down, m.Narrator) and down.state == "down"
        _, metrics = await asyncio.to_thread(http, node, "/metrics")
        assert b"fablecast_store_down 1.0" in metrics
        ends_before = len([f for f in viewer.seen if isinstance(f, m.BeatEnd)])
        await asyncio.sleep(0.5)
        assert len([f for f in viewer.seen if isinstance(f, m.BeatEnd)]) <= ends_before + 0
        flaky.failing = False
        await viewer.until(
            lambda f: isinstance(f, m.Narrator) and f.message == "event log back", 20
        )
        await beat_ends(viewer, 1)
        _, metrics = await asyncio.to_thread(http, node, "/metrics")
        assert b"fablecast_store_down 0.0" in metrics
        got = seqs(viewer.seen)
        assert got == list(range(got[0], got[0] + len(got)))
        status, body = await asyncio.to_thread(http, node, "/api/rooms/demo/transcript?format=json")
        assert status == 200
        logged = [b["text"] for b in json.loads(body)["beats"]]
        shown = [f.text for f in viewer.seen if isinstance(f, m.BeatEnd)]
        assert logged[: len(shown)] == shown
    finally:
        await node.stop()


async def test_other_parts_record_their_events_and_read_them_back(tmp_path: Path) -> None:
    node = await started(stored_config(tmp_path))
    try:
        assert node.archive is not None
        action = {"action": "veto", "beat": 1, "by": "mod-1", "reason": "spoiler"}
        assert await node.archive.record("demo", "moderation", action) > 0
        img = await node.archive.image("demo")
        assert [{k: v for k, v in e.items() if k != "at"} for e in img.moderation] == [action]
    finally:
        await node.stop()
    with pytest.raises(StoreError, match="not open"):
        node.archive.record("demo", "moderation", {})
