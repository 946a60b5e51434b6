"""``fablecast transcript`` from the log, and ``serve`` refusing a bad database."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from fablecast.cli import main
from fablecast.server.store import NewEvent, log_for_url
from tests.support import scaled


async def _write(data_dir: Path) -> None:
    log = log_for_url("", data_dir)
    await log.open()
    await log.append(
        [
            NewEvent("demo", "created", {"spec": {"title": "Lanterns"}}, 1.0),
            NewEvent("demo", "beat", {"beat": 1, "text": "It began.", "choice": None}, 2.0),
            NewEvent("demo", "beat", {"beat": 2, "text": "It went on.", "choice": "Go"}, 3.0),
        ]
    )
    await log.close()


def test_transcript_reads_the_log(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    asyncio.run(_write(tmp_path))
    assert main(["transcript", "demo", "--data-dir", str(tmp_path)]) == 0
    md = capsys.readouterr().out
    assert md.startswith("# Lanterns\n") and "It began." in md
    assert "> The audience chose: Go" in md
    out = tmp_path / "t.json"
    assert (
        main(
            ["transcript", "demo", "--data-dir", str(tmp_path), "--format", "json", "-o", str(out)]
        )
        == 0
    )
    assert [b["text"] for b in json.loads(out.read_text())["beats"]] == ["It began.", "It went on."]
    assert main(["transcript", "nope", "--data-dir", str(tmp_path)]) == 1
    assert "no room 'nope'" in capsys.readouterr().err


def test_serve_refuses_a_corrupt_log_with_exit_3(tmp_path: Path) -> None:
    (tmp_path / "fablecast.sqlite3").write_bytes(b"not a database at all" * 100)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "fablecast.cli",
            "serve",
            "--engine",
            "scripted",
            "--port",
            "0",
            "--data-dir",
            str(tmp_path),
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=scaled(60),
    )
    assert result.returncode == 3, result.stderr
    assert "event log:" in result.stderr and "not an SQLite database" in result.stderr
    assert "Traceback" not in result.stderr
    assert (tmp_path / "fablecast.sqlite3").read_bytes() == b"not a database at all" * 100
