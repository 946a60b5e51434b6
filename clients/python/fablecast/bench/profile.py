"""Profile the server's hot path under fan-out load: ``python -m fablecast.bench.profile``.

Starts one side (the node by default) and its viewers like ``bench fanout``,
streams at a fixed rate, and samples the server process with py-spy
(``pip install py-spy``) for a while. Prints the functions with the most
inclusive and self time (share of samples), from py-spy's collapsed stacks.
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fablecast.bench.loadgen import loadgen_main
from fablecast.bench.procs import Child, ask_all
from fablecast.bench.serverproc import server_main


def summarize(collapsed: str, top: int = 25) -> dict[str, list[tuple[str, float]]]:
    """Inclusive and self shares of the functions in py-spy collapsed stacks."""
    inclusive: collections.Counter[str] = collections.Counter()
    self_: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count_s = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_s)
        total += count
        frames = stack.split(";")
        for frame in set(frames):
            inclusive[frame] += count
        self_[frames[-1]] += count
    total = max(1, total)

    def share(c: collections.Counter[str]) -> list[tuple[str, float]]:
        return [(f, round(100.0 * n / total, 1)) for f, n in c.most_common(top)]

    return {"inclusive_pct": share(inclusive), "self_pct": share(self_)}


def main(argv: list[str] | None = None) -> int:
    """Command line (see the module docstring)."""
    p = argparse.ArgumentParser(prog="python -m fablecast.bench.profile", description=__doc__)
    p.add_argument("--side", default="fablecast", choices=("fablecast", "raw"))
    p.add_argument("--rooms", type=int, default=10)
    p.add_argument("--clients", type=int, default=1000)
    p.add_argument("--rate", type=float, default=40.0, help="tokens/s per room")
    p.add_argument("--tick-ms", type=int, default=10)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--rate-hz", type=int, default=250, help="py-spy samples per second")
    p.add_argument("--out", help="keep the collapsed stacks here")
    args = p.parse_args(argv)
    spy = shutil.which("py-spy")
    if spy is None:
        print("py-spy not found: pip install py-spy", file=sys.stderr)
        return 2
    opts = {
        "tick_ms": args.tick_ms,
        "tokens_per_s": args.rate,
        "beat_tokens": 4096,
        "rooms": args.rooms,
    }
    server = Child(server_main, args.side, opts, name=f"server-{args.side}")
    gens: list[Child] = []
    try:
        port = server.wait(60)["port"]
        gens = [Child(loadgen_main, "fablecast.v1.json", False, name="loadgen-0")]
        viewers = [(i, i % args.rooms, f"bench{i % args.rooms}") for i in range(args.clients)]
        gens[0].ask("connect", {"port": port, "viewers": viewers, "group": ""}, 120)
        time.sleep(2.0)
        ask_all(gens, "reset", "")
        server.ask("reset")
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(args.out or Path(tmp) / "stacks.txt")
            subprocess.run(
                [
                    spy,
                    "record",
                    "--pid",
                    str(server.proc.pid),
                    "--duration",
                    str(int(args.seconds)),
                    "--rate",
                    str(args.rate_hz),
                    "--format",
                    "raw",
                    "--nonblocking",
                    "--output",
                    str(out),
                ],
                check=True,
                capture_output=True,
            )
            text = out.read_text()
        stats = server.ask("stats")
        snap = gens[0].ask("snapshot", "")
        result = {
            "side": args.side,
            "server_cpu_util": stats["cpu"]["util"],
            "deliveries_per_s": round(snap["frames"] / snap["cpu"]["wall_s"], 1),
            **summarize(text),
        }
        for key in ("inclusive_pct", "self_pct"):
            print(f"== {key}")
            for frame, pct in result[key]:
                print(f"{pct:6.1f}%  {frame}")
        print(
            f"server cpu util {result['server_cpu_util']}, "
            f"deliveries/s {result['deliveries_per_s']}"
        )
    finally:
        for g in gens:
            g.stop()
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
