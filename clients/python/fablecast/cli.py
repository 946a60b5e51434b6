"""The ``fablecast`` command: one parser, subcommands contributed by the packages that own them.

Each module in ``_REGISTRANTS`` exposes ``register(subparsers)``, adding parsers
whose ``func(args) -> int`` runs the command; none of them imports this module
(no import cycle). A module whose optional part is not installed is skipped.

- ``fablecast.server.cli``: ``serve``
- ``fablecast.server.store.cli``: ``transcript``, ``room rewind|fork``
- ``fablecast.server.tokencli``: ``token``
- ``fablecast.client.commands``: ``watch``, ``play``
- ``fablecast.inference.cli``: ``model prepare``
- ``fablecast.bench.cli``: ``bench fanout|votes|soak|engine|plots``
- ``fablecast.screenshots``: ``screenshots``
- ``fablecast.eval.cli``: ``eval`` (story quality on a real engine)
- ``fablecast.tune.cli``: ``tune data|train`` (the narrator's LoRA adapter)
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

_REGISTRANTS = (
    "fablecast.server.cli",
    "fablecast.server.store.cli",
    "fablecast.server.tokencli",
    "fablecast.client.commands",
    "fablecast.inference.cli",
    "fablecast.bench.cli",
    "fablecast.screenshots",
    "fablecast.eval.cli",
    "fablecast.tune.cli",
)


def build_parser() -> argparse.ArgumentParser:
    """The whole command line, with every available subcommand."""
    parser = argparse.ArgumentParser(
        prog="fablecast",
        description="Fablecast: a live-narrative server (serve), its clients (watch, play), "
        "its model (model) and its benchmarks (bench).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in _REGISTRANTS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name is not None and name.startswith(exc.name):
                continue  # that part is not installed
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
