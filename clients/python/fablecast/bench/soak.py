"""``bench soak``: viewers join, leave, drop, stall and resume across rooms for M minutes.

The real node runs rooms through whole beats (narration, ballot, vote, result)
with the bench engine; viewers vote and react now and then. Each viewer acts
about every ``mean_gap_s`` seconds (``loadgen.SOAK_ACTIONS``): drop the TCP
connection and resume (``hello`` with ``epoch``/``since``), leave and join fresh,
stall reading briefly, or stall long enough to pass the node's outbox bound and
be closed as a slow consumer (4008), then resume. Small socket buffers (client
``SO_RCVBUF``, server ``socket_send_buffer``) and a small ``outbox_max_bytes``
make long stalls bite within seconds. Every viewer tracks its room's seq across
its reconnects: a resume that says ``recovered: true`` must deliver every
missed frame in order, so any gap counts as lost.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from fablecast.bench.fanout import machine
from fablecast.bench.loadgen import connect_viewers, loadgen_main
from fablecast.bench.procs import Child, ask_all
from fablecast.bench.serverproc import server_main

_GROUP = "soak"


def run_soak(
    *,
    minutes: float = 10.0,
    rooms: int = 4,
    clients: int = 400,
    codec: str = "fablecast.v1.json",
    procs: int = 1,
    tick_ms: int = 50,
    tokens_per_s: float = 20.0,
    seed: int = 1,
    mean_gap_s: float = 10.0,
    long_stall_s: float = 30.0,
    outbox_max_bytes: int = 32 * 1024,
    log: Any = None,
) -> dict[str, Any]:
    """Run the soak (see the module docstring) and build its report."""
    started = time.time()
    mach = machine()
    duration = minutes * 60.0
    opts: dict[str, Any] = {
        "tick_ms": tick_ms,
        "tokens_per_s": tokens_per_s,
        "beat_tokens": 60,
        "rooms": rooms,
        "room": {"vote_s": 3.0, "reveal_s": 0.5, "n_choices": 3},
        "server": {"socket_send_buffer": 4096, "outbox_max_bytes": outbox_max_bytes},
    }
    server = Child(server_main, "fablecast", opts, name="server-soak")
    gens: list[Child] = []
    rss_series: list[tuple[float, float]] = []
    try:
        port = server.wait(60)["port"]
        gens = [Child(loadgen_main, codec, False, name=f"loadgen-{i}") for i in range(procs)]
        connect_viewers(gens, port, clients, rooms, _GROUP)
        time.sleep(1.0)
        server.ask("reset")
        start_stats = server.ask("stats")
        t0 = time.monotonic()
        for k, g in enumerate(gens):
            arg = {
                "group": _GROUP,
                "duration_s": duration,
                "seed": seed * 1000 + k,
                "rcvbuf": 4096,
                "mean_gap_s": mean_gap_s,
                "long_stall_s": long_stall_s,
            }
            g.conn.send(("soak", arg))
        # Sample the server's memory while the load generators churn.
        sample_every = max(1.0, min(30.0, duration / 20))
        next_sample = 0.0
        pending = list(gens)
        while pending:
            elapsed = time.monotonic() - t0
            if elapsed >= next_sample:
                rss_series.append((round(elapsed, 1), round(server.ask("stats")["rss"] / 2**20, 1)))
                if log is not None:
                    log(f"soak t={elapsed:.0f}s rss={rss_series[-1][1]} MiB")
                next_sample += sample_every
            for g in list(pending):
                if g.conn.poll(0.2):
                    g.wait(1)
                    pending.remove(g)
            if elapsed > duration + 120:
                raise TimeoutError("load generators did not finish")
        # Tail: hold narration, then every viewer must have its room's last frame.
        server.ask("pause")
        time.sleep(0.5)
        first = ask_all(gens, "snapshot", _GROUP)
        time.sleep(1.0)
        final = ask_all(gens, "snapshot", _GROUP)
        end_stats = server.ask("stats")
        room_max: dict[int, int] = {}
        for s in first:
            for room, seqs in s["last_seq"].items():
                room_max[int(room)] = max([room_max.get(int(room), -1), *seqs])
        tail_lost = sum(
            max(0, room_max.get(int(room), -1) - x)
            for s in final
            for room, seqs in s["last_seq"].items()
            for x in seqs
        )
        ask_all(gens, "close")
    finally:
        for g in gens:
            g.stop()
        server.stop()

    def total(key: str) -> int:
        return sum(int(s[key]) for s in final)

    def counts(key: str) -> dict[str, int]:
        """The per-key counts of ``key`` summed over the load generators."""
        return dict(sum((Counter(s[key]) for s in final), Counter()))

    closed = counts("closed_codes")

    return {
        "bench": "soak",
        "minutes": minutes,
        "rooms": rooms,
        "clients": clients,
        "codec": codec,
        "tick_ms": tick_ms,
        "tokens_per_s_per_room": tokens_per_s,
        "frames": total("frames"),
        "lost": total("lost") + tail_lost,
        "tail_lost": tail_lost,
        "duplicated": total("duplicated"),
        "reordered": total("reordered"),
        "resumes_recovered": total("resumes_recovered"),
        "resumes_not_recovered": total("resumes_not_recovered"),
        "epoch_changes": total("epoch_changes"),
        "slow_closed": int(end_stats.get("slow_dropped", 0)),
        "keepalive_closed": closed.get("1011", 0),
        "server_closes_seen_by_clients": closed,
        "actions": counts("actions"),
        "connect_failures": total("connect_failures"),
        "open_at_end": total("open"),
        "closed_at_end": counts("closed_now"),
        "closed_at_end_trails": {k: t for s in final for k, t in s["closed_trails"].items()},
        "rss_start_mib": round(start_stats["rss"] / 2**20, 1),
        "rss_end_mib": round(end_stats["rss"] / 2**20, 1),
        "rss_series_mib": rss_series,
        "server_cpu_util": end_stats["cpu"]["util"],
        "loadgen_cpu_util": [s["cpu"]["util"] for s in final],
        "limits": {"outbox_max_bytes": outbox_max_bytes, "socket_send_buffer": 4096},
        "machine": mach,
        "elapsed_s": round(time.time() - started, 1),
    }
