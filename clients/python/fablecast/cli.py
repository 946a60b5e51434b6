"""The ``fablecast`` command.

Subcommands are contributed by the packages that own them; each module below
exposes ``register(subparsers)``, adding parsers whose ``func(args) -> int``
runs the command. ``register(sub, groups)`` gets the top-level subparsers and a
dict of shared command groups: a module adding to a group such as ``bench``
takes ``groups["bench"]`` if another module created it, else creates the group
and stores its subparsers action there.

- ``server.cli``: ``serve``
- ``fablecast.commands``: ``watch``, ``play``
- ``inference.cli``: ``model prepare``, ``bench engine``
- ``server.bench.cli``: ``bench fanout|votes|soak``
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

_REGISTRANTS = ("server.cli", "fablecast.commands", "inference.cli", "server.bench.cli")


SubParsers = argparse._SubParsersAction  # the type of ``add_subparsers()``


def command_group(
    sub: SubParsers[argparse.ArgumentParser],
    groups: dict[str, SubParsers[argparse.ArgumentParser]],
    name: str,
    help: str,
) -> SubParsers[argparse.ArgumentParser]:
    """The subparsers of group ``name`` (e.g. ``bench``), created by whichever module asks first."""
    group = groups.get(name)
    if group is None:
        parser = sub.add_parser(name, help=help)
        group = parser.add_subparsers(dest=f"{name}_command", required=True, metavar=name.upper())
        groups[name] = group
    return group


def build_parser() -> argparse.ArgumentParser:
    """The whole command line, with every available subcommand."""
    parser = argparse.ArgumentParser(
        prog="fablecast",
        description="Fablecast: a live-narrative server (serve), its clients (watch, play), "
        "its model (model) and its benchmarks (bench).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    shared: dict[str, argparse._SubParsersAction[argparse.ArgumentParser]] = {}
    for name in _REGISTRANTS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name is not None and name.startswith(exc.name):
                continue  # that part is not installed / not written yet
            raise
        module.register(sub, shared)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
