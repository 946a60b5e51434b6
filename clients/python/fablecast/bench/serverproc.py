"""The server under test, in its own process: the real ``Node`` or the bare baseline.

Commands (see ``procs.serve_commands``): ``rate`` (set the engine's tokens per
second), ``pause``/``unpause`` (hold narration, to let clients drain), ``reset``
(new measurement window), ``stats`` (RSS, CPU, loop lag, connections, tokens).
"""

from __future__ import annotations

import multiprocessing.connection as mpc
from typing import Any

from fablecast.bench.engine import StampEngine
from fablecast.bench.procs import run_loop, serve_commands
from fablecast.bench.stats import CpuMeter, LoopLag, rss_bytes


class _Side:
    """What the process runs: start/stop/port/connections, the same for both sides."""

    port: int = 0

    async def start(self) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError

    def connections(self) -> int:
        raise NotImplementedError

    def extra(self) -> dict[str, Any]:
        return {}


class _Raw(_Side):
    def __init__(self, engine: StampEngine, opts: dict[str, Any]) -> None:
        from fablecast.bench.baseline import BaselineServer

        self.server = BaselineServer(
            engine, tick_ms=int(opts["tick_ms"]), beat_tokens=int(opts["beat_tokens"])
        )

    async def start(self) -> None:
        await self.server.start()
        self.port = self.server.port

    async def stop(self) -> None:
        await self.server.stop()

    def connections(self) -> int:
        return self.server.connections


class _Node(_Side):
    def __init__(self, engine: StampEngine, opts: dict[str, Any]) -> None:
        from fablecast.bench.nodeconfig import make_node

        self.node = make_node(engine, opts)

    async def start(self) -> None:
        await self.node.start()
        self.port = int(self.node.port)

    async def stop(self) -> None:
        await self.node.stop()

    def connections(self) -> int:
        from fablecast.bench.nodeconfig import node_connections

        return node_connections(self.node)

    def extra(self) -> dict[str, Any]:
        from fablecast.bench.nodeconfig import node_counters

        return node_counters(self.node)


def server_main(conn: mpc.Connection, side: str, opts: dict[str, Any]) -> None:
    """Process entry: run ``side`` ("raw" or "fablecast") until told to stop."""

    async def main() -> None:
        engine = StampEngine(tokens_per_s=float(opts["tokens_per_s"]))
        runner: _Side = _Raw(engine, opts) if side.startswith("raw") else _Node(engine, opts)
        lag = LoopLag()
        cpu = CpuMeter()
        rss0 = rss_bytes()
        await runner.start()
        lag.start()
        saved_rate = engine.tokens_per_s
        paused = False

        def rate(value: float) -> None:
            nonlocal saved_rate
            saved_rate = float(value)
            if not paused:
                engine.tokens_per_s = saved_rate

        def pause(_arg: Any) -> None:
            nonlocal paused
            paused = True
            engine.tokens_per_s = 0.5  # one token per 2 s: idle, but under any stall timeout

        def unpause(_arg: Any) -> None:
            nonlocal paused
            paused = False
            engine.tokens_per_s = saved_rate

        def reset(_arg: Any) -> None:
            lag.hist.clear()
            cpu.reset()
            engine.tokens_yielded = 0
            engine.narrating_s = 0.0

        def stats(_arg: Any) -> dict[str, Any]:
            return {
                "rss": rss_bytes(),
                "rss_start": rss0,
                "cpu": cpu.read(),
                "loop_lag": lag.hist.to_wire(),
                "connections": runner.connections(),
                "tokens": engine.tokens_yielded,
                "narrating_s": engine.narrating_s,
                **runner.extra(),
            }

        conn.send((True, {"port": runner.port, "rss": rss_bytes(), "rss_start": rss0}))
        try:
            await serve_commands(
                conn,
                {"rate": rate, "pause": pause, "unpause": unpause, "reset": reset, "stats": stats},
            )
        finally:
            await lag.stop()
            await runner.stop()

    run_loop(main)
