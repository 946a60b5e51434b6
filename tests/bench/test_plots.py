"""server/bench/plots.py: memory per connection as a slope across client counts, and drawing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fablecast.bench.plots import draw, memory_slopes


def _report(clients: int, per_conn_kib: float, node_mib: float) -> dict[str, Any]:
    """A fan-out report whose node costs ``per_conn_kib`` per client plus ``node_mib``."""
    base = 30 * 2**20
    conns = clients * per_conn_kib * 1024

    def step(rate: float, rss: float, state: int) -> dict[str, Any]:
        return {
            "tokens_per_s_per_room": rate,
            "server_rss": rss,
            "room_state": state,
            "latency_ms": {"p50": 5.0, "p99": 9.0},
            "deliveries_per_s": rate * clients,
            "server_cpu_util": 0.5,
            "sustained": True,
        }

    # Under load the node grows by node_mib whatever the audience, and its rooms
    # hold 2 MiB of text (subtracted: room state).
    steps = [
        step(100.0, base + conns + node_mib * 2**20 + 2 * 2**20, 2 * 2**20),
        step(400.0, base + conns + 2 * node_mib * 2**20, 0),
    ]
    side = {"rss_idle_mib": (base + conns) / 2**20, "steps": steps}
    return {
        "clients": clients,
        "rooms": 10,
        "deliveries_per_s": 1.0,
        "baseline_deliveries_per_s": 1.0,
        "sides": {"fablecast": side, "raw": side},
    }


def test_slope_is_the_cost_of_one_more_connection() -> None:
    data = {"clients": [_report(n, 11.0, 7.0) for n in (100, 500, 1000, 2000)], "rooms": []}
    slopes = memory_slopes(data)
    assert slopes["idle"]["kib_per_conn"] == pytest.approx(11.0)
    assert slopes["100"]["kib_per_conn"] == pytest.approx(11.0)
    assert slopes["400"]["kib_per_conn"] == pytest.approx(11.0)
    assert slopes["600"]["kib_per_conn"] is None  # no such step: nothing to fit


def test_draw_writes_four_plots(tmp_path: Path) -> None:
    data = {"clients": [_report(n, 11.0, 7.0) for n in (100, 1000)], "rooms": []}
    written = draw(data, tmp_path)
    assert [p.name for p in written][-1] == "fanout-memory-vs-clients.png"
    assert all(p.stat().st_size > 1000 for p in written)
