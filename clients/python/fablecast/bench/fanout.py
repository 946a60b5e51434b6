"""``bench fanout``: fan-out capacity of the server against a bare ``broadcast()``.

For each side (``raw``: ``baseline.BaselineServer``; ``fablecast``: the real
``Node``), in the same run and with the same viewers, codec, tick and engine:

1. start the server process and the load generator processes, connect N viewers
   spread round-robin over M rooms;
2. step the engine's token rate per room up; at each step warm up, then measure
   a window: deliveries (room frames decoded by viewers) per second, token
   latency (engine yield -> viewer decode), spread, loss, server loop lag, CPU;
3. a step is *sustained* when the engine kept >= 95 % of its pace while
   narrating (it shares the server's loop, so a saturated server shows up as
   fewer tokens, not later ones), viewers decoded >= 95 % of what it yielded,
   p99 latency <= the bound, and nothing is lost, duplicated or reordered;
   stepping stops at the first step that is not;
4. at the end the engine is paused and viewers drain: any viewer behind its
   room's last seq counts the difference as lost (tail loss).

The capacity of a side is the deliveries per second of its best sustained step.
A *delivery* is one engine token decoded by one viewer (tokens x viewers per
second): the work that matters to the audience, and comparable between sides
that coalesce differently (a side whose tick runs late sends fewer, larger
frames for the same tokens). It is counted per second of narration: the node
pauses between beats for its ballots, the baseline streams without a break
(``wall_deliveries_per_s`` keeps the plain per-second figure). Frames decoded
per second are reported as well (``frame_deliveries_per_s``).
"""

from __future__ import annotations

import os
import platform
import time
from typing import Any

from fablecast.bench.loadgen import loadgen_main
from fablecast.bench.procs import Child, ask_all
from fablecast.bench.serverproc import server_main
from fablecast.bench.stats import Histogram, merge_spread, spread_histogram

#: Default token-rate steps (tokens per second per room).
# fmt: off
DEFAULT_RATES = (
    10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 80.0, 100.0, 150.0, 200.0,
    300.0, 400.0, 600.0, 800.0, 1200.0, 1600.0,
)
# fmt: on


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover
        load = []
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        "loadavg_at_start": load,
    }


def _merge_step(
    snaps: list[dict[str, Any]],
    server: dict[str, Any],
    clients_per_room: dict[int, int],
) -> dict[str, Any]:
    lat = Histogram()
    spread: dict[tuple[int, int], list[int]] = {}
    frames = tokens = lost = dup = reord = opened = 0
    loadgen_cpu: list[float] = []
    wall = max(s["cpu"]["wall_s"] for s in snaps)
    for s in snaps:
        lat.merge_wire(s["latency"])
        merge_spread(spread, s["spread"])
        frames += s["frames"]
        tokens += s["tokens"]
        lost += s["lost"]
        dup += s["duplicated"]
        reord += s["reordered"]
        opened += s["open"]
        loadgen_cpu.append(s["cpu"]["util"])
    lag = Histogram()
    lag.merge_wire(server["loop_lag"])
    return {
        "deliveries_per_s": round(tokens / wall, 1),
        "frame_deliveries_per_s": round(frames / wall, 1),
        "latency_ms": lat.summary(),
        "latency_samples": lat.total,
        "spread_ms": spread_histogram(spread, clients_per_room).summary(0.5, 0.99),
        "lost": lost,
        "duplicated": dup,
        "reordered": reord,
        "open": opened,
        "loop_lag_ms_p99": lag.percentile_ms(0.99),
        "server_cpu_util": server["cpu"]["util"],
        "server_rss_mib": round(server["rss"] / 2**20, 1),
        "loadgen_cpu_util": loadgen_cpu,
        "window_s": round(wall, 2),
    }


def _cpu_pressure() -> float | None:
    """The kernel's CPU pressure (share of time some task waited for a CPU, last 10 s)."""
    try:
        with open("/proc/pressure/cpu") as f:
            return float(f.readline().split()[1].split("=")[1])
    except (OSError, IndexError, ValueError):
        return None


class _Side:
    """One server process under test and its viewers' group in the load generators."""

    def __init__(self, name: str, opts: dict[str, Any]) -> None:
        self.name = name
        self.server = Child(server_main, name, opts, name=f"server-{name}")
        self.ready: dict[str, Any] = {}
        self.connected = 0
        self.rss_idle = 0
        self.steps: list[dict[str, Any]] = []
        self.best: dict[str, Any] | None = None
        self.done = False

    def report(self) -> dict[str, Any]:
        conns = max(1, self.connected)
        rss_before = self.ready.get("rss", 0)
        rss_peak = max([self.rss_idle] + [s["server_rss"] for s in self.steps])
        # Net of the rooms' narrative state (history, story, beat in progress: per
        # room, and proportional to the text narrated, not to the audience).
        net_peak = max(
            [self.rss_idle] + [s["server_rss"] - s.get("room_state", 0) for s in self.steps]
        )
        state_peak = max([0] + [s.get("room_state", 0) for s in self.steps])
        return {
            "side": self.name,
            "connected": self.connected,
            "steps": self.steps,
            "best": self.best,
            "rss_before_mib": round(rss_before / 2**20, 1),
            "rss_idle_mib": round(self.rss_idle / 2**20, 1),
            "rss_peak_mib": round(rss_peak / 2**20, 1),
            "room_state_peak_mib": round(state_peak / 2**20, 2),
            "mem_per_conn_kib": round((net_peak - rss_before) / 1024 / conns, 2),
            "mem_per_conn_gross_kib": round((rss_peak - rss_before) / 1024 / conns, 2),
            "mem_per_conn_idle_kib": round((self.rss_idle - rss_before) / 1024 / conns, 2),
        }


def _measure(
    side: _Side,
    gens: list[Child],
    rate: float,
    *,
    warm_s: float,
    step_s: float,
    clients_per_room: dict[int, int],
    p99_bound_ms: float,
    rooms: int,
) -> dict[str, Any]:
    """One step of one side: stream at ``rate``, measure a window, pause, check the tail."""
    side.server.ask("rate", rate)
    side.server.ask("unpause")
    time.sleep(warm_s)
    side.server.ask("reset")
    ask_all(gens, "reset", side.name)
    time.sleep(step_s)
    snaps = ask_all(gens, "snapshot", side.name)
    stats = side.server.ask("stats")
    pressure = _cpu_pressure()
    side.server.ask("pause")
    # Tail: every frame sent before ``first`` must have reached everyone shortly after.
    time.sleep(0.3)
    first = ask_all(gens, "snapshot", side.name)
    time.sleep(0.5)
    second = ask_all(gens, "snapshot", side.name)
    room_max: dict[int, int] = {}
    for s in first:
        for room, seqs in s["last_seq"].items():
            room_max[int(room)] = max([room_max.get(int(room), -1), *seqs])
    tail_lost = 0
    for s in second:
        for room, seqs in s["last_seq"].items():
            tail_lost += sum(max(0, room_max.get(int(room), -1) - x) for x in seqs)
    step = {
        "tokens_per_s_per_room": rate,
        **_merge_step(snaps, stats, clients_per_room),
        "tail_lost": tail_lost,
        "server_rss": stats["rss"],
        "room_state": int(stats.get("room_state", 0)),
        "cpu_pressure_avg10": pressure,
    }
    step["lost"] += tail_lost
    p99 = step["latency_ms"]["p99"]
    # The bench engine runs on the server's loop: a saturated loop yields fewer
    # tokens, not later ones. A step only counts when the engine kept its pace
    # while narrating (the node pauses between beats for the ballot, so time
    # outside narration does not count) and viewers decoded what it yielded.
    yielded = stats["tokens"]
    narrating = stats["narrating_s"]
    expected = yielded * side.connected / max(1, rooms) / stats["cpu"]["wall_s"]
    step["offered_deliveries_per_s"] = rate * side.connected
    step["engine_pace"] = round(yielded / (rate * narrating), 3) if narrating else None
    step["delivered_share"] = round(step["deliveries_per_s"] / expected, 3) if expected else None
    # Capacity counts deliveries per second of narration: the node stops narrating
    # between beats (ballot, vote window), the baseline never does, and a pause
    # is no fan-out work. ``narrating_share`` is the share of room-time spent
    # narrating in the window (1.0 for the baseline); the window's own figure
    # stays in ``wall_deliveries_per_s``.
    share = min(1.0, narrating / (max(1, rooms) * stats["cpu"]["wall_s"])) if narrating else 0.0
    step["narrating_share"] = round(share, 3)
    step["wall_deliveries_per_s"] = step["deliveries_per_s"]
    if share > 0:
        step["deliveries_per_s"] = round(step["deliveries_per_s"] / share, 1)
    step["kept_up"] = bool(
        step["engine_pace"] is not None
        and step["engine_pace"] >= 0.95
        and step["delivered_share"] is not None
        and step["delivered_share"] >= 0.95
    )
    step["sustained"] = bool(
        p99 is not None
        and p99 <= p99_bound_ms
        and step["kept_up"]
        and step["lost"] == step["duplicated"] == step["reordered"] == 0
        and step["open"] == side.connected
    )
    return step


def run_fanout(
    *,
    rooms: int = 10,
    clients: int = 1000,
    codec: str = "fablecast.v1.json",
    tick_ms: int = 10,
    rates: tuple[float, ...] = DEFAULT_RATES,
    warm_s: float = 1.0,
    step_s: float = 3.0,
    procs: int = 1,
    p99_bound_ms: float = 100.0,
    beat_tokens: int = 4096,
    retries: int = 2,
    sides: tuple[str, ...] = ("raw", "fablecast"),
    store: bool = True,
    log: Any = None,
) -> dict[str, Any]:
    """Run both sides, interleaved step by step, and build the report.

    Both servers run for the whole bench with their viewers connected; at each
    rate step one side streams while the other is paused (its engine trickles one
    token per 2 s, below any stall timeout), so the two measurements of a step are
    seconds apart and share the machine's conditions. A failed step is measured
    again up to ``retries`` times (the machine is shared); each try is recorded.
    """
    started = time.time()
    mach = machine()
    opts = {
        "tick_ms": tick_ms,
        "tokens_per_s": rates[0],
        "beat_tokens": beat_tokens,
        "rooms": rooms,
        # The node's event log, on as by default (a fresh SQLite file per run).
        "store": store,
    }
    runs = [_Side(name, opts) for name in sides]
    gens: list[Child] = []
    try:
        for side in runs:
            side.ready = side.server.wait(60)
            side.server.ask("pause")
        gens = [Child(loadgen_main, codec, True, name=f"loadgen-{i}") for i in range(max(1, procs))]
        clients_per_room: dict[int, int] = {}
        for k, side in enumerate(runs):
            per_proc: list[list[tuple[int, int, str]]] = [[] for _ in gens]
            for i in range(clients):
                r = k * rooms + i % rooms
                per_proc[i % len(gens)].append((i, r, f"bench{i % rooms}"))
                clients_per_room[r] = clients_per_room.get(r, 0) + 1
            for g, viewers in zip(gens, per_proc, strict=True):
                arg = {"port": side.ready["port"], "viewers": viewers, "group": side.name}
                g.conn.send(("connect", arg))
            side.connected = sum(g.wait(120)["connected"] for g in gens)
            if side.connected < clients:
                raise RuntimeError(f"{side.name}: {side.connected} of {clients} viewers connected")
        time.sleep(0.5)
        for side in runs:
            side.rss_idle = side.server.ask("stats")["rss"]
        for rate in rates:
            for side in runs:
                if side.done:
                    continue
                for attempt in range(retries + 1):
                    step = _measure(
                        side,
                        gens,
                        rate,
                        warm_s=warm_s,
                        step_s=step_s,
                        clients_per_room=clients_per_room,
                        rooms=rooms,
                        p99_bound_ms=p99_bound_ms,
                    )
                    step["attempt"] = attempt + 1
                    side.steps.append(step)
                    if log is not None:
                        log(f"{side.name} rate={rate:g}/s/room: {step}")
                    if step["sustained"]:
                        side.best = step
                        break
                else:
                    side.done = True
            if all(side.done for side in runs):
                break
        for g in gens:
            g.conn.send(("close", None))
        for g in gens:
            g.wait(30)
    finally:
        for g in gens:
            g.stop()
        for side in runs:
            side.server.stop()
    results = {side.name: side.report() for side in runs}
    return _report(
        results,
        rooms=rooms,
        clients=clients,
        codec=codec,
        tick_ms=tick_ms,
        p99_bound_ms=p99_bound_ms,
        procs=procs,
        mach=mach,
        started=started,
    )


def _report(
    results: dict[str, dict[str, Any]],
    *,
    rooms: int,
    clients: int,
    codec: str,
    tick_ms: int,
    p99_bound_ms: float,
    procs: int,
    mach: dict[str, Any],
    started: float,
) -> dict[str, Any]:
    raw = results.get("raw") or {}
    ours = results.get("fablecast") or raw
    best = ours.get("best") or {}
    raw_best = raw.get("best") or {}
    dps = best.get("deliveries_per_s", 0.0)
    raw_dps = raw_best.get("deliveries_per_s", 0.0)
    fps = best.get("frame_deliveries_per_s", 0.0)
    raw_fps = raw_best.get("frame_deliveries_per_s", 0.0)
    steps = ours.get("steps", [])
    # Loss counts every measured step (retries included), not only the best one.
    return {
        "bench": "fanout",
        "rooms": rooms,
        "clients": clients,
        "codec": codec,
        "tick_ms": tick_ms,
        "p99_bound_ms": p99_bound_ms,
        "deliveries_per_s": dps,
        "baseline_deliveries_per_s": raw_dps,
        "ratio_vs_raw": round(dps / raw_dps, 3) if raw_dps else None,
        "frame_deliveries_per_s": fps,
        "baseline_frame_deliveries_per_s": raw_fps,
        "wall_deliveries_per_s": best.get("wall_deliveries_per_s"),
        "baseline_wall_deliveries_per_s": raw_best.get("wall_deliveries_per_s"),
        "narrating_share": best.get("narrating_share"),
        "latency_ms": best.get("latency_ms"),
        "baseline_latency_ms": raw_best.get("latency_ms"),
        "spread_ms": best.get("spread_ms"),
        "lost": sum(s["lost"] for s in steps),
        "duplicated": sum(s["duplicated"] for s in steps),
        "reordered": sum(s["reordered"] for s in steps),
        # Peak RSS under load minus RSS before anyone connected, per connection,
        # net of the rooms' narrative state (``room_state_peak_mib``: history, story,
        # beat in progress; per room, proportional to the text narrated) and gross;
        # and the same right after everyone connected, before streaming.
        "mem_per_conn_kib": ours.get("mem_per_conn_kib"),
        "baseline_mem_per_conn_kib": raw.get("mem_per_conn_kib"),
        "mem_per_conn_gross_kib": ours.get("mem_per_conn_gross_kib"),
        "baseline_mem_per_conn_gross_kib": raw.get("mem_per_conn_gross_kib"),
        "room_state_peak_mib": ours.get("room_state_peak_mib"),
        "mem_per_conn_idle_kib": ours.get("mem_per_conn_idle_kib"),
        "baseline_mem_per_conn_idle_kib": raw.get("mem_per_conn_idle_kib"),
        "loop_lag_ms_p99": best.get("loop_lag_ms_p99"),
        "baseline_loop_lag_ms_p99": raw_best.get("loop_lag_ms_p99"),
        "server_cpu_util": best.get("server_cpu_util"),
        "baseline_server_cpu_util": raw_best.get("server_cpu_util"),
        "loadgen": {
            "procs": procs,
            "cpu_util": best.get("loadgen_cpu_util"),
            "baseline_cpu_util": raw_best.get("loadgen_cpu_util"),
            # One process is one event loop: near 1.0 it would be the bottleneck.
            "saturated": any(
                u > 0.85
                for s in (*steps, *raw.get("steps", []))
                for u in s.get("loadgen_cpu_util", [])
            ),
        },
        "cpu_pressure_avg10": best.get("cpu_pressure_avg10"),
        "capped": bool(steps and steps[-1]["sustained"]),
        "sides": results,
        "machine": mach,
        "elapsed_s": round(time.time() - started, 1),
    }
