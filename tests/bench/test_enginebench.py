"""The engine benchmark's arithmetic, and a whole run on the scripted engine."""

from __future__ import annotations

from fablecast.bench.enginebench import PassStats, bench_engine, bench_requests, percentile
from fablecast.inference.backends.scripted import ScriptedEngine


def test_percentile_nearest_rank() -> None:
    values = [float(i) for i in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile([], 50) == 0.0
    assert percentile([3.0], 99) == 3.0


def test_requests_are_greedy_and_distinct() -> None:
    reqs = bench_requests(5, 16, "t")
    assert len({r.request_id for r in reqs}) == 5
    assert len({r.room for r in reqs}) == 5
    assert all(r.temperature == 0.0 and r.max_tokens == 16 for r in reqs)


def test_summary_shape() -> None:
    s = PassStats(tokens=100, wall_s=2.0, ttft_s=[0.1], itl_s=[0.01, 0.02])
    out = s.summary()
    assert out["tok_s"] == 50.0 and out["ttft_ms"]["p50"] == 100.0


async def test_bench_on_scripted_engine() -> None:
    engine = ScriptedEngine(tokens_per_s=400, first_token_s=0)
    result = await bench_engine(kind="scripted", rooms=4, max_tokens=10, passes=1, engine=engine)
    assert result["engine_tok_s"] > 0 and result["served_tok_s"] > 0
    assert 0.3 < result["overhead_ratio"] < 3
    for key in ("ttft_ms", "itl_ms"):
        assert set(result[key]) == {"engine", "served"}
        assert set(result[key]["served"]) == {"p50", "p99"}
    assert result["engine_path"]["errors"] == 0 and result["served_path"]["errors"] == 0
