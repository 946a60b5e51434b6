"""``bench votes``: sustained vote ingestion with tally latency, then a one-second burst.

Rooms are configured with a vote window that stays open for the whole bench
(``vote_s`` = 1 h, 5 options, 8-token beats so voting opens at once), and a
per-client message limit above the offered rate (the bench measures ingestion,
not the rate limiter; the limit is reported). Then:

1. sustained: the load generators offer each rate step for ``duration_s``;
   every vote changes the voter's option among 2..4 (so every vote moves the
   tally). A step is sustained when >= 95 % of the offered votes were answered
   (``vote_ack``) per second, every vote was answered, and tally p99 <= 100 ms.
   ``votes_per_s`` is the acks/s of the best sustained step.
   Tally latency: one probe viewer per room votes alone on options 0/1 and
   times vote -> first tally showing it (``loadgen.Probe``).
2. burst: ``burst`` votes offered within one second by the same viewers.
3. check: after a settle, each room's last tally must equal the votes the
   viewers hold (their last acked option): ``lost_votes`` = votes never answered
   plus tally deficits, ``double_counted`` = tally surpluses (and voters).
"""

from __future__ import annotations

import time
from typing import Any

from fablecast.bench.fanout import machine
from fablecast.bench.loadgen import connect_viewers, loadgen_main
from fablecast.bench.procs import Child, ask_all
from fablecast.bench.serverproc import server_main
from fablecast.bench.stats import Histogram

_GROUP = "votes"
#: Offered vote-rate steps (votes/s over all rooms).
DEFAULT_VOTE_RATES = (5000.0, 10000.0, 15000.0, 20000.0, 25000.0, 30000.0, 40000.0)


def _merge_reports(reps: list[dict[str, Any]]) -> dict[str, Any]:
    expected: dict[int, dict[int, int]] = {}
    voters: dict[int, int] = {}
    tallies: dict[int, list[Any]] = {}
    lat = Histogram()
    ack = Histogram()
    errors: dict[str, int] = {}
    out = {"sent": 0, "acked": 0, "unanswered": 0, "probe_timeouts": 0, "acks_window": 0}
    for r in reps:
        for key in out:
            out[key] += r[key]
        for room, counts in r["expected"].items():
            into = expected.setdefault(int(room), {})
            for opt, n in counts.items():
                into[int(opt)] = into.get(int(opt), 0) + n
        for room, n in r["voters"].items():
            voters[int(room)] = voters.get(int(room), 0) + n
        for room, t in r["tallies"].items():
            tallies[int(room)] = t  # every viewer of a room sees the same latest tally
        for code, n in r["errors"].items():
            errors[code] = errors.get(code, 0) + n
        lat.merge_wire(r["tally_latency"])
        ack.merge_wire(r["vote_ack"])
    return {
        **out,
        "expected": expected,
        "voters": voters,
        "tallies": tallies,
        "errors": errors,
        "tally_latency": lat,
        "vote_ack": ack,
        "loadgen_cpu_util": [r["cpu"]["util"] for r in reps],
    }


def _check(merged: dict[str, Any]) -> dict[str, int]:
    """Compare each room's last tally with the votes its viewers hold."""
    lost = merged["unanswered"]
    double = 0
    for room, exp in merged["expected"].items():
        tally = merged["tallies"].get(room)
        counts: list[int] = tally[1] if tally else []
        for opt in range(max(len(counts), max(exp, default=-1) + 1)):
            have = counts[opt] if opt < len(counts) else 0
            want = exp.get(opt, 0)
            if have > want:
                double += have - want
            elif want > have:
                lost += want - have
        n = tally[2] if tally else 0
        double += max(0, n - merged["voters"].get(room, 0))
    return {"lost_votes": lost, "double_counted": double}


def run_votes(
    *,
    rooms: int = 4,
    clients: int = 500,
    codec: str = "fablecast.v1.json",
    rates: tuple[float, ...] = DEFAULT_VOTE_RATES,
    duration_s: float = 3.0,
    p99_bound_ms: float = 100.0,
    retries: int = 1,
    burst: int = 10000,
    procs: int = 1,
    tick_ms: int = 50,
    messages_per_s: float = 100.0,
    log: Any = None,
) -> dict[str, Any]:
    """Run the votes bench (see the module docstring) and build its report."""
    started = time.time()
    mach = machine()
    opts: dict[str, Any] = {
        "tick_ms": tick_ms,
        "tokens_per_s": 500.0,
        "beat_tokens": 8,
        "rooms": rooms,
        "room": {"vote_s": 3600.0, "reveal_s": 0.0, "n_choices": 5},
        "server": {"messages_per_s": messages_per_s, "message_burst": int(messages_per_s * 2)},
    }
    server = Child(server_main, "fablecast", opts, name="server-votes")
    gens: list[Child] = []
    try:
        ready_port = server.wait(60)["port"]
        gens = [Child(loadgen_main, codec, False, name=f"loadgen-{i}") for i in range(procs)]
        connect_viewers(gens, ready_port, clients, rooms, _GROUP)
        with_ballot = sum(ask_all(gens, "wait_ballot", {"group": _GROUP, "timeout_s": 30}))
        if with_ballot < clients:
            raise RuntimeError(f"only {with_ballot} of {clients} viewers saw a ballot")

        def phase(offered: float, seconds: float) -> tuple[dict[str, Any], dict[str, Any], float]:
            server.ask("reset")
            ask_all(gens, "reset", _GROUP)
            ask_all(gens, "reset_probes")
            t0 = time.monotonic()
            for k, g in enumerate(gens):
                arg = {"group": _GROUP, "rate": offered / len(gens), "duration_s": seconds}
                g.conn.send(("vote_load", {**arg, "probes": k == 0}))
            for g in gens:
                g.wait(seconds + 60)
            # Wait (bounded) until every vote is answered.
            deadline = time.monotonic() + 10
            while True:
                merged = _merge_reports(ask_all(gens, "vote_report", _GROUP))
                if merged["unanswered"] == 0 or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            answered_s = time.monotonic() - t0
            stats = server.ask("stats")
            return merged, stats, answered_s

        phase(rates[0] / 2, 1.0)  # warm-up
        steps: list[dict[str, Any]] = []
        best: dict[str, Any] | None = None
        for offered in rates:
            for _attempt in range(retries + 1):
                merged, stats, answered = phase(offered, duration_s)
                acks_per_s = merged["acks_window"] / answered
                p99 = merged["tally_latency"].percentile_ms(0.99)
                step = {
                    "offered_votes_per_s": offered,
                    "votes_per_s": round(acks_per_s, 1),
                    "answered_s": round(answered, 2),
                    "tally_latency_ms": merged["tally_latency"].summary(0.5, 0.99),
                    "tally_samples": merged["tally_latency"].total,
                    "tally_probe_timeouts": merged["probe_timeouts"],
                    "vote_ack_latency_ms": merged["vote_ack"].summary(0.5, 0.99),
                    "server_cpu_util": stats["cpu"]["util"],
                    "loop_lag_ms_p99": _lag_p99(stats),
                    "loadgen_cpu_util": merged["loadgen_cpu_util"],
                    "unanswered": merged["unanswered"],
                }
                step["sustained"] = bool(
                    acks_per_s >= 0.95 * offered
                    and p99 is not None
                    and p99 <= p99_bound_ms
                    and merged["unanswered"] == 0
                )
                steps.append(step)
                if log is not None:
                    log(f"votes offered={offered:g}/s: {step}")
                if step["sustained"]:
                    best = step
                    break
            else:
                break
        burst_merged, b_stats, b_answered = phase(float(burst), 1.0)
        if log is not None:
            log(f"burst: acks={burst_merged['acks_window']} in {b_answered:.2f}s")
        time.sleep(max(0.5, 4 * tick_ms / 1000))
        final = _merge_reports(ask_all(gens, "vote_report", _GROUP))
        check = _check(final)
        ask_all(gens, "close")
    finally:
        for g in gens:
            g.stop()
        server.stop()

    # Latencies of the best sustained step; of the first step when none was sustained.
    top = best or (steps[0] if steps else {})
    util = top.get("server_cpu_util")
    votes_per_s = best["votes_per_s"] if best else 0.0
    return {
        "bench": "votes",
        "rooms": rooms,
        "clients": clients,
        "codec": codec,
        "tick_ms": tick_ms,
        "votes_per_s": votes_per_s,
        "sustained": best is not None,
        "server_cpu_util": util,
        "votes_per_s_per_core": round(votes_per_s / util, 1) if util else None,
        "max_ingest_votes_per_s": max((s["votes_per_s"] for s in steps), default=0.0),
        "tally_latency_ms": top.get("tally_latency_ms"),
        "tally_samples": top.get("tally_samples", 0),
        "vote_ack_latency_ms": top.get("vote_ack_latency_ms"),
        "lost_votes": check["lost_votes"],
        "double_counted": check["double_counted"],
        "rejected": final["errors"],
        "burst": {
            "votes": burst_merged["acks_window"],
            "offered": burst,
            "all_answered_s": round(b_answered, 3),
            "tally_latency_ms": burst_merged["tally_latency"].summary(0.5, 0.99),
            "vote_ack_latency_ms": burst_merged["vote_ack"].summary(0.5, 0.99),
            "server_cpu_util": b_stats["cpu"]["util"],
        },
        "sent": final["sent"],
        "acked": final["acked"],
        "loop_lag_ms_p99": top.get("loop_lag_ms_p99"),
        "loadgen": {"procs": procs, "cpu_util": top.get("loadgen_cpu_util")},
        "steps": steps,
        "limits": {"messages_per_s": messages_per_s, "message_burst": int(messages_per_s * 2)},
        "machine": mach,
        "elapsed_s": round(time.time() - started, 1),
    }


def _lag_p99(stats: dict[str, Any]) -> float | None:
    h = Histogram()
    h.merge_wire(stats["loop_lag"])
    return h.percentile_ms(0.99)
