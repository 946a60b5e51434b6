"""``fablecast bench holdback`` runs and reports the added latency of both quantiles."""

from __future__ import annotations

import json

import pytest

from fablecast.cli import main


def test_holdback_bench_json(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["bench", "holdback", "--rates", "50", "--warm", "0.3", "--step", "0.7", "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    (step,) = result["steps"]
    assert step["off"]["samples"] > 0 and step["on"]["samples"] > 0
    assert step["on"]["hold_chars"] > 0 and step["off"]["hold_chars"] == 0
    assert set(step["added_ms"]) == {"p50", "p99"}
    # The holdback delays words; it never makes them arrive earlier than without it.
    assert step["on"]["latency_ms"]["p50"] > step["off"]["latency_ms"]["p50"]
