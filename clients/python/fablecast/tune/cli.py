"""``fablecast tune data|train``: the narrator adapter from data the repository generates.

    fablecast tune data --out tune/        # play presets best-of-n on vLLM; keep what passes
    fablecast tune train --data tune/examples.jsonl --out ADAPTER_DIR

docs/quality.md has the figures with and without the adapter.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fablecast.inference.story.embed import Embedder

    SubParsers = argparse._SubParsersAction[argparse.ArgumentParser]


def register(sub: SubParsers) -> None:
    """Add ``tune data`` and ``tune train``."""
    from fablecast.tune.data import TRAIN_PRESETS

    p = sub.add_parser("tune", help="build the narrator's LoRA adapter (data, train)")
    tsub = p.add_subparsers(dest="tune_cmd", required=True)
    d = tsub.add_parser(
        "data",
        help="play presets with the best-of-n narrator on the real engine; keep beats that pass",
        description="Writes samples.jsonl (every beat) and examples.jsonl (the beats that act "
        "the winner out in the tone asked for, uncut, without meta-talk) into --out.",
    )
    d.add_argument(
        "--story",
        action="append",
        metavar="PRESET|FILE",
        help=f"repeat it; default: {', '.join(TRAIN_PRESETS)} (wuxia is held out)",
    )
    d.add_argument("--beats", type=int, default=16, help="beats per room (default 16)")
    d.add_argument("--rooms", type=int, default=2, help="rooms per story (default 2)")
    d.add_argument("--openings", type=int, default=6, help="candidates per beat (default 6)")
    d.add_argument("--engine", default="vllm", choices=("vllm", "scripted"))
    d.add_argument("--model", default=None, help="model path (default: the default model)")
    d.add_argument("--out", type=Path, required=True, help="folder for the JSONL files")
    d.set_defaults(func=_data)
    t = tsub.add_parser(
        "train",
        help="train a LoRA adapter (peft) on examples.jsonl",
        description="Trains on the base model's own chat template, loss on the target only; "
        "writes adapter_config.json, adapter_model.safetensors and fablecast-adapter.json.",
    )
    t.add_argument("--data", type=Path, required=True, help="examples.jsonl of `tune data`")
    t.add_argument("--out", type=Path, required=True, help="adapter folder to write")
    t.add_argument("--model", default=None, help="base model (default: the default model)")
    t.add_argument("--epochs", type=float, default=None)
    t.add_argument("--rank", type=int, default=None)
    t.add_argument("--lr", type=float, default=None)
    t.add_argument("--limit", type=int, default=None, help="train on the first N examples")
    t.add_argument(
        "--no-balance",
        dest="balance",
        action="store_false",
        help="do not repeat examples of rarer tones (default: repeat, up to 3 times each)",
    )
    t.set_defaults(func=_train)


async def _collect(
    args: argparse.Namespace,
) -> tuple[list[dict[str, Any]], dict[str, Any], Embedder]:
    from fablecast.eval.run import evaluate_on
    from fablecast.tune.data import TRAIN_PRESETS

    # More rooms than eval: a larger batch and KV cache keep every candidate running.
    opts: dict[str, Any] = {"max_num_seqs": 64, "kv_cache_gb": 4} if args.engine == "vllm" else {}
    samples: list[dict[str, Any]] = []
    _runs, report, embedder = await evaluate_on(
        args.engine,
        args.model,
        opts,
        args.story or list(TRAIN_PRESETS),
        args.beats,
        progress=True,
        openings=args.openings if args.engine != "scripted" else 1,
        rooms=args.rooms,
        samples=samples,
    )
    return samples, report, embedder


def _data(args: argparse.Namespace) -> int:
    from fablecast.inference.story.spec import SpecError, load_spec
    from fablecast.tune.data import select, write_jsonl

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.beats < 2 or args.rooms < 1 or not 1 <= args.openings <= 16:
        print("error: --beats >= 2, --rooms >= 1, --openings 1 to 16", file=sys.stderr)
        return 2
    try:
        for story in args.story or []:
            load_spec(story)
    except SpecError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    samples, report, embedder = asyncio.run(_collect(args))
    examples, why = select(samples, embedder)
    sha_s = write_jsonl(args.out / "samples.jsonl", samples)
    sha_e = write_jsonl(args.out / "examples.jsonl", [e.to_json() for e in examples])
    summary = {
        "samples": len(samples),
        "examples": len(examples),
        "left_out": why,
        "samples_sha256": sha_s,
        "examples_sha256": sha_e,
        "overall": {
            k: report["overall"].get(k)
            for k in ("choice_adherence", "mood_agreement", "wall_s", "narration_tokens_per_s")
        },
    }
    print(json.dumps(summary))
    return 0


def _train(args: argparse.Namespace) -> int:
    import hashlib

    from fablecast.inference.model import resolve_model
    from fablecast.tune.data import balance, read_jsonl
    from fablecast.tune.train import TrainConfig, train

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        rows = read_jsonl(args.data)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    bad = [i for i, r in enumerate(rows, 1) if not {"messages", "target"} <= set(r)]
    if bad or not rows:
        print(f"error: {args.data}: rows without messages/target: {bad[:5]}", file=sys.stderr)
        return 2
    if args.limit:
        rows = rows[: args.limit]
    if args.balance:
        rows = balance(rows)
    cfg = TrainConfig()
    if args.epochs is not None:
        cfg.epochs = args.epochs
    if args.rank is not None:
        cfg.rank, cfg.alpha = args.rank, 2 * args.rank
    if args.lr is not None:
        cfg.learning_rate = args.lr
    sha = hashlib.sha256(args.data.read_bytes()).hexdigest()
    base = resolve_model(args.model)
    manifest = train(
        rows,
        args.out,
        base=base,
        config=cfg,
        data_sha256=sha,
        log=lambda m: print(m, file=sys.stderr),
    )
    print(json.dumps(manifest))
    return 0
