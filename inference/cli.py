"""``fablecast model prepare``: provision the default model."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    SubParsers = argparse._SubParsersAction[argparse.ArgumentParser]


def register(sub: SubParsers) -> None:
    """Add ``model prepare``."""
    model = sub.add_parser("model", help="provision the default model")
    msub = model.add_subparsers(dest="model_command", required=True, metavar="ACTION")
    p = msub.add_parser("prepare", help="convert the bundled SmolLM2 GGUF into an HF directory")
    p.add_argument("--force", action="store_true", help="convert again even if valid")
    p.add_argument("--dtype", default="bfloat16", help="dtype of the saved weights")
    p.set_defaults(func=_prepare)


def _prepare(args: argparse.Namespace) -> int:
    from fablecast.inference.model import ModelError, prepare_default_model

    try:
        path = prepare_default_model(force=args.force, dtype=args.dtype)
    except ModelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(path)
    return 0
