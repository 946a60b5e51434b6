"""``fablecast bench fanout|votes|soak|pages|engine|store|plots``: benchmarks (see
docs/benchmarks.md).

Each command prints one JSON object on stdout (``--json``; a short human summary
otherwise) and logs progress on stderr with ``-v``. Everything runs on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    SubParsers = argparse._SubParsersAction[argparse.ArgumentParser]


def _rates(text: str) -> tuple[float, ...]:
    return tuple(float(x) for x in text.split(",") if x.strip())


def _log(args: argparse.Namespace) -> Any:
    if not args.verbose:
        return None
    return lambda line: print(line, file=sys.stderr, flush=True)


def _emit(result: dict[str, Any], args: argparse.Namespace, keys: tuple[str, ...]) -> None:
    if args.json:
        print(json.dumps(result))
    else:
        for key in keys:
            print(f"{key}: {json.dumps(result.get(key))}")
    if args.output:
        with open(args.output, "w") as f:
            json.dump(result, f, indent=1)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--output", "-o", help="also write the full JSON report to this file")
    p.add_argument("--verbose", "-v", action="store_true", help="log each step on stderr")
    p.add_argument(
        "--codec",
        default="fablecast.v1.json",
        choices=("fablecast.v1.json", "fablecast.v1.msgpack"),
        help="subprotocol of every viewer",
    )
    p.add_argument("--procs", type=int, default=1, help="load generator processes")


def _fanout(args: argparse.Namespace) -> int:
    from fablecast.bench.fanout import run_fanout

    result = run_fanout(
        rooms=args.rooms,
        clients=args.clients,
        codec=args.codec,
        tick_ms=args.tick_ms,
        rates=_rates(args.rates),
        warm_s=args.warm,
        step_s=args.step,
        procs=args.procs,
        p99_bound_ms=args.p99_ms,
        retries=args.retries,
        store=not args.no_store,
        log=_log(args),
    )
    _emit(
        result,
        args,
        (
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
            "loop_lag_ms_p99",
            "loadgen",
        ),
    )
    return 0


def _votes(args: argparse.Namespace) -> int:
    from fablecast.bench.votes import run_votes

    result = run_votes(
        rooms=args.rooms,
        clients=args.clients,
        codec=args.codec,
        rates=_rates(args.rates),
        duration_s=args.duration,
        burst=args.burst,
        procs=args.procs,
        tick_ms=args.tick_ms,
        log=_log(args),
    )
    _emit(
        result,
        args,
        ("votes_per_s", "tally_latency_ms", "lost_votes", "double_counted", "burst"),
    )
    return 0


def _pages(args: argparse.Namespace) -> int:
    from fablecast.bench.pages import run_pages

    result = run_pages(
        pages=args.pages,
        duration_s=args.duration,
        tick_ms=args.tick_ms,
        tokens_per_s=args.tokens_per_s,
        log=_log(args),
    )
    _emit(result, args, ("pages", "tokens_measured", "unmatched_updates", "latency_ms"))
    return 0


def _soak(args: argparse.Namespace) -> int:
    from fablecast.bench.soak import run_soak

    result = run_soak(
        minutes=args.minutes,
        rooms=args.rooms,
        clients=args.clients,
        codec=args.codec,
        procs=args.procs,
        tick_ms=args.tick_ms,
        tokens_per_s=args.tokens_per_s,
        seed=args.seed,
        log=_log(args),
    )
    _emit(
        result,
        args,
        (
            "lost",
            "duplicated",
            "reordered",
            "resumes_recovered",
            "resumes_not_recovered",
            "slow_closed",
            "rss_start_mib",
            "rss_end_mib",
        ),
    )
    return 0


def _store(args: argparse.Namespace) -> int:
    from fablecast.bench.store import run_store_bench

    backends = ("sqlite", "postgres") if args.backend == "all" else (args.backend,)
    result = run_store_bench(
        backends=backends,
        events=args.events,
        producers=args.producers,
        serial=args.serial,
        pg_url=args.pg_url,
    )
    if args.json:
        print(json.dumps(result))
    else:
        print(json.dumps(result, indent=1))
    return 0


def _holdback(args: argparse.Namespace) -> int:
    from fablecast.bench.holdback import run_holdback

    result = run_holdback(
        rates=_rates(args.rates),
        viewers=args.viewers,
        warm_s=args.warm,
        measure_s=args.step,
        tick_ms=args.tick_ms,
    )
    _emit(result, args, ("feed_cost_us", "steps"))
    return 0


def _plots(args: argparse.Namespace) -> int:
    from fablecast.bench.plots import main as plots_main

    argv = ["--out", args.out, "--data", args.data]
    if args.quick:
        argv.append("--quick")
    if args.from_data:
        argv.append("--from-data")
    code: int = plots_main(argv)
    return code


def register(sub: SubParsers) -> None:
    """Add the ``bench`` group: ``fanout``, ``votes``, ``soak``, ``engine``, ``plots``."""
    from fablecast.bench.fanout import DEFAULT_RATES
    from fablecast.bench.votes import DEFAULT_VOTE_RATES

    bench = sub.add_parser("bench", help="benchmarks (loopback only)").add_subparsers(
        dest="bench_command", required=True, metavar="BENCH"
    )

    p = bench.add_parser("fanout", help="fan-out capacity vs a bare websockets broadcast")
    _common(p)
    p.add_argument("--rooms", type=int, default=10)
    p.add_argument("--clients", type=int, default=1000)
    p.add_argument("--tick-ms", type=int, default=10, help="coalescing tick of both sides")
    p.add_argument(
        "--rates",
        default=",".join(f"{r:g}" for r in DEFAULT_RATES),
        help="token-rate steps per room (tokens/s), comma-separated",
    )
    p.add_argument("--warm", type=float, default=1.0, help="warm-up seconds per step")
    p.add_argument("--step", type=float, default=3.0, help="measured seconds per step")
    p.add_argument("--p99-ms", type=float, default=100.0, help="latency bound of a sustained step")
    p.add_argument("--retries", type=int, default=2, help="re-measure a failed step (shared CPU)")
    p.add_argument(
        "--no-store", action="store_true", help="node without its event log (default: SQLite on)"
    )
    p.set_defaults(func=_fanout)

    p = bench.add_parser("votes", help="sustained vote ingestion, tally latency, a 10k burst")
    _common(p)
    p.add_argument("--rooms", type=int, default=4)
    p.add_argument("--clients", type=int, default=500, help="voting viewers")
    p.add_argument(
        "--rates",
        default=",".join(f"{r:g}" for r in DEFAULT_VOTE_RATES),
        help="offered votes/s steps, comma-separated",
    )
    p.add_argument("--duration", type=float, default=3.0, help="seconds per rate step")
    p.add_argument("--burst", type=int, default=10000, help="votes in the one-second burst")
    p.add_argument("--tick-ms", type=int, default=50)
    p.set_defaults(func=_votes)

    p = bench.add_parser("holdback", help="latency the safety filter's holdback adds")
    _common(p)
    p.add_argument("--rates", default="20,50", help="engine paces (tokens/s), comma-separated")
    p.add_argument("--viewers", type=int, default=4)
    p.add_argument("--warm", type=float, default=1.0, help="warm-up seconds per side")
    p.add_argument("--step", type=float, default=5.0, help="measured seconds per side")
    p.add_argument("--tick-ms", type=int, default=50)
    p.set_defaults(func=_holdback)

    p = bench.add_parser("soak", help="churn: join, leave, stall, resume for M minutes")
    _common(p)
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--rooms", type=int, default=4)
    p.add_argument("--clients", type=int, default=400)
    p.add_argument("--tick-ms", type=int, default=50)
    p.add_argument("--tokens-per-s", type=float, default=20.0)
    p.add_argument("--seed", type=int, default=1)
    p.set_defaults(func=_soak)

    p = bench.add_parser("pages", help="token latency from engine yield to the audience page's DOM")
    p.add_argument("--pages", type=int, default=50, help="browser contexts (default 50)")
    p.add_argument("--duration", type=float, default=20.0, help="seconds measured (default 20)")
    p.add_argument("--tick-ms", type=int, default=50, help="coalescing tick (default 50)")
    p.add_argument("--tokens-per-s", type=float, default=30.0, help="engine rate (default 30)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--output", "-o", help="also write the full JSON report to this file")
    p.add_argument("--verbose", "-v", action="store_true", help="log each step on stderr")
    p.set_defaults(func=_pages)

    p = bench.add_parser(
        "engine", help="tokens/s, TTFT, ITL: bare engine vs Fablecast's path, one run"
    )
    p.add_argument("--kind", default="vllm", help="engine kind (vllm, transformers, openai)")
    p.add_argument("--model", default=None, help="model (default: bundled SmolLM2-135M)")
    p.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=JSON",
        help="engine option, e.g. --option enforce_eager=true (repeatable)",
    )
    p.add_argument("--rooms", type=int, default=32, help="concurrent rooms (one request each)")
    p.add_argument("--tokens", type=int, default=128, help="max tokens per request")
    p.add_argument("--passes", type=int, default=2, help="alternating passes per path")
    p.add_argument("--json", action="store_true", help="print only the JSON object")
    p.set_defaults(func=_engine)

    p = bench.add_parser("store", help="event log: events/s and commit latency, SQLite and PG")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--backend", choices=("all", "sqlite", "postgres"), default="all")
    p.add_argument("--events", type=int, default=20_000, help="events of the throughput run")
    p.add_argument("--producers", type=int, default=10, help="rooms appending at once")
    p.add_argument("--serial", type=int, default=300, help="events appended one at a time")
    p.add_argument("--pg-url", help="PostgreSQL to use (default: a throwaway local cluster)")
    p.set_defaults(func=_store)

    p = bench.add_parser("plots", help="run the sweeps and draw docs/img/*.png")
    p.add_argument("--out", default="docs/img")
    p.add_argument("--data", default="docs/img/bench-data.json")
    p.add_argument("--quick", action="store_true", help="small sweeps (minutes, not tens)")
    p.add_argument("--from-data", action="store_true", help="redraw from --data, run nothing")
    p.set_defaults(func=_plots)


def _options(pairs: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        key, _, raw = pair.partition("=")
        try:
            out[key] = json.loads(raw)
        except ValueError:
            out[key] = raw
    return out


def _engine(args: argparse.Namespace) -> int:
    import os

    # vLLM logs to stdout by default: keep stdout for the JSON result.
    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")
    if args.json:
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    from fablecast.bench.enginebench import bench_engine

    result = asyncio.run(
        bench_engine(
            kind=args.kind,
            model=args.model,
            options=_options(args.option),
            rooms=args.rooms,
            max_tokens=args.tokens,
            passes=args.passes,
        )
    )
    if args.json:
        print(json.dumps(result))
    else:
        print(json.dumps(result, indent=2))
    return 0
