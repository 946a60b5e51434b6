"""SIGKILL the node again and again during beats and votes: nothing committed is lost or doubled.

A real ``fablecast serve`` process (scripted engine, fast tokens, short vote
windows, SQLite event log in a temp dir) is killed with SIGKILL 20 times at
random points and restarted each time. One viewer follows the room across all
of it, resuming with ``(epoch, since)`` after every restart, and checks:

- within a connection, room frames are contiguous (no gap, no duplicate);
- after a crash the node starts a new epoch and the viewer is resynced with a
  snapshot (``recovered: false``) that holds every beat it saw committed, with
  the same text, numbered 1..N without holes or repeats;
- the transcript after the last restart holds every beat committed before the
  last kill (Markdown and JSON);
- after a clean stop (SIGTERM) the resume is ``recovered: true``, same epoch.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import websockets

from fablecast.protocol import messages as m
from fablecast.protocol.codec import JSON
from tests.support import scaled

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(300)]

KILLS = 20

CONFIG = """
[server]
tick_ms = 20
[engine]
kind = "scripted"
stall_timeout_s = 2.0
options = { tokens_per_s = 120.0, first_token_s = 0.01 }
[store]
synchronous = "normal"
[[rooms]]
name = "demo"
vote_s = 0.25
reveal_s = 0.05
narration_tokens = 24
snapshot_beats = 1000
"""


class Serve:
    """One ``fablecast serve`` process."""

    def __init__(self, config: Path, data: Path) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "fablecast.cli",
                "serve",
                "--config",
                str(config),
                "--port",
                "0",
                "--data-dir",
                str(data),
                "--no-uvloop",
                "--log-level",
                "WARNING",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        assert self.proc.stdout is not None
        lines = []
        deadline = time.monotonic() + scaled(30)
        self.port = 0
        while time.monotonic() < deadline and not self.port:
            line = self.proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            found = re.search(r"http://127\.0\.0\.1:(\d+)", line)
            if found:
                self.port = int(found.group(1))
        assert self.port, "".join(lines)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        self.proc.send_signal(sig)
        self.proc.communicate(timeout=scaled(20))


class Viewer:
    """What one viewer knows: the committed story, and where it is in the stream."""

    def __init__(self) -> None:
        self.story: dict[int, str] = {}
        self.epoch: str | None = None
        self.seq: int | None = None
        self.gaps = 0
        self.duplicates = 0
        self.recovered: list[bool | None] = []
        self.lost: list[int] = []
        self.retold: list[int] = []

    def resync(self, snap: m.Snapshot) -> None:
        told = {b.beat: b.text for b in snap.story}
        if sorted(told) != list(range(1, len(told) + 1)) or len(told) != len(snap.story):
            self.duplicates += 1
        for beat, text in self.story.items():
            if beat not in told:
                self.lost.append(beat)
            elif told[beat] != text:
                self.retold.append(beat)
        self.story = told
        self.seq = snap.seq

    def frame(self, f: m.RoomMessage) -> None:
        if self.seq is not None and f.seq != self.seq + 1:
            if f.seq <= self.seq:
                self.duplicates += 1
            else:
                self.gaps += 1
        self.seq = f.seq
        if isinstance(f, m.BeatEnd):
            if f.beat in self.story or f.beat != len(self.story) + 1:
                self.duplicates += 1
            self.story[f.beat] = f.text
        elif isinstance(f, m.Rewind):
            self.story = {b.beat: b.text for b in f.story}

    async def watch(self, port: int, seconds: float, stop_on: type | None = None) -> str:
        """Follow the room for ``seconds`` or until a ``stop_on`` frame; the last phase seen."""
        hello = m.Hello(participant="crash-viewer", epoch=self.epoch, since=self.seq)
        phase = "?"
        async with websockets.connect(
            f"ws://127.0.0.1:{port}/rooms/demo", subprotocols=[JSON.subprotocol]
        ) as ws:
            await ws.send(JSON.encode(hello).decode())
            loop = asyncio.get_running_loop()
            # The clock starts once joined (welcome, and the snapshot of a resync):
            # a loaded machine must not end a watch before the join is seen.
            end = loop.time() + scaled(20)
            while (left := end - loop.time()) > 0:
                try:
                    raw = await asyncio.wait_for(ws.recv(), left)
                except TimeoutError:
                    break
                msg = JSON.decode_server(raw)
                match msg:
                    case m.Welcome():
                        self.recovered.append(msg.recovered)
                        self.epoch = msg.epoch
                        if msg.recovered:
                            end = loop.time() + seconds
                    case m.Snapshot():
                        self.resync(msg)
                        phase = msg.phase
                        end = loop.time() + seconds
                    case m.Phase():
                        self.frame(msg)
                        phase = msg.phase
                    case _ if isinstance(msg, m.ROOM_FRAME_TYPES):
                        self.frame(msg)
                if stop_on is not None and isinstance(msg, stop_on):
                    return f"at {type(msg).__name__.lower()}"  # the kill follows at once
        return phase


def get(port: int, path: str) -> bytes:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
        return bytes(r.read())


async def test_sigkill_twenty_times_loses_and_doubles_nothing(tmp_path: Path) -> None:
    config = tmp_path / "node.toml"
    config.write_text(CONFIG)
    data = tmp_path / "data"
    rng = random.Random(int(os.environ.get("FABLECAST_CRASH_SEED", "11")))
    viewer = Viewer()
    phases: dict[str, int] = {}
    epochs: list[str] = []
    started = time.monotonic()
    serve = Serve(config, data)
    try:
        for _ in range(KILLS):
            # Half the kills at a random time, half right after a chosen frame.
            stop_on = rng.choice([None, None, m.BeatStart, m.Token, m.BeatEnd, m.Ballot])
            phase = await viewer.watch(serve.port, rng.uniform(0.3, 1.2), stop_on)
            phases[phase] = phases.get(phase, 0) + 1
            epochs.append(viewer.epoch or "")
            serve.kill(signal.SIGKILL)
            serve = Serve(config, data)
        # A last look after the last restart, then a clean stop and a resume across it.
        await viewer.watch(serve.port, 0.5)
        epochs.append(viewer.epoch or "")
        md = get(serve.port, "/api/rooms/demo/transcript?format=md").decode()
        logged = json.loads(get(serve.port, "/api/rooms/demo/transcript?format=json"))
        serve.kill(signal.SIGTERM)
        serve = Serve(config, data)
        await viewer.watch(serve.port, 0.5)
    finally:
        if serve.proc.poll() is None:
            serve.kill(signal.SIGKILL)
    beats = [b["beat"] for b in logged["beats"]]
    summary = {
        "kills": KILLS,
        "beats_committed": len(beats),
        "beats_seen_by_viewer": len(viewer.story),
        "phases_at_kill": phases,
        "resumes": len(viewer.recovered) - 1,
        "recovered_true": viewer.recovered.count(True),
        "recovered_false": viewer.recovered.count(False),
        "lost": len(viewer.lost),
        "retold": len(viewer.retold),
        "gaps": viewer.gaps,
        "duplicates": viewer.duplicates,
        "seconds": round(time.monotonic() - started, 1),
    }
    print("\ncrash test:", json.dumps(summary))
    assert beats == list(range(1, len(beats) + 1))
    assert viewer.lost == [] and viewer.retold == [] and viewer.gaps == 0
    assert viewer.duplicates == 0
    assert len(set(epochs)) == KILLS + 1  # every crash started a new epoch
    assert viewer.recovered[1 : KILLS + 1] == [False] * KILLS  # each crash: a resync
    assert viewer.recovered[-1] is True  # the clean stop kept epoch, seq and history
    assert len(beats) >= 3  # the story moved on between kills
    for beat in logged["beats"]:  # every committed beat, in the Markdown transcript too
        assert f"## Beat {beat['beat']}\n\n" in md and beat["text"] in md
    assert {b: t for b, t in viewer.story.items() if b <= len(beats)}.items() <= {
        b["beat"]: b["text"] for b in logged["beats"]
    }.items()
    assert set(phases) & {"narrating", "voting", "at token", "at ballot"}
