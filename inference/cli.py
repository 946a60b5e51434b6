"""``fablecast model prepare`` and ``fablecast bench engine``."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    SubParsers = argparse._SubParsersAction[argparse.ArgumentParser]


def _bench_group(sub: SubParsers, groups: dict[str, SubParsers]) -> SubParsers:
    from fablecast.cli import command_group

    return command_group(sub, groups, "bench", "benchmarks (loopback only)")


def register(sub: SubParsers, groups: dict[str, SubParsers]) -> None:
    """Add ``model prepare`` and ``bench engine``."""
    model = sub.add_parser("model", help="provision the default model")
    msub = model.add_subparsers(dest="model_command", required=True, metavar="ACTION")
    p = msub.add_parser("prepare", help="convert the bundled SmolLM2 GGUF into an HF directory")
    p.add_argument("--force", action="store_true", help="convert again even if valid")
    p.add_argument("--dtype", default="bfloat16", help="dtype of the saved weights")
    p.set_defaults(func=_prepare)

    p = _bench_group(sub, groups).add_parser(
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
    p.set_defaults(func=_bench)


def _prepare(args: argparse.Namespace) -> int:
    from inference.model import ModelError, prepare_default_model

    try:
        path = prepare_default_model(force=args.force, dtype=args.dtype)
    except ModelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(path)
    return 0


def _options(pairs: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        key, _, raw = pair.partition("=")
        try:
            out[key] = json.loads(raw)
        except ValueError:
            out[key] = raw
    return out


def _bench(args: argparse.Namespace) -> int:
    import os

    # vLLM logs to stdout by default: keep stdout for the JSON result.
    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")
    if args.json:
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    from inference.bench import bench_engine

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
