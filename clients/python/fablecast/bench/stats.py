"""Measurement helpers shared by the benches: histograms, seq tracking, process stats.

Everything here is plain data that crosses process boundaries as dicts/lists
(multiprocessing pipes), so a load generator process can report to the bench.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

#: Histogram bucket width, in microseconds (0.1 ms resolution).
BUCKET_US = 100
#: Buckets kept densely (0 .. 10 s); beyond that one overflow bucket with exact values.
N_BUCKETS = 100_000


class Histogram:
    """A latency histogram of fixed 0.1 ms buckets (up to 10 s, exact beyond).

    Cheap to feed from hot loops (one integer division and an increment), and
    mergeable across processes via ``to_wire``/``merge_wire``.
    """

    __slots__ = ("counts", "overflow", "total")

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.overflow: list[int] = []
        self.total = 0

    def add_us(self, us: int) -> None:
        """Record one sample, in microseconds (negative values count as 0)."""
        idx = us // BUCKET_US if us > 0 else 0
        if idx < N_BUCKETS:
            c = self.counts
            c[idx] = c.get(idx, 0) + 1
        else:
            self.overflow.append(us)
        self.total += 1

    def add_ns(self, ns: int) -> None:
        """Record one sample, in nanoseconds."""
        self.add_us(ns // 1000)

    def clear(self) -> None:
        """Forget every sample."""
        self.counts.clear()
        self.overflow.clear()
        self.total = 0

    def to_wire(self) -> dict[str, Any]:
        """A plain-dict copy for a pipe."""
        return {"counts": dict(self.counts), "overflow": list(self.overflow)}

    def merge_wire(self, wire: Mapping[str, Any]) -> None:
        """Add the samples of a ``to_wire`` dict."""
        counts: dict[int, int] = wire["counts"]
        for k, v in counts.items():
            self.counts[k] = self.counts.get(k, 0) + v
            self.total += v
        overflow: list[int] = wire["overflow"]
        self.overflow.extend(overflow)
        self.total += len(overflow)

    def percentile_ms(self, q: float) -> float | None:
        """The ``q`` quantile (0..1) in milliseconds, as a bucket's upper edge; None if empty."""
        if self.total == 0:
            return None
        rank = max(1, round(q * self.total + 0.5 - 1e-9))
        rank = min(rank, self.total)
        seen = 0
        for idx in sorted(self.counts):
            seen += self.counts[idx]
            if seen >= rank:
                return round((idx + 1) * BUCKET_US / 1000.0, 2)
        rest = sorted(self.overflow)
        return round(rest[rank - seen - 1] / 1000.0, 2)

    def summary(self, *qs: float) -> dict[str, float | None]:
        """``{"p50": ..., "p99": ...}`` for the quantiles asked (default p50, p99, p999)."""
        qs = qs or (0.5, 0.99, 0.999)
        out: dict[str, float | None] = {}
        for q in qs:
            name = "p" + f"{q * 100:g}".replace(".", "")
            out[name] = self.percentile_ms(q)
        return out


@dataclass(slots=True)
class SeqTracker:
    """Loss / duplicate / reorder accounting of one client's room frames (by ``seq``).

    A gap counts its frames as lost until they arrive late (then they are reordered
    instead); a frame at or below the last seq that was not missing is a duplicate.
    """

    last: int = -1
    missing: set[int] = field(default_factory=set)
    lost: int = 0
    duplicated: int = 0
    reordered: int = 0
    frames: int = 0

    def reset_to(self, seq: int) -> None:
        """Resync: the next expected frame is ``seq + 1`` (after a snapshot)."""
        self.last = seq
        self.missing.clear()

    def see(self, seq: int) -> None:
        """Account one room frame."""
        self.frames += 1
        last = self.last
        if seq == last + 1:
            self.last = seq
        elif seq > last + 1:
            if last >= 0:
                gap = range(last + 1, seq)
                self.lost += len(gap)
                if len(gap) <= 10_000:
                    self.missing.update(gap)
            self.last = seq
        elif seq in self.missing:
            self.missing.discard(seq)
            self.lost -= 1
            self.reordered += 1
        else:
            self.duplicated += 1


def merge_spread(into: dict[tuple[int, int], list[int]], part: Iterable[Any]) -> None:
    """Merge ``[(room, seq, first_ns, last_ns, n), ...]`` into ``{(room, seq): [first, last, n]}``.

    Each tuple is one process's view of a frame; the merged entry spans all of them.
    """
    for room, seq, first, last, n in part:
        cur = into.get((room, seq))
        if cur is None:
            into[(room, seq)] = [first, last, n]
        else:
            cur[0] = min(cur[0], first)
            cur[1] = max(cur[1], last)
            cur[2] += n


def spread_histogram(
    spread: Mapping[tuple[int, int], list[int]], clients_per_room: Mapping[int, int]
) -> Histogram:
    """First-to-last client receipt time of each frame that every client of its room got."""
    hist = Histogram()
    for (room, _seq), (first, last, n) in spread.items():
        if n >= clients_per_room.get(room, 0) > 0:
            hist.add_ns(last - first)
    return hist


class LoopLag:
    """Measures event-loop lag: how late a 10 ms sleep wakes up, into a histogram."""

    def __init__(self, interval_s: float = 0.01) -> None:
        self.interval_s = interval_s
        self.hist = Histogram()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start sampling on the running loop."""
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        interval = self.interval_s
        while True:
            t0 = time.perf_counter_ns()
            await asyncio.sleep(interval)
            late = time.perf_counter_ns() - t0 - int(interval * 1e9)
            self.hist.add_ns(max(0, late))

    async def stop(self) -> None:
        """Stop sampling."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


class CpuMeter:
    """CPU seconds (user+system, all threads) of this process over wall time since ``reset``."""

    def __init__(self) -> None:
        self._cpu0 = time.process_time()
        self._wall0 = time.monotonic()

    def reset(self) -> None:
        """Start a new window."""
        self._cpu0 = time.process_time()
        self._wall0 = time.monotonic()

    def read(self) -> dict[str, float]:
        """``{"cpu_s", "wall_s", "util"}`` since the last reset (util 1.0 = one core busy)."""
        cpu = time.process_time() - self._cpu0
        wall = max(1e-9, time.monotonic() - self._wall0)
        return {"cpu_s": round(cpu, 3), "wall_s": round(wall, 3), "util": round(cpu / wall, 3)}


def rss_bytes() -> int:
    """Resident set size of this process, in bytes."""
    import psutil

    rss: int = psutil.Process().memory_info().rss
    return rss
