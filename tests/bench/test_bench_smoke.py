"""Smoke runs of each bench with tiny parameters: JSON shape and zero loss.

Each starts real processes (server, load generator) on 127.0.0.1 and takes a
few seconds; they check the machinery, not the figures.
"""

from __future__ import annotations

import json

import pytest

from fablecast.bench.soak import run_soak
from fablecast.bench.votes import run_votes
from fablecast.cli import main

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


def test_fanout_cli_json(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "bench",
            "fanout",
            "--rooms",
            "2",
            "--clients",
            "6",
            "--rates",
            "20",
            "--warm",
            "0.3",
            "--step",
            "1",
            "--json",
        ]
    )
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    for key in (
        "deliveries_per_s",
        "baseline_deliveries_per_s",
        "ratio_vs_raw",
        "latency_ms",
        "spread_ms",
        "lost",
        "duplicated",
        "reordered",
        "mem_per_conn_kib",
        "mem_per_conn_gross_kib",
        "room_state_peak_mib",
        "loop_lag_ms_p99",
        "loadgen",
    ):
        assert key in result, key
    # The node's rooms hold narrative state (history at least); the bare baseline none.
    assert result["room_state_peak_mib"] > 0
    assert result["sides"]["raw"]["room_state_peak_mib"] == 0
    assert set(result["latency_ms"]) == {"p50", "p99", "p999"}
    assert result["lost"] == result["duplicated"] == result["reordered"] == 0
    # Figures depend on the (shared) machine: check that both sides delivered.
    for side in ("raw", "fablecast"):
        assert result["sides"][side]["steps"][0]["deliveries_per_s"] > 0
    assert result["loadgen"]["cpu_util"]


def test_votes_smoke() -> None:
    result = run_votes(rooms=2, clients=10, rates=(200.0,), duration_s=1.0, burst=200)
    for key in ("votes_per_s", "tally_latency_ms", "lost_votes", "double_counted", "burst"):
        assert key in result, key
    assert set(result["tally_latency_ms"]) == {"p50", "p99"}
    assert result["max_ingest_votes_per_s"] > 0
    assert result["tally_samples"] > 0
    assert result["lost_votes"] == 0
    assert result["double_counted"] == 0
    assert result["burst"]["votes"] > 0


def test_soak_smoke() -> None:
    result = run_soak(minutes=0.07, rooms=2, clients=8, mean_gap_s=0.7, long_stall_s=1.0)
    for key in (
        "lost",
        "duplicated",
        "reordered",
        "resumes_recovered",
        "resumes_not_recovered",
        "slow_closed",
        "rss_start_mib",
        "rss_end_mib",
    ):
        assert key in result, key
    assert result["lost"] == result["duplicated"] == result["reordered"] == 0
    assert result["open_at_end"] == 8
    assert sum(result["actions"].values()) > 0
