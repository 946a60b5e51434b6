"""``fablecast serve``: run one node until interrupted, then drain."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from typing import Any

from fablecast.server.config import Config, ConfigError, apply_story, load_config
from fablecast.server.node import Node
from fablecast.server.store import StoreError

log = logging.getLogger("fablecast")


def register(sub: Any) -> None:
    """Add ``serve`` to the ``fablecast`` command."""
    p = sub.add_parser("serve", help="run a Fablecast node (opens room 'demo' by default)")
    p.add_argument("--config", help="TOML config file (see docs/configuration.md)")
    p.add_argument("--engine", help="engine kind: scripted, vllm, openai, transformers")
    p.add_argument("--model", help="model for the engine (HF directory or hub name)")
    p.add_argument(
        "--story",
        metavar="FILE|PRESET",
        help="story spec for every room: a TOML file or a preset "
        "(lantern_market, noir, space_opera, fairy_tale, wuxia; docs/stories.md)",
    )
    p.add_argument("--host", help="listen address (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="listen port (default 8765; 0 picks a free one)")
    p.add_argument("--tick-ms", type=int, help="coalescing tick in ms (default 50)")
    p.add_argument("--data-dir", help="folder of the event log (default ./data; docs/store.md)")
    p.add_argument("--store", help="event log URL: an SQLite path or postgresql://...")
    p.add_argument(
        "--no-store", action="store_true", help="no event log: a restart loses every story"
    )
    p.add_argument("--no-uvloop", action="store_true", help="use asyncio's default event loop")
    p.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING (default INFO)")
    p.set_defaults(func=run)


def configure(args: argparse.Namespace) -> Config:
    """The config file, overridden by the command-line flags that were given."""
    config = load_config(args.config)
    s = config.server
    if args.host is not None:
        s.host = args.host
    if args.port is not None:
        s.port = args.port
    if args.tick_ms is not None:
        s.tick_ms = args.tick_ms
    if args.no_uvloop:
        s.uvloop = False
    if args.data_dir is not None:
        config.store.data_dir = args.data_dir
    if args.store is not None:
        config.store.url = args.store
    if args.no_store:
        config.store.enabled = False
    if args.engine is not None:
        config.engine.kind = args.engine
    if args.model is not None:
        config.engine.model = args.model
    if getattr(args, "story", None):
        for rc in config.rooms:
            rc.story = args.story
            apply_story(rc)
    return config


async def serve(config: Config) -> None:
    """Run a node until SIGINT/SIGTERM, then drain."""
    node = Node(config)
    await node.start()
    shown = "127.0.0.1" if config.server.host in ("0.0.0.0", "::") else config.server.host
    base = f"{shown}:{node.port}"
    print(f"Fablecast serving on http://{base}  (engine: {node.engine.name}, {node.engine.model})")
    print(f"  health:  http://{base}/healthz   ready: http://{base}/readyz   metrics: /metrics")
    print(f"  home:    http://{base}/")
    if node.archive is not None:
        print(f"  event log: {node.archive.log.where}  (transcripts: /api/rooms/<room>/transcript)")
    for name in node.rooms:
        pages = f"http://{base}/watch/{name}   overlay: /overlay/{name}   vr: /vr/{name}"
        print(f"  room {name}:  {pages}")
        print(f"  {' ' * len(name)}        fablecast watch {node.url(name, shown)}")
        print(f"  {' ' * len(name)}        fablecast play  {node.url(name, shown)}")
    sys.stdout.flush()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    print("draining...", flush=True)
    await node.stop()


def run(args: argparse.Namespace) -> int:
    """Entry point of ``fablecast serve``."""
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # One line per connection at INFO is noise at thousands of viewers.
    logging.getLogger("websockets").setLevel(max(logging.WARNING, logging.root.level))
    try:
        config = configure(args)
    except ConfigError as exc:
        print(f"fablecast serve: {exc}", file=sys.stderr)
        return 2
    loop_factory = None
    if config.server.uvloop:
        try:
            import uvloop

            loop_factory = uvloop.new_event_loop
        except ImportError:
            log.info("uvloop not installed; using the default event loop")
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            runner.run(serve(config))
    except StoreError as exc:  # corrupt, foreign or newer database; PostgreSQL unreachable
        print(f"fablecast serve: event log: {exc}", file=sys.stderr)
        return 3
    except (OSError, ValueError) as exc:
        print(f"fablecast serve: {exc}", file=sys.stderr)
        return 1
    return 0
