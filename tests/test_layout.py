"""The distribution's shape: one top-level package, and the import rules between parts.

- A built wheel holds one top-level import package, ``fablecast`` (plus its
  dist-info): nothing named ``server`` or ``protocol`` lands in site-packages.
- The pure cores (the protocol, the room core, the scheduler's policy) import
  no asyncio, sockets, clock or network library: they are plain calls with an
  explicit ``now``, testable without a loop.
- ``fablecast.inference`` imports nothing from ``fablecast.server``; nothing in
  the server imports the benchmarks.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: Modules that may not touch I/O or time.
PURE = [
    *sorted((ROOT / "protocol").glob("*.py")),
    *[p for p in sorted((ROOT / "server" / "room").glob("*.py")) if p.name != "runner.py"],
    ROOT / "inference" / "scheduler.py",
    *sorted((ROOT / "server" / "moderation").glob("*.py")),
]
FORBIDDEN_IN_PURE = {"asyncio", "socket", "time", "websockets", "selectors", "threading"}


def imports(path: Path) -> set[str]:
    """Every module name ``path`` imports (absolute, as written)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("path", PURE, ids=lambda p: str(p.relative_to(ROOT)))
def test_pure_cores_import_no_io_and_no_clock(path: Path) -> None:
    bad = {n for n in imports(path) if n.split(".")[0] in FORBIDDEN_IN_PURE}
    assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


def test_the_rule_catches_an_import_of_the_clock(tmp_path: Path) -> None:
    sample = tmp_path / "core.py"
    sample.write_text("import time\nfrom asyncio import sleep\n")
    assert {"time", "asyncio"} <= imports(sample)


@pytest.mark.parametrize(
    ("folder", "prefix"),
    [("inference", "fablecast.server"), ("server", "fablecast.bench"), ("protocol", "fablecast.")],
)
def test_layer_rules(folder: str, prefix: str) -> None:
    offenders = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        for name in imports(path):
            if name.startswith(prefix) and not name.startswith("fablecast.protocol"):
                offenders.append(f"{path.relative_to(ROOT)}: {name}")
    assert not offenders


def test_top_level_is_one_namespace() -> None:
    for name in ("protocol", "server", "inference"):
        link = ROOT / "clients" / "python" / "fablecast" / name
        assert link.is_symlink() and link.resolve() == (ROOT / name).resolve()


@pytest.mark.slow
def test_wheel_holds_only_fablecast(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("fablecast-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"fablecast"}
    for module in (
        "fablecast/server/node.py",
        "fablecast/protocol/messages.py",
        "fablecast/inference/scheduler.py",
        "fablecast/client/connection.py",
        "fablecast/bench/fanout.py",
        "fablecast/cli.py",
    ):
        assert module in names
