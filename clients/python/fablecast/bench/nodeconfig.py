"""Builds the real ``Node`` for a bench: loopback, a free port, N rooms, the bench engine."""

from __future__ import annotations

import atexit
import shutil
import tempfile
from typing import Any

from fablecast.bench.engine import StampEngine
from fablecast.server.config import Config, EngineConfig, RoomConfig, ServerConfig, StoreConfig
from fablecast.server.node import Node

#: ServerConfig fields a bench may override through its options (``server`` dict).
_SERVER_KEYS = frozenset(ServerConfig.__struct_fields__)
_ROOM_KEYS = frozenset(RoomConfig.__struct_fields__) - {"name"}


def bench_config(opts: dict[str, Any]) -> Config:
    """The node config of a bench run.

    ``opts``: ``rooms`` (count, named ``bench0..``), ``tick_ms``, ``beat_tokens``
    (narration tokens per beat), optional ``server`` and ``room`` override dicts,
    and ``store``: the event log, on as by default but in a fresh temporary
    folder (so no bench restores another's rooms); ``store: false`` turns it off.
    """
    server: dict[str, Any] = {"host": "127.0.0.1", "port": 0, "tick_ms": int(opts["tick_ms"])}
    # Every simulated viewer connects from loopback: per-address limits (sized for
    # one host of real people, docs/security.md) would cap the bench at 32 viewers.
    server |= {
        "max_connections_per_address": 1_000_000,
        "address_messages_per_s": 1e9,
        "address_message_burst": 1_000_000_000,
        "anonymous_votes_per_address": 1_000_000_000,
        "anonymous_reactions_per_address_per_s": 1e9,
        "anonymous_reaction_burst_per_address": 1_000_000_000,
    }
    server.update({k: v for k, v in dict(opts.get("server") or {}).items() if k in _SERVER_KEYS})
    room: dict[str, Any] = {
        "narration_tokens": int(opts.get("beat_tokens", 4096)),
        "vote_s": 0.5,
        "reveal_s": 0.0,
        # Fan-out is measured against a bare broadcast that filters nothing; the
        # safety filter's holdback has its own bench (``fablecast.bench.holdback``).
        "filter": False,
    }
    room.update({k: v for k, v in dict(opts.get("room") or {}).items() if k in _ROOM_KEYS})
    store_opt = opts.get("store", True)
    if store_opt is False:
        store = StoreConfig(enabled=False)
    else:
        extra = store_opt if isinstance(store_opt, dict) else {}
        tmp = tempfile.mkdtemp(prefix="fablecast-bench-store-")
        atexit.register(shutil.rmtree, tmp, True)
        store = StoreConfig(**{"data_dir": tmp, **extra})
    return Config(
        store=store,
        server=ServerConfig(**server),
        # Beats as long as the room asks (the scheduler caps requests at 512
        # tokens by default): fewer pauses between beats inside a window.
        engine=EngineConfig(
            kind="scripted",
            stall_timeout_s=30.0,
            # Token latency is timed per token: no holding back to sentence ends.
            sentence_guard=False,
            scheduler={"max_tokens_cap": max(512, int(room["narration_tokens"]))},
        ),
        rooms=[RoomConfig(name=f"bench{i}", **room) for i in range(int(opts.get("rooms", 1)))],
    )


def make_node(engine: StampEngine, opts: dict[str, Any]) -> Node:
    """A node for ``opts`` (see ``bench_config``) narrating with ``engine``."""
    return Node(bench_config(opts), engine=engine)


def node_connections(node: Node) -> int:
    """Viewers attached to the node's rooms."""
    return sum(r.fanout.subscriber_count for r in node.rooms.values())


def node_counters(node: Node) -> dict[str, float]:
    """The node's own counters the benches report (slow clients dropped, resumes)."""
    out: dict[str, float] = {}
    m = node.metrics
    for name, counter in (("slow_dropped", m.slow_clients_dropped), ("resumes", m.resumes)):
        total = 0.0
        for metric in counter.collect():
            for sample in metric.samples:
                if sample.name.endswith("_total"):
                    total += sample.value
        out[name] = total
    out["room_state"] = room_state_bytes(node)
    return out


def room_state_bytes(node: Node) -> int:
    """Bytes of narrative state the rooms hold, whoever watches: the resume history
    (encoded frames), the held story and the beat in progress (text).

    Per room, not per connection: the fan-out bench reports memory per connection
    net of it (and gross). Object headers are not counted, so the net figure errs
    on the high side.
    """
    total = 0
    for runner in node.rooms.values():
        room = runner.room
        total += runner.stream.history.bytes + len(room.partial.text())
        total += sum(len(b.text) + len(b.choice or "") for b in room.story)
    return total
