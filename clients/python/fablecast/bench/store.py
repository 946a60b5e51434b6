"""``fablecast bench store``: event-log write throughput and commit latency, SQLite and PostgreSQL.

Two measurements per backend, through the same ``StoreWriter`` the node uses:

- **throughput**: ``producers`` rooms append ``events`` events (a beat-sized
  JSON payload) as fast as the writer takes them, at most ``window`` in flight
  each; events/s, and the commit latency of each (append -> durable) as p50/p99.
  This is the batching path: many rooms, one transaction per batch.
- **serial**: one event at a time, each awaited before the next (what a single
  room's ``beat_end`` waits for): p50/p99 of one durable append.

SQLite runs in a temporary folder (``synchronous`` FULL and NORMAL); PostgreSQL
at ``--pg-url``, or in a throwaway cluster (``fablecast.bench.pgserver``) when
the Debian binaries are there.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fablecast.server.store import EventLog, StoreWriter, log_for_url

PAYLOAD = {
    "beat": 0,
    "text": "The lantern flickered once, then twice, and the courier understood. " * 6,
    "choice": "Follow the light",
    "mood": {"valence": 0.21, "arousal": 0.43, "intensity": 1.7},
}


def _pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return round(s[min(len(s) - 1, int(q * len(s)))] * 1000, 3) if s else 0.0


async def _throughput(log: EventLog, events: int, producers: int, window: int) -> dict[str, Any]:
    writer = StoreWriter(log, max_queue=producers * window + 1)
    task = asyncio.create_task(writer.run())
    latencies: list[float] = []
    per = max(1, events // producers)

    async def producer(i: int) -> None:
        inflight: list[asyncio.Future[int]] = []
        for n in range(per):
            fut = writer.append(f"bench{i}", "beat", {**PAYLOAD, "beat": n + 1})
            fut.add_done_callback(_stopwatch(latencies))
            inflight.append(fut)
            if len(inflight) >= window:
                await inflight.pop(0)
        await asyncio.gather(*inflight)

    t0 = time.perf_counter()
    await asyncio.gather(*(producer(i) for i in range(producers)))
    elapsed = time.perf_counter() - t0
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return {
        "events": per * producers,
        "producers": producers,
        "events_per_s": round(per * producers / elapsed),
        "commit_p50_ms": _pct(latencies, 0.50),
        "commit_p99_ms": _pct(latencies, 0.99),
    }


def _stopwatch(into: list[float]) -> Any:
    t = time.perf_counter()
    return lambda _fut: into.append(time.perf_counter() - t)


async def _serial(log: EventLog, events: int) -> dict[str, Any]:
    writer = StoreWriter(log)
    task = asyncio.create_task(writer.run())
    latencies = []
    for n in range(events):
        t = time.perf_counter()
        await writer.append("serial", "beat", {**PAYLOAD, "beat": n + 1})
        latencies.append(time.perf_counter() - t)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return {
        "events": events,
        "events_per_s": round(events / sum(latencies)),
        "commit_p50_ms": _pct(latencies, 0.50),
        "commit_p99_ms": _pct(latencies, 0.99),
    }


async def _bench(url: str, events: int, producers: int, window: int, serial: int) -> dict[str, Any]:
    log = log_for_url(url, synchronous="full")
    return await _bench_log(log, events, producers, window, serial)


async def _bench_log(
    log: EventLog, events: int, producers: int, window: int, serial: int
) -> dict[str, Any]:
    await log.open()
    try:
        return {
            "throughput": await _throughput(log, events, producers, window),
            "serial": await _serial(log, serial),
        }
    finally:
        await log.close()


@contextlib.contextmanager
def _pg(url: str | None) -> Iterator[str | None]:
    if url:
        yield url
        return
    from fablecast.bench.pgserver import pg_missing, postgres_server

    if pg_missing():
        yield None
        return
    with postgres_server(fsync=True) as fresh:
        yield fresh


def run_store_bench(
    *,
    backends: tuple[str, ...] = ("sqlite", "postgres"),
    events: int = 20_000,
    producers: int = 10,
    window: int = 64,
    serial: int = 300,
    pg_url: str | None = None,
) -> dict[str, Any]:
    """Measure each backend; one JSON-ready dict."""
    from fablecast.server.store.sqlite import SqliteLog

    out: dict[str, Any] = {
        "bench": "store",
        "machine": {
            "python": platform.python_version(),
            "cpus": _cpus(),
            "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        },
        "payload_bytes": len(str(PAYLOAD)),
    }
    if "sqlite" in backends:
        for sync in ("full", "normal"):
            with tempfile.TemporaryDirectory(prefix="fablecast-bench-sqlite-") as tmp:
                log = SqliteLog(Path(tmp) / "bench.sqlite3", synchronous=sync)
                out[f"sqlite_{sync}"] = asyncio.run(
                    _bench_log(log, events, producers, window, serial)
                )
    if "postgres" in backends:
        with _pg(pg_url) as url:
            if url is None:
                out["postgres"] = {"skipped": "no PostgreSQL binaries and no --pg-url"}
            else:
                out["postgres"] = asyncio.run(_bench(url, events, producers, window, serial))
    return out


def _cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 0
