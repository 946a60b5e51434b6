"""The load generator: one process running many WebSocket viewers on one event loop.

Each viewer is a ``WsClient`` (a bare protocol, no tasks) that sends ``hello``,
then decodes every frame it gets with the project's codec, and accounts:

- room frames by ``seq`` (lost / duplicated / reordered, ``SeqTracker``);
- token latency: each narration word of the bench engine is its yield time
  (``time.time_ns()``), subtracted from the wall clock right after decoding;
- spread: first and last receipt time of each (room, seq) over this process's
  viewers (the bench merges processes);
- votes: acks, errors, the last option each viewer had acked.

The bench drives it with commands (``procs.serve_commands``); ``snapshot``
returns plain dicts. Its own CPU use is reported with every snapshot, so a run
can show the load generator was not the bottleneck.
"""

from __future__ import annotations

import asyncio
import multiprocessing.connection as mpc
import random
import socket
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from fablecast.bench.procs import run_loop, serve_commands, sleep_until
from fablecast.bench.stats import CpuMeter, Histogram, SeqTracker
from fablecast.bench.wsclient import WsClient, connect
from fablecast.protocol.codec import CODECS, JSON, Codec
from fablecast.protocol.messages import (
    Ballot,
    Error,
    Hello,
    RoomFrame,
    Snapshot,
    Tally,
    Token,
    Vote,
    VoteAck,
    VoteResult,
    Welcome,
)


@dataclass(slots=True)
class Viewer:
    """One simulated audience member."""

    ident: int
    room: int
    room_name: str
    participant: str
    port: int = 0
    group: str = ""
    ws: WsClient | None = None
    tracker: SeqTracker = field(default_factory=SeqTracker)
    epoch: str = ""
    welcomed: bool = False
    snapshot_seen: bool = False
    recovered: bool | None = None
    window: int = 0
    acked_option: int | None = None
    votes_sent: int = 0
    votes_acked: int = 0
    pending_votes: list[int] = field(default_factory=list)
    close_code: int | None = None
    closed: bool = False
    #: The viewer's last events (time, what), for a soak's report on viewers
    #: that end closed.
    trail: deque[tuple[float, str]] = field(default_factory=lambda: deque(maxlen=24))

    def note(self, what: str) -> None:
        """Add ``what`` to the trail."""
        self.trail.append((round(time.monotonic(), 2), what))


class Probe:
    """Measures tally latency in one room: vote, then wait for a tally that shows it.

    The probe alone votes on options 0 and 1 (the load votes on 2..4), switching
    between them; a tally with ``counts[target] == 1`` and ``counts[other] == 0``
    is the first that reflects the probe's latest vote. The time from sending
    the vote to decoding that tally is one sample.
    """

    def __init__(self, gen: LoadGen, viewer: Viewer, hist: Histogram) -> None:
        self.gen = gen
        self.viewer = viewer
        self.hist = hist
        self.target = 1
        self.sent_ns = 0
        self.waiting = False
        self.timeouts = 0
        self.active = False

    def next_vote(self) -> None:
        """Switch the probe's vote to the other option."""
        if not self.active:
            return
        self.target = 1 - self.target
        if self.gen.vote(self.viewer, self.target):
            self.sent_ns = time.time_ns()
            self.waiting = True

    def on_tally(self, counts: list[int], now: int) -> None:
        """A tally arrived on the probe's connection."""
        if not self.waiting or len(counts) < 2:
            return
        if counts[self.target] == 1 and counts[1 - self.target] == 0:
            self.hist.add_ns(now - self.sent_ns)
            self.waiting = False
            # Next probe vote after 60 ms: stays under any per-client rate limit.
            asyncio.get_running_loop().call_later(0.06, self.next_vote)

    def check_timeout(self, limit_ns: int) -> None:
        """Count a probe vote whose tally never came, and go on."""
        if self.waiting and time.time_ns() - self.sent_ns > limit_ns:
            self.timeouts += 1
            self.waiting = False
            self.next_vote()


@dataclass(slots=True)
class Window:
    """Counters of one measurement window (reset by ``reset``)."""

    frames: int = 0
    tokens: int = 0
    latency: Histogram = field(default_factory=Histogram)
    vote_ack: Histogram = field(default_factory=Histogram)
    acks: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    spread: dict[tuple[int, int], list[int]] = field(default_factory=dict)


class LoadGen:
    """The viewers of one process and their accounting."""

    def __init__(self, codec: Codec, *, track_spread: bool) -> None:
        self.codec = codec
        self.track_spread = track_spread
        self.viewers: list[Viewer] = []
        #: Measurement windows by viewer group (e.g. the side of a fan-out run).
        self.wins: dict[str, Window] = {}
        self.cpu = CpuMeter()
        self.host = "127.0.0.1"
        #: Latest tally per room index: (window, counts, voters, received at ns).
        self.tallies: dict[int, tuple[int, list[int], int]] = {}
        #: Latest ballot window per room index.
        self.windows: dict[int, int] = {}
        self.closed_codes: dict[str, int] = {}
        self.connect_failures = 0
        self.resumes_recovered = 0
        self.resumes_not_recovered = 0
        self.epoch_changes = 0
        self.actions: dict[str, int] = {}
        #: SO_RCVBUF for new connections (None: OS default); small makes stalls bite sooner.
        self.rcvbuf: int | None = None
        #: Tally-latency probes by room index (votes bench).
        self.probes: dict[int, Probe] = {}
        self.tally_latency = Histogram()

    # ------------------------------------------------------------------ frames

    def on_message(self, ws: WsClient, payload: bytes, _is_text: bool) -> None:
        """Decode and account one frame."""
        v: Viewer = ws.tag  # type: ignore[assignment]
        if ws.closed or v.ws is not ws:
            return  # late bytes of a connection this viewer already left
        msg = self.codec.decode_server(payload)
        now = time.time_ns()
        win = self.wins[v.group]
        if isinstance(msg, RoomFrame):
            v.tracker.see(msg.seq)
            win.frames += 1
            if self.track_spread:
                key = (v.room, msg.seq)
                cur = win.spread.get(key)
                if cur is None:
                    win.spread[key] = [now, now, 1]
                else:
                    cur[1] = now
                    cur[2] += 1
            if type(msg) is Token:
                hist = win.latency
                for word in msg.text.split():
                    if word.isdigit():
                        hist.add_ns(now - int(word))
                        win.tokens += 1
            elif type(msg) is Tally:
                self.tallies[v.room] = (msg.window, list(msg.counts), msg.voters)
                probe = self.probes.get(v.room)
                if probe is not None and probe.viewer is v:
                    probe.on_tally(msg.counts, now)
            elif type(msg) is Ballot:
                v.window = msg.window
                self.windows[v.room] = msg.window
            elif type(msg) is VoteResult:
                self.tallies[v.room] = (msg.window, list(msg.counts), msg.voters)
            return
        if isinstance(msg, Welcome):
            v.welcomed = True
            if v.epoch and msg.epoch != v.epoch:
                self.epoch_changes += 1
            v.epoch = msg.epoch
            v.recovered = msg.recovered
            v.note(f"welcome recovered={msg.recovered} seq={msg.seq}")
            if msg.recovered is True:
                self.resumes_recovered += 1
                v.snapshot_seen = True  # the missed frames follow, then live ones
            elif msg.recovered is False:
                self.resumes_not_recovered += 1
        elif isinstance(msg, Snapshot):
            v.note(f"snapshot seq={msg.seq}")
            v.snapshot_seen = True
            v.epoch = msg.epoch
            v.tracker.reset_to(msg.seq)
            if msg.ballot is not None:
                v.window = msg.ballot.window
                self.windows[v.room] = msg.ballot.window
            if msg.tally is not None:
                self.tallies[v.room] = (msg.tally.window, list(msg.tally.counts), msg.tally.voters)
        elif isinstance(msg, VoteAck):
            v.acked_option = msg.option
            v.votes_acked += 1
            win.acks += 1
            if v.pending_votes:
                win.vote_ack.add_ns(now - v.pending_votes.pop(0))
        elif isinstance(msg, Error):
            win.errors[msg.code] = win.errors.get(msg.code, 0) + 1
            if v.pending_votes:
                v.pending_votes.pop(0)

    def on_close(self, ws: WsClient, code: int | None) -> None:
        """Remember how a viewer's connection ended."""
        v: Viewer = ws.tag  # type: ignore[assignment]
        v.note(f"closed code={code} current={v.ws is ws} local={ws.local_close}")
        if v.ws is ws:
            v.closed = True
            v.close_code = code
        if not ws.local_close:
            key = str(code)
            self.closed_codes[key] = self.closed_codes.get(key, 0) + 1

    # ------------------------------------------------------------------ actions

    async def open_viewer(self, v: Viewer, *, since: int | None = None) -> None:
        """Connect ``v`` and say hello (resuming after ``since`` when given)."""
        v.closed = False
        v.close_code = None
        v.welcomed = v.snapshot_seen = False
        ws = await connect(
            self.host,
            v.port,
            f"/rooms/{v.room_name}",
            subprotocol=self.codec.subprotocol,
            on_message=self.on_message,
            on_close=self.on_close,
            tag=v,
        )
        v.ws = ws
        if self.rcvbuf is not None and ws.transport is not None:
            sock = ws.transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.rcvbuf)
        hello = Hello(participant=v.participant)
        if since is not None and v.epoch:
            hello = Hello(participant=v.participant, epoch=v.epoch, since=since)
        ws.send(self.codec.encode(hello), text=self.codec.is_text)

    def vote(self, v: Viewer, option: int, window: int | None = None) -> bool:
        """Send a vote for ``option`` in the room's open window; False if none known."""
        w = window or v.window or self.windows.get(v.room, 0)
        if not w or v.ws is None or v.closed:
            return False
        v.ws.send(self.codec.encode(Vote(window=w, option=option)), text=self.codec.is_text)
        v.votes_sent += 1
        v.pending_votes.append(time.time_ns())
        return True

    def reset(self, group: str = "") -> None:
        """Start a new measurement window for the viewers of ``group``."""
        self.wins[group] = Window()
        self.cpu.reset()
        for v in self.viewers:
            if v.group == group:
                t = v.tracker
                t.lost = t.duplicated = t.reordered = t.frames = 0

    def trails_of_closed(self, group: str) -> dict[int, list[tuple[float, str]]]:
        """The trails of the viewers of ``group`` closed at this moment."""
        return {v.ident: list(v.trail) for v in self.viewers if v.group == group and v.closed}

    def _closed_now(self, group: str) -> dict[str, int]:
        """Viewers of ``group`` closed at this moment, by their last close code."""
        return dict(
            Counter(str(v.close_code) for v in self.viewers if v.group == group and v.closed)
        )

    def snapshot(self, group: str = "") -> dict[str, Any]:
        """The current window's counters of ``group``, as plain data."""
        win = self.wins.setdefault(group, Window())
        lost = dup = reord = 0
        last_seq: dict[int, list[int]] = {}
        for v in self.viewers:
            if v.group != group:
                continue
            t = v.tracker
            lost += t.lost
            dup += t.duplicated
            reord += t.reordered
            if not v.closed:
                last_seq.setdefault(v.room, []).append(t.last)
        return {
            "frames": win.frames,
            "tokens": win.tokens,
            "latency": win.latency.to_wire(),
            "vote_ack": win.vote_ack.to_wire(),
            "acks": win.acks,
            "errors": dict(win.errors),
            "lost": lost,
            "duplicated": dup,
            "reordered": reord,
            "spread": [(r, s, a, b, n) for (r, s), (a, b, n) in win.spread.items()],
            "last_seq": last_seq,
            "open": sum(1 for v in self.viewers if not v.closed and v.group == group),
            "closed_codes": dict(self.closed_codes),
            "closed_now": self._closed_now(group),
            "closed_trails": self.trails_of_closed(group),
            "cpu": self.cpu.read(),
            "connect_failures": self.connect_failures,
            "resumes_recovered": self.resumes_recovered,
            "resumes_not_recovered": self.resumes_not_recovered,
            "epoch_changes": self.epoch_changes,
            "actions": dict(self.actions),
        }


#: Soak actions and their relative weights.
SOAK_ACTIONS: dict[str, float] = {
    "vote": 4.0,
    "react": 3.0,
    "drop_resume": 2.0,
    "leave_rejoin": 1.0,
    "stall_short": 2.0,
    "stall_long": 0.5,
}


async def _reconnect(gen: LoadGen, v: Viewer, *, resume: bool) -> None:
    """Reconnect ``v`` (resuming after its last seq when asked), retrying briefly."""
    for attempt in range(20):
        v.note(f"connect attempt={attempt} resume={resume}")
        try:
            await gen.open_viewer(v, since=v.tracker.last if resume else None)
            await sleep_until(lambda: v.snapshot_seen or v.closed, 10.0)
            if v.snapshot_seen and not v.closed:
                return
        except (OSError, TimeoutError):
            gen.connect_failures += 1
        await asyncio.sleep(0.1 * (attempt + 1))


async def churn(
    gen: LoadGen, v: Viewer, rnd: random.Random, end: float, arg: dict[str, Any]
) -> None:
    """One viewer's soak life until ``end``: random actions, ``mean_gap_s`` apart."""
    loop = asyncio.get_running_loop()
    names = list(SOAK_ACTIONS)
    weights = list(SOAK_ACTIONS.values())
    mean_gap = float(arg.get("mean_gap_s", 10.0))
    long_stall = float(arg.get("long_stall_s", 30.0))
    while True:
        await asyncio.sleep(min(rnd.expovariate(1.0 / mean_gap), max(0.0, end - loop.time())))
        if loop.time() >= end:
            break
        if v.closed or v.ws is None:
            # Closed by the server (e.g. slow consumer) or by the network: resume.
            gen.actions["server_closed"] = gen.actions.get("server_closed", 0) + 1
            v.note("server_closed: reconnect")
            await _reconnect(gen, v, resume=True)
            continue
        action = rnd.choices(names, weights)[0]
        if action.startswith("stall") and loop.time() + long_stall + 5.0 > end:
            # No stall may run past the end, nor end so close to it that the server's
            # close of a stalled viewer (found when it reads again) lands after it:
            # the tail check needs everyone.
            action = "vote"
        gen.actions[action] = gen.actions.get(action, 0) + 1
        v.note(action)
        ws = v.ws
        if action == "vote":
            gen.vote(v, rnd.randrange(3))
        elif action == "react":
            from fablecast.protocol.messages import REACTIONS, React

            msg = React(reaction=rnd.choice(REACTIONS))  # type: ignore[arg-type]
            ws.send(gen.codec.encode(msg), text=gen.codec.is_text)
        elif action == "drop_resume":
            ws.abort()
            v.closed = True
            await asyncio.sleep(rnd.uniform(0.0, 2.0))
            await _reconnect(gen, v, resume=True)
        elif action == "leave_rejoin":
            ws.close()
            v.closed = True
            await asyncio.sleep(rnd.uniform(0.5, 5.0))
            await _reconnect(gen, v, resume=False)
        else:
            ws.pause()
            await asyncio.sleep(rnd.uniform(0.5, 3.0) if action == "stall_short" else long_stall)
            ws.resume()
            await asyncio.sleep(1.0)  # read what piled up (or the close that came)
    # Ends connected, so the final tail check covers everyone.
    v.note(f"end closed={v.closed}")
    if v.closed or v.ws is None:
        await _reconnect(gen, v, resume=True)


def loadgen_main(conn: mpc.Connection, codec_name: str, track_spread: bool) -> None:
    """Process entry: serve commands for one ``LoadGen``."""

    async def main() -> None:
        codec = CODECS.get(codec_name, JSON)
        gen = LoadGen(codec, track_spread=track_spread)

        async def connect_all(arg: dict[str, Any]) -> dict[str, Any]:
            port = int(arg["port"])
            group = str(arg.get("group", ""))
            gen.wins.setdefault(group, Window())
            sem = asyncio.Semaphore(int(arg.get("concurrency", 64)))
            new = [
                Viewer(i, r, name, f"b{i}", port=port, group=group) for i, r, name in arg["viewers"]
            ]
            gen.viewers.extend(new)

            async def one(v: Viewer) -> None:
                async with sem:
                    try:
                        await gen.open_viewer(v)
                    except (OSError, TimeoutError):
                        gen.connect_failures += 1
                        v.closed = True

            await asyncio.gather(*(one(v) for v in new))
            await sleep_until(lambda: all(v.snapshot_seen or v.closed for v in new), 30.0)
            return {
                "connected": sum(1 for v in new if v.snapshot_seen and not v.closed),
                "failed": gen.connect_failures,
            }

        def reset(group: str | None) -> None:
            gen.reset(group or "")

        def snapshot(group: str | None) -> dict[str, Any]:
            return gen.snapshot(group or "")

        async def close_all(_arg: Any) -> None:
            for v in gen.viewers:
                if v.ws is not None:
                    v.ws.close()
            await asyncio.sleep(0.2)

        def viewers_of(group: str | None) -> list[Viewer]:
            return [v for v in gen.viewers if v.group == (group or "") and not v.closed]

        async def wait_ballot(arg: dict[str, Any]) -> int:
            vs = viewers_of(arg.get("group"))
            await sleep_until(lambda: all(v.window for v in vs), float(arg.get("timeout_s", 30)))
            return sum(1 for v in vs if v.window)

        async def vote_load(arg: dict[str, Any]) -> dict[str, Any]:
            """Offer ``rate`` votes/s for ``duration_s`` (voters cycle options 2..4)."""
            vs = viewers_of(arg.get("group"))
            probe_rooms: set[int] = set()
            if arg.get("probes"):
                for v in vs:
                    if v.room not in probe_rooms:
                        probe_rooms.add(v.room)
                        gen.probes[v.room] = Probe(gen, v, gen.tally_latency)
            voters = [
                v for v in vs if v.room not in gen.probes or gen.probes[v.room].viewer is not v
            ]
            for probe in gen.probes.values():
                probe.active = True
                probe.next_vote()
            rate = float(arg["rate"])
            duration = float(arg["duration_s"])
            options = list(arg.get("options", (2, 3, 4)))
            loop = asyncio.get_running_loop()
            start = loop.time()
            sent = 0
            i = 0
            while voters:
                now = loop.time()
                if now - start >= duration:
                    break
                due = int((now - start) * rate) - sent
                for _ in range(due):
                    v = voters[i % len(voters)]
                    i += 1
                    cur = v.acked_option if v.acked_option in options else options[0]
                    nxt = options[(options.index(cur) + 1) % len(options)]
                    gen.vote(v, nxt)
                    sent += 1
                for probe in gen.probes.values():
                    probe.check_timeout(2_000_000_000)
                await asyncio.sleep(0.005)
            for probe in gen.probes.values():
                probe.active = False
            return {"sent": sent, "elapsed_s": loop.time() - start}

        async def reports(group: str | None) -> dict[str, Any]:
            vs = [v for v in gen.viewers if v.group == (group or "")]
            expected: dict[int, dict[int, int]] = {}
            for v in vs:
                if v.acked_option is not None:
                    room = expected.setdefault(v.room, {})
                    room[v.acked_option] = room.get(v.acked_option, 0) + 1
            win = gen.wins.get(group or "", Window())
            return {
                "expected": {r: dict(c) for r, c in expected.items()},
                "voters": {r: sum(c.values()) for r, c in expected.items()},
                "sent": sum(v.votes_sent for v in vs),
                "acked": sum(v.votes_acked for v in vs),
                "unanswered": sum(len(v.pending_votes) for v in vs),
                "errors": dict(win.errors),
                "tallies": {r: [w, c, n] for r, (w, c, n) in gen.tallies.items()},
                "tally_latency": gen.tally_latency.to_wire(),
                "probe_timeouts": sum(p.timeouts for p in gen.probes.values()),
                "vote_ack": win.vote_ack.to_wire(),
                "acks_window": win.acks,
                "cpu": gen.cpu.read(),
            }

        async def soak(arg: dict[str, Any]) -> dict[str, Any]:
            gen.rcvbuf = arg.get("rcvbuf")
            rnd = random.Random(int(arg.get("seed", 1)))
            vs = viewers_of(arg.get("group"))
            loop = asyncio.get_running_loop()
            end = loop.time() + float(arg["duration_s"])
            await asyncio.gather(
                *(churn(gen, v, random.Random(rnd.random()), end, arg) for v in vs)
            )
            return {"viewers": len(vs)}

        def reset_probes(_arg: Any) -> None:
            gen.tally_latency.clear()
            for p in gen.probes.values():
                p.timeouts = 0

        await serve_commands(
            conn,
            {
                "connect": connect_all,
                "reset": reset,
                "snapshot": snapshot,
                "close": close_all,
                "wait_ballot": wait_ballot,
                "vote_load": vote_load,
                "vote_report": reports,
                "reset_probes": reset_probes,
                "soak": soak,
            },
        )

    run_loop(main)


def connect_viewers(gens: list[Any], port: int, clients: int, rooms: int, group: str) -> None:
    """Spread ``clients`` viewers round-robin over ``rooms`` (``bench0``...) and the load
    generator processes ``gens``, connect them all, and fail unless every one connected."""
    per_proc: list[list[tuple[int, int, str]]] = [[] for _ in gens]
    for i in range(clients):
        per_proc[i % len(gens)].append((i, i % rooms, f"bench{i % rooms}"))
    for g, viewers in zip(gens, per_proc, strict=True):
        g.conn.send(("connect", {"port": port, "viewers": viewers, "group": group}))
    connected = sum(g.wait(120)["connected"] for g in gens)
    if connected < clients:
        raise RuntimeError(f"only {connected} of {clients} viewers connected")
