"""Sweeps for docs/benchmarks.md and their plots: ``python -m fablecast.bench.plots``.

Runs the fan-out bench over client counts (capacity search at each) and over
room counts (one fixed rate), stores every report in ``--data`` (JSON), then
draws three PNGs into ``--out``:

- ``fanout-latency-vs-clients.png``: token latency p50/p99 at the first rate
  step (both sides) against clients;
- ``fanout-deliveries-vs-clients.png``: sustained deliveries/s (both sides)
  against clients;
- ``fanout-overhead-vs-rooms.png``: server CPU per delivery (both sides) and
  their ratio against rooms, at a fixed rate;
- ``fanout-memory-vs-clients.png``: the node's RSS (net of its rooms' narrative
  state) against clients, idle and at a few rate steps; the slope of each line
  is the memory one more connection costs at that load (``memory_slopes``,
  also printed as JSON).

``--from-data`` redraws from the stored JSON without running anything.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from fablecast.bench.fanout import DEFAULT_RATES, run_fanout

CLIENTS = (100, 250, 500, 1000, 2000)
CLIENTS_QUICK = (50, 200, 500)
ROOMS = (1, 5, 10, 25, 50, 100)
ROOMS_QUICK = (1, 10, 50)


def _first_step(report: dict[str, Any], side: str) -> dict[str, Any]:
    steps: list[dict[str, Any]] = report["sides"][side]["steps"]
    return steps[0] if steps else {}


def _cpu_us_per_delivery(step: dict[str, Any]) -> float | None:
    dps = step.get("deliveries_per_s") or 0
    util = step.get("server_cpu_util")
    if not dps or util is None:
        return None
    return round(float(util) / float(dps) * 1e6, 2)


def _nan(value: float | None) -> float:
    return float("nan") if value is None else float(value)


#: Rate steps (tokens/s per room) whose memory against clients is drawn and fitted.
MEMORY_RATES = (100.0, 400.0, 600.0)


def _memory_points(data: dict[str, Any], rate: float | None) -> list[tuple[int, float]]:
    """(clients, node RSS net of room state, MiB) at ``rate`` (None: idle), per sweep point.

    At a rate the step's largest RSS is taken (retries included).
    """
    points = []
    for r in data.get("clients", []):
        side = r["sides"]["fablecast"]
        if rate is None:
            points.append((int(r["clients"]), float(side["rss_idle_mib"])))
            continue
        rss = [
            (st["server_rss"] - st.get("room_state", 0)) / 2**20
            for st in side["steps"]
            if st["tokens_per_s_per_room"] == rate
        ]
        if rss:
            points.append((int(r["clients"]), max(rss)))
    return points


def _slope_kib(points: list[tuple[int, float]]) -> float | None:
    """Least-squares slope of MiB against clients, in KiB per client."""
    if len(points) < 2:
        return None
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    if not sxx:
        return None
    sxy = sum((x - mx) * (y - my) for x, y in points)
    return round(sxy / sxx * 1024, 2)


def memory_slopes(data: dict[str, Any]) -> dict[str, Any]:
    """Memory per connection of the node as the slope of RSS against clients.

    A single run divides everything the process grew by its connections,
    including what grows per node whatever the audience (allocator growth under
    load, per-room buffers); across client counts at the same rate step, that
    part cancels out and the slope is what one more connection costs.
    """
    out: dict[str, Any] = {}
    for rate in (None, *MEMORY_RATES):
        points = _memory_points(data, rate)
        key = "idle" if rate is None else f"{rate:g}"
        out[key] = {"kib_per_conn": _slope_kib(points), "points": points}
    return out


def run_sweeps(quick: bool, log: Any, data_path: Path | None = None) -> dict[str, Any]:
    """Run both sweeps; returns ``{"clients": [...], "rooms": [...]}`` of fan-out reports.

    A point that fails is logged and skipped; the data is saved after every point.
    """
    step_s = 2.0 if quick else 3.0
    data: dict[str, Any] = {"clients": [], "rooms": []}
    points: list[tuple[str, int, dict[str, Any]]] = [
        ("clients", n, {"rooms": 10, "clients": n, "rates": DEFAULT_RATES, "warm_s": 1.0})
        for n in (CLIENTS_QUICK if quick else CLIENTS)
    ]
    points += [
        ("rooms", r, {"rooms": r, "clients": 1000, "rates": (20.0,), "retries": 0})
        for r in (ROOMS_QUICK if quick else ROOMS)
    ]
    for kind, value, kwargs in points:
        log(f"sweep {kind}={value}")
        try:
            data[kind].append(run_fanout(step_s=step_s, **kwargs))
        except Exception as exc:
            log(f"sweep {kind}={value} failed: {type(exc).__name__}: {exc}")
            continue
        if data_path is not None:
            data_path.parent.mkdir(parents=True, exist_ok=True)
            data_path.write_text(json.dumps(data, indent=1))
    return data


def _save(fig: Any, ax: Any, path: Path) -> Path:
    """Legend, layout, write ``path`` and free the figure."""
    import matplotlib.pyplot as plt

    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def draw(data: dict[str, Any], out: Path) -> list[Path]:
    """Draw the three plots from sweep data; returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    sides = (("fablecast", "Fablecast node", "tab:blue"), ("raw", "bare broadcast()", "tab:gray"))

    clients = data.get("clients", [])
    xs = [r["clients"] for r in clients]
    fig, ax = plt.subplots(figsize=(6.4, 4))
    for side, label, color in sides:
        firsts = [_first_step(r, side) for r in clients]
        rate = firsts[0].get("tokens_per_s_per_room") if firsts else None
        for q, style in (("p50", "--"), ("p99", "-")):
            ys = [_nan((f.get("latency_ms") or {}).get(q)) for f in firsts]
            ax.plot(xs, ys, style, marker="o", color=color, label=f"{label} {q}")
    ax.axhline(100, color="tab:red", lw=0.8, ls=":", label="100 ms bound")
    ax.set_xlabel("clients (10 rooms)")
    ax.set_ylabel("token latency, engine yield -> client decode (ms)")
    ax.set_title(f"Latency at {rate:g} tokens/s per room" if clients and rate else "Latency")
    ax.set_xscale("log")
    written.append(_save(fig, ax, out / "fanout-latency-vs-clients.png"))

    fig, ax = plt.subplots(figsize=(6.4, 4))
    for side, label, color in sides:
        key = "deliveries_per_s" if side == "fablecast" else "baseline_deliveries_per_s"
        ys = [r[key] for r in clients]
        ax.plot(xs, ys, marker="o", color=color, label=label)
        # A side whose last step was still sustained never found its limit.
        for x, y, r in zip(xs, ys, clients, strict=True):
            steps = r["sides"][side]["steps"]
            if steps and steps[-1]["sustained"]:
                ax.annotate(
                    "rates exhausted",
                    (x, y),
                    fontsize=7,
                    color=color,
                    textcoords="offset points",
                    xytext=(4, -10),
                )
    ax.set_xlabel("clients (10 rooms)")
    ax.set_ylabel("sustained deliveries/s (p99 <= 100 ms, no loss)")
    ax.set_title("Fan-out capacity")
    ax.set_xscale("log")
    written.append(_save(fig, ax, out / "fanout-deliveries-vs-clients.png"))

    rooms = data.get("rooms", [])
    rx = [r["rooms"] for r in rooms]
    fig, ax = plt.subplots(figsize=(6.4, 4))
    for side, label, color in sides:
        ys = [_nan(_cpu_us_per_delivery(_first_step(r, side))) for r in rooms]
        ax.plot(rx, ys, marker="o", color=color, label=label)
    ax.set_xlabel("rooms (1000 clients, 20 tokens/s per room)")
    ax.set_ylabel("server CPU per delivery (us)")
    ax.set_xscale("log")
    ax.set_title("Fan-out overhead against rooms")
    written.append(_save(fig, ax, out / "fanout-overhead-vs-rooms.png"))

    fig, ax = plt.subplots(figsize=(6.4, 4))
    for key, fit in memory_slopes(data).items():
        points = fit["points"]
        if not points:
            continue
        label = "connected, idle" if key == "idle" else f"{key} tokens/s per room"
        if fit["kib_per_conn"] is not None:
            label += f": {fit['kib_per_conn']:.1f} KiB/conn"
        ax.plot([x for x, _ in points], [y for _, y in points], marker="o", label=label)
    ax.set_xlabel("clients (10 rooms)")
    ax.set_ylabel("node RSS net of room state (MiB)")
    ax.set_title("Memory against clients (slope = memory per connection)")
    written.append(_save(fig, ax, out / "fanout-memory-vs-clients.png"))
    return written


def main(argv: list[str] | None = None) -> int:
    """Command line: run the sweeps (or load ``--data``) and draw."""
    parser = argparse.ArgumentParser(prog="python -m fablecast.bench.plots", description=__doc__)
    parser.add_argument("--out", default="docs/img")
    parser.add_argument("--data", default="docs/img/bench-data.json")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--from-data", action="store_true")
    args = parser.parse_args(argv)
    data_path = Path(args.data)

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    if args.from_data:
        data = json.loads(data_path.read_text())
    else:
        data = run_sweeps(args.quick, log, data_path)
    for path in draw(data, Path(args.out)):
        print(path)
    slopes = {k: v["kib_per_conn"] for k, v in memory_slopes(data).items()}
    print(json.dumps({"mem_per_conn_kib_slope": slopes}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
