"""``fablecast eval``: score the story on a real engine (docs/quality.md)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    SubParsers = argparse._SubParsersAction[argparse.ArgumentParser]


def register(sub: SubParsers) -> None:
    """Add ``eval``."""
    from fablecast.inference.story.spec import PRESETS

    p = sub.add_parser(
        "eval",
        help="play a scripted audience through story presets and score the story",
        description="Plays every --story preset as a concurrent room on one engine for --beats "
        "beats (votes spread over all options, scripted mood swings) and prints the metrics "
        "of docs/quality.md per preset and overall.",
    )
    p.add_argument(
        "--story",
        action="append",
        metavar="PRESET|FILE",
        help=f"a preset ({', '.join(PRESETS)}) or a spec file; repeat it; "
        "default: noir, space_opera, fairy_tale, wuxia",
    )
    p.add_argument("--beats", type=int, default=12, help="beats per story (default 12)")
    p.add_argument(
        "--engine", default="vllm", choices=("vllm", "transformers", "scripted"), help="engine"
    )
    p.add_argument("--model", default=None, help="model path (default: the default model)")
    p.add_argument("--json", action="store_true", help="print one JSON object per line")
    p.add_argument(
        "--openings",
        type=int,
        default=None,
        help="candidate openings per beat after a vote, best one continued "
        "(default 4; 1 with the scripted engine)",
    )
    p.add_argument(
        "--opening-tokens", type=int, default=None, help="token limit of a candidate opening"
    )
    p.add_argument(
        "--tone-weight", type=float, default=None, help="weight of tone in the opening's score"
    )
    p.add_argument(
        "--reveal",
        type=float,
        default=0.0,
        metavar="S",
        help="model the node's reveal pause: openings start at vote close, narration S "
        "seconds later; latencies exclude S (default 0)",
    )
    p.add_argument(
        "--adapter",
        default="none",
        metavar="none|narrator|FOLDER",
        help="LoRA adapter for narration (vllm): none = the base model (default); narrator = "
        "the shipped narrator adapter of the default model; or an adapter folder",
    )
    p.add_argument(
        "--no-tone-pass",
        dest="tone_pass",
        action="store_false",
        help="with best-of-n openings, stream the rest of the beat instead of best-of-n by tone",
    )
    p.add_argument(
        "--tone-by",
        choices=("sentence", "rest"),
        default="sentence",
        help="the tone pass picks each next sentence among N candidates (sentence, the "
        "default) or the best of N whole rests of the beat (rest)",
    )
    p.add_argument(
        "--tone-rounds",
        type=int,
        default=1,
        metavar="N",
        help="with --tone-by rest: rounds of the tone pass at most; another only when no rest "
        "is in tone (default 1)",
    )
    p.add_argument("--transcripts", type=Path, help="write each story as Markdown into this folder")
    p.set_defaults(func=_eval)


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    from fablecast.eval.run import evaluate_on, transcript
    from fablecast.inference.narrator import DEFAULT_OPENINGS
    from fablecast.inference.story.spec import EVAL_PRESETS, load_spec

    stories = args.story or list(EVAL_PRESETS)
    for story in stories:
        load_spec(story)  # a bad spec is refused before the engine starts
    opts: dict[str, Any] = {}
    if args.engine == "vllm":
        opts = {"max_num_seqs": 32}
        if args.adapter in ("none", "narrator"):
            opts["narration_adapter"] = args.adapter
        else:
            opts["adapters"] = {"eval": args.adapter}
            opts["narration_adapter"] = "eval"
    extra: dict[str, Any] = {}
    if args.opening_tokens:
        extra["opening_tokens"] = args.opening_tokens
    if args.tone_weight is not None:
        extra["tone_weight"] = args.tone_weight
    runs, report, _embedder = await evaluate_on(
        args.engine,
        args.model,
        opts,
        stories,
        args.beats,
        progress=True,
        openings=args.openings or (1 if args.engine == "scripted" else DEFAULT_OPENINGS),
        reveal_s=args.reveal,
        rests=args.tone_pass,
        tone_rounds=args.tone_rounds,
        tone_by=args.tone_by,
        **extra,
    )
    if args.transcripts:
        args.transcripts.mkdir(parents=True, exist_ok=True)
        for run in runs:
            (args.transcripts / f"{run.preset}.md").write_text(transcript(run), encoding="utf-8")
    return report


def _eval(args: argparse.Namespace) -> int:
    from fablecast.inference.story.spec import SpecError

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.openings is not None and not 1 <= args.openings <= 16:
        print("error: --openings must be 1 to 16", file=sys.stderr)
        return 2
    if not 1 <= args.tone_rounds <= 4:
        print("error: --tone-rounds must be 1 to 4", file=sys.stderr)
        return 2
    if args.beats < 2:
        print("error: --beats must be at least 2", file=sys.stderr)
        return 2
    try:
        report = asyncio.run(_run(args))
    except SpecError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        head = {k: v for k, v in report.items() if k not in ("presets", "overall")}
        for name, figures in report["presets"].items():
            print(json.dumps({"preset": name, **head, **figures}))
        print(json.dumps({"preset": "overall", **head, **report["overall"]}))
    else:
        print(json.dumps(report, indent=2))
    return 0
